"""What the widgets read from a recording: attention layers, per-word maps and block masses.

A widget receives any mapping site -> DataArray: a live ``Recording``, the dict of lazy arrays
``open_recording`` returns for a zarr store, or ``Recording.dataset``. This module turns that
into *layers*: one per attention module, recorded either as a whole matrix (``...attn.probs``,
``...attn2.probs``) or as its query->key blocks (``...attn.probs.image->text`` and friends).

Slider moves must be cheap even when the recording is large and lazy, so nothing is computed up
front. The first time the widget needs one (layer, sample, branch, step), that slice is read
once, head by head, and reduced to what the views show: per-word maps (head, word, y, x) and
block masses (head, query kind, key kind). A video recording (tokens with ``frame, y, x``
coordinates) gives maps (head, word, frame, y, x) and video->text ... block names. Those summaries are small and cached; moving the
head or word controls afterwards only indexes into them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import xarray as xr

from ..attention.maps import KINDS, every_query, resize, words_of
from ..capture.layout import plain_dims
from ..sitemap import parse_site, site_name

BLOCKS = tuple(f"{q}->{k}" for q in KINDS for k in KINDS)  # image->image, image->text, text->image, text->text
VIDEO_KINDS = ("video", "text")
WHOLE = "whole"  # the key under which a layer keeps its whole-matrix site
ALL_LAYERS = "all layers (mean)"

# Words the explorer does not pick by default: they rarely have a localised map.
_FUNCTION_WORDS = {"a", "an", "the", "on", "in", "of", "at", "to", "and", "with", "is"}


class NoAttentionError(ValueError):
    """The recording holds no attention probabilities the widgets can show."""


def default_word(words: list[str]) -> str | None:
    """The first content word: 'red' rather than 'a' in 'a red circle'."""
    for word in words:
        if word.lower() not in _FUNCTION_WORDS and word.isalnum():
            return word
    return words[0] if words else None


@dataclass
class Layer:
    """One attention module: its display name and the site(s) holding its probabilities."""

    name: str
    sites: dict[str, str] = field(default_factory=dict)  # WHOLE or a block name -> site name
    text_site: str | None = None  # the site with image queries and text keys (word maps come from it), if any


@dataclass
class StepSummary:
    """One (layer, sample, branch, step) reduced to what the views show."""

    words: list[str]  # the sample's words, in prompt order
    maps: np.ndarray | None  # (head, word, y, x), video (head, word, frame, y, x): mass each patch sends to each word
    mass: np.ndarray  # (head, 2, 2): query kind x key kind (source.kinds), mean over queries of the summed probability; NaN if unrecorded


def find_layers(recording: Mapping[str, xr.DataArray]) -> list[Layer]:
    """Every attention layer in ``recording``, in recording order; raises if there is none."""
    layers: dict[str, Layer] = {}
    for site in recording:
        parts = parse_site(str(site))
        if parts.kind != "probs":
            continue
        every_query(recording[site], str(site), "the explorer's maps and block masses")
        name = site_name(parts.module, "probs")
        layers.setdefault(name, Layer(name)).sites[parts.block or WHOLE] = str(site)
    if not layers:
        recorded = ", ".join(map(str, recording)) or "nothing"
        raise NoAttentionError(
            "this recording holds no attention probabilities; record e.g. 'transformer_blocks.*.attn.probs' "
            f"(MM-DiT, FLUX), '**.attn2.probs' (U-Net cross-attention) or '**.probs.image->text'. Recorded: {recorded}"
        )
    return sorted(layers.values(), key=lambda layer: depth_order(recording, next(iter(layer.sites.values()))))


def depth_order(recording: Mapping[str, xr.DataArray], site: str) -> tuple:
    """Sort key putting sites in forward-pass order: the stage the site map gave the site when it
    was recorded (a zarr store lists its groups in no particular order), then numbers numerically."""
    path = parse_site(site).module.split(".")  # the module path, numbered parts compared as numbers
    return ((int(recording[site].attrs.get("stage", 0)),) + tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path)
            + ((1, 0, site),))


class AttentionSource:
    """Lazily computed, cached views of the attention in one recording."""

    def __init__(self, recording: Mapping[str, xr.DataArray]):
        self.recording = recording
        self.layers = {layer.name: layer for layer in find_layers(recording)}
        self._arrays: dict[str, xr.DataArray] = {}
        # a video model's tokens carry frames: its blocks are video->text, ..., its maps per frame
        self.frames = max((self.array(site).query_frame.values.max() + 1 for layer in self.layers.values()
                           for site in layer.sites.values() if "query_frame" in self.array(site).coords), default=0)
        self.frames = int(self.frames)
        self.kinds = VIDEO_KINDS if self.frames else KINDS
        self.visual = self.kinds[0]
        self.blocks = tuple(f"{q}->{k}" for q in self.kinds for k in self.kinds)
        for layer in self.layers.values():
            layer.text_site = self._image_to_text_site(layer)
        self._summaries: dict[tuple, StepSummary] = {}
        first = self.array(next(iter(next(iter(self.layers.values())).sites.values())))
        self.n_samples = first.sizes["sample"]
        self.branches = [str(b) for b in first.branch.values]
        self.steps = [int(s) for s in first.step.values]
        self.timesteps = [float(t) for t in first.timestep.values] if "timestep" in first.coords else [float(s) for s in self.steps]
        self.prompts = [str(p) for p in first.prompt.values] if "prompt" in first.coords else [""] * self.n_samples

    # -- what there is to choose from ------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Layers to offer, plus the mean over layers when several have word maps (as DAAM does)."""
        names = list(self.layers)
        with_maps = [n for n in names if self.layers[n].text_site]
        return names + [ALL_LAYERS] if len(with_maps) > 1 else names

    def heads(self, layer: str) -> int:
        """Number of heads of ``layer`` (0 when heads were averaged at capture time)."""
        if layer == ALL_LAYERS:
            return 0  # layers may have different head counts; only their head means combine
        array = self.array(next(iter(self.layers[layer].sites.values())))
        return array.sizes.get("head", 0)

    def sample_label(self, sample: int) -> str:
        prompt = self.prompts[sample]
        return f"{sample}: {prompt}" if prompt else str(sample)

    def _image_to_text_site(self, layer: Layer) -> str | None:
        """Whole matrix preferred; self-attention (U-Net ``attn1``) has no text keys, so no word maps."""
        for site in (layer.sites.get(WHOLE), layer.sites.get(f"{self.visual}->text")):
            if site is None:
                continue
            array = self.array(site)
            if "query_kind" not in array.coords or "key_kind" not in array.coords:
                continue
            if self.visual in set(array.query_kind.values) and "text" in set(array.key_kind.values):
                return site
        return None

    def array(self, site: str) -> xr.DataArray:
        if site not in self._arrays:
            self._arrays[site] = plain_dims(self.recording[site])
        return self._arrays[site]

    def default_branch(self) -> str:
        return "cond" if "cond" in self.branches else self.branches[-1]

    # -- summaries --------------------------------------------------------------------------------
    def summary(self, layer: str, sample: int, branch: str, step: int) -> StepSummary:
        """Word maps and block mass for one layer at one step (``step`` indexes ``self.steps``)."""
        key = (layer, sample, branch, step)
        if key not in self._summaries:
            if layer == ALL_LAYERS:
                self._summaries[key] = self._mean_over_layers(sample, branch, step)
            else:
                self._summaries[key] = self._summarise(self.layers[layer], sample, branch, step)
        return self._summaries[key]

    def _slice(self, site: str, sample: int, branch: str, step: int) -> xr.DataArray:
        """(head, query, key) for one sample/branch/step, still lazy; a head axis of one if heads
        were averaged at capture."""
        array = self.array(site)
        branch_index = [str(b) for b in array.branch.values].index(branch)
        part = array.isel(sample=sample, branch=branch_index, step=step)
        return part if "head" in part.dims else part.expand_dims("head")

    def _summarise(self, layer: Layer, sample: int, branch: str, step: int) -> StepSummary:
        kinds, visual = self.kinds, self.visual
        mass = np.full((1, len(kinds), len(kinds)), np.nan)
        words, maps = [], None
        text_site = layer.text_site
        if WHOLE in layer.sites:
            part = self._slice(layer.sites[WHOLE], sample, branch, step).transpose("head", "query", "key")
            query_kind, key_kind = part.query_kind.values, part.key_kind.values
            mass = np.full((part.sizes["head"], len(kinds), len(kinds)), np.nan)
            word_columns = None
            if text_site == layer.sites[WHOLE]:
                words, word_columns = self._word_columns(part, sample)
            map_rows = []
            # One head at a time: a lazy store reads one (query, key) matrix per head, and a big
            # model's full (head, query, key) slice need never sit in memory at once.
            for head in range(part.sizes["head"]):
                probs = np.asarray(part.isel(head=head).values, dtype=np.float64)
                for qi, q in enumerate(kinds):
                    for ki, k in enumerate(kinds):
                        rows, cols = query_kind == q, key_kind == k
                        if rows.any() and cols.any():
                            mass[head, qi, ki] = probs[np.ix_(rows, cols)].sum(axis=1).mean()
                if word_columns is not None and (query_kind == visual).any():
                    image_rows = probs[query_kind == visual]
                    map_rows.append(image_rows[:, key_kind == "text"] @ word_columns)
            if map_rows:
                maps = self._to_grids(np.stack(map_rows), part.isel(query=query_kind == visual))
        else:
            heads = None
            for block, site in layer.sites.items():
                part = self._slice(site, sample, branch, step).transpose("head", "query", "key")
                heads = part.sizes["head"]
                if mass.shape[0] != heads:
                    mass = np.full((heads, len(kinds), len(kinds)), np.nan)  # first block seen sets the head count
                q, k = block.split("->")
                for head in range(heads):
                    probs = np.asarray(part.isel(head=head).values, dtype=np.float64)
                    mass[head, kinds.index(q), kinds.index(k)] = probs.sum(axis=1).mean()
            if text_site:
                part = self._slice(text_site, sample, branch, step).transpose("head", "query", "key")
                words, word_columns = self._word_columns(part, sample)
                per_head = [np.asarray(part.isel(head=h).values, dtype=np.float64) @ word_columns
                            for h in range(part.sizes["head"])]
                maps = self._to_grids(np.stack(per_head), part)
        return StepSummary(words=words, maps=maps, mass=mass)

    def _word_columns(self, part: xr.DataArray, sample: int) -> tuple[list[str], np.ndarray]:
        """The sample's words and a (text key, word) 0/1 matrix that sums each word's tokens.

        A word present in two text encoders' tokens (SD3: CLIP and T5) or twice in the prompt
        gets all its tokens' columns: the map shows all attention the patch sends to that word.
        Without token strings (a bare denoise run), every text position is its own 'word'.
        """
        text = part.key_kind.values == "text"
        if "key_token" in part.coords:
            tokens = part.key_token.values
            tokens = tokens[sample] if tokens.ndim == 2 else tokens  # (sample, key) or already selected
            tokens = [str(t) for t in np.asarray(tokens)[text]]
            groups: dict[str, list[int]] = {}
            for word, positions in words_of(tokens):
                groups.setdefault(word, []).extend(positions)
        else:
            groups = {f"#{i}": [i] for i in range(int(text.sum()))}
        columns = np.zeros((int(text.sum()), len(groups)))
        for j, positions in enumerate(groups.values()):
            columns[positions, j] = 1.0
        return list(groups), columns

    @staticmethod
    def _to_grids(per_query: np.ndarray, image_part: xr.DataArray) -> np.ndarray:
        """(head, image query, word) -> (head, word, y, x), or (head, word, frame, y, x) for video
        queries, using the queries' grid coordinates."""
        axes = [a for a in ("frame", "y", "x") if f"query_{a}" in image_part.coords]
        where = tuple(image_part[f"query_{a}"].values for a in axes)
        grids = np.zeros((per_query.shape[0], per_query.shape[2], *(int(w.max()) + 1 for w in where)), dtype=np.float32)
        grids[(slice(None), slice(None), *where)] = per_query.transpose(0, 2, 1)
        return grids

    def _mean_over_layers(self, sample: int, branch: str, step: int) -> StepSummary:
        """Head-mean word maps averaged over every layer that has them, each resized to the finest
        grid (U-Net levels differ); block masses averaged the same way."""
        parts = [self.summary(name, sample, branch, step) for name, layer in self.layers.items() if layer.text_site]
        words = parts[0].words
        size = max((p.maps.shape[-2:] for p in parts), key=lambda shape: shape[0] * shape[1])
        maps = np.mean([resize(p.maps.mean(axis=0), size) for p in parts if p.words == words], axis=0)
        masses = np.stack([p.mass.mean(axis=0) for p in parts])
        with warnings.catch_warnings():  # a block no layer recorded stays NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            mass = np.nanmean(masses, axis=0)
        return StepSummary(words=words, maps=maps[None], mass=mass[None])
