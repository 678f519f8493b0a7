"""Pure functions over recorded attention: the four-block decomposition, per-word maps and the
intersection over area between two words' maps.

Recorded probabilities carry ``query_kind`` / ``key_kind`` (image, video or text) on their token
axes, ``*_y`` / ``*_x`` grid positions on image tokens (``*_frame`` / ``*_y`` / ``*_x`` on video
tokens) and ``*_token`` strings on text tokens, so nothing here needs to know the architecture:
SD3 [image | text], FLUX [text | image], U-Net cross-attention (image queries, text keys) and
CogVideoX [text | video] all decompose the same way.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np
import torch
import xarray as xr

from ..sitemap import parse_site

KINDS = ("image", "text")  # the kinds of an image model; kinds_of() reads a recording's own
# Specials of the tokenizers in use: CLIP/Qwen/ChatML "<|...|>", T5 and Gemma "</s>", "<pad>", ...,
# BERT's "[PAD]", GLM-4's "[gMASK]" "<sop>" prefix.
_SPECIAL = re.compile(r"^(<\|[^|\s]*\|>|</s>|<pad>|<unk>|<s>|<sop>|\[PAD\]|\[gMASK\]|)$")
# A word's first token: sentencepiece marks it with "▁", byte-level BPE (GPT-2, Qwen, GLM-4) with "Ġ"
_WORD_START = ("▁", "Ġ")
# Byte-level BPE's space, newline and tab: a token made of them only (the "Ċ" after a chat template's
# "user") separates words and belongs to none
_BYTE_SPACE = frozenset("ĠĊĉ")


def kinds_of(probs: xr.DataArray) -> tuple[str, ...]:
    """The token kinds on the query and key axes of ``probs``, visual kinds first, text last
    (``("image", "text")`` for an image model, ``("video", "text")`` for a video model), the
    order of ``sitemap.KIND_ORDER`` that block names follow."""
    present = set(probs.query_kind.values.tolist()) | set(probs.key_kind.values.tolist())
    return tuple(sorted(present, key=lambda kind: (kind == "text", kind)))


def visual_kind(probs: xr.DataArray, axis: str = "query") -> str | None:
    """The grid kind ("image" or "video") among the tokens of ``axis``, None if it has none."""
    present = set(probs[f"{axis}_kind"].values.tolist())
    return next((k for k in sorted(present) if k != "text"), None)


# The grid coordinates a recording puts on a token axis (sitemap.GRID_AXES, as coordinate names).
_VIDEO_AXES, _IMAGE_AXES = ("frame", "y", "x"), ("y", "x")


def decompose(probs: xr.DataArray) -> xr.Dataset:
    """Split joint attention probabilities into its query->key blocks: image->image, image->text,
    text->image, text->text (video->video, video->text, ... for a video model).

    Token axes become ``query_image``, ``query_text``, ``key_image``, ``key_text`` (``query_video``
    ...) so the blocks share one Dataset; a block whose kinds are absent (e.g. U-Net
    cross-attention has only image->text) is left out.
    """
    if "query_kind" not in probs.coords or "key_kind" not in probs.coords:
        raise ValueError("these probabilities carry no query_kind/key_kind coordinates to split on")
    blocks = {}
    kinds = kinds_of(probs)
    for q in kinds:
        for k in kinds:
            q_mask, k_mask = probs.query_kind == q, probs.key_kind == k
            if not bool(q_mask.any()) or not bool(k_mask.any()):
                continue
            block = probs.isel(query=q_mask.values, key=k_mask.values)
            blocks[f"{q}->{k}"] = rename_axes(block, {"query": f"query_{q}", "key": f"key_{k}"})
    if not blocks:
        raise ValueError("these probabilities carry no query_kind/key_kind coordinates to split on")
    return xr.Dataset(blocks, attrs=dict(probs.attrs))


def rename_axes(array: xr.DataArray, mapping: Mapping[str, str]) -> xr.DataArray:
    """Rename dims per ``mapping`` together with their ``{dim}_*`` coordinates (``key_kind`` follows ``key``)."""
    renames = {}
    for old, new in mapping.items():
        renames[old] = new
        for coord in array.coords:
            if coord.startswith(f"{old}_") and old in array.coords[coord].dims:
                renames[coord] = new + coord[len(old):]
    return array.rename(renames)


def block_mass(probs: xr.DataArray) -> xr.DataArray:
    """How much attention each query kind sends to each key kind: dims (..., query_kind, key_kind),
    averaged over queries; each query kind's row sums to one."""
    out, kinds = [], kinds_of(probs)
    for q in kinds:
        rows = []
        for k in kinds:
            part = probs.isel(query=(probs.query_kind == q).values, key=(probs.key_kind == k).values)
            rows.append(part.sum("key").mean("query") if part.sizes["query"] else xr.full_like(probs.isel(query=0, key=0, drop=True), np.nan))
        out.append(xr.concat(rows, dim=xr.DataArray(list(kinds), dims="key_kind")))
    return xr.concat(out, dim=xr.DataArray(list(kinds), dims="query_kind"))


def to_grid(array: xr.DataArray, axis: str) -> xr.DataArray:
    """Lay an image-token axis out as (y, x), a video-token axis as (frame, y, x), using its
    ``{axis}_frame`` / ``{axis}_y`` / ``{axis}_x`` coordinates, which the result keeps as the grid
    axes' coordinates. A query subset (``record(..., queries=)``) that is a box, a stride or the
    centre lays out as its own smaller grid; scattered positions do not make a grid and are refused."""
    names = _VIDEO_AXES if f"{axis}_frame" in array.coords else _IMAGE_AXES
    positions = [array[f"{axis}_{name}"].values for name in names]
    if (positions[-1] < 0).any():
        raise ValueError(f"axis {axis!r} holds text tokens; select image or video tokens first")
    # each grid axis takes the positions present on it (0..n-1 for a whole grid)
    present = [np.unique(p) for p in positions]
    shape = tuple(len(values) for values in present)
    cells = [np.searchsorted(values, p) for values, p in zip(present, positions)]
    flat = np.ravel_multi_index(cells, shape)
    if int(np.prod(shape)) != array.sizes[axis] or len(np.unique(flat)) != len(flat):
        raise ValueError(f"the {array.sizes[axis]} positions on axis {axis!r} do not fill a grid (they fill "
                         f"{len(np.unique(flat))} cells of {' x '.join(map(str, shape))}): a query subset of scattered "
                         "positions has no grid layout; select its queries by position (isel) instead")
    order = np.argsort(flat, kind="stable")
    keep = [c for c in array.coords if axis not in array.coords[c].dims]
    ordered = array.isel({axis: order}).reset_coords(drop=True).drop_vars(axis, errors="ignore")
    at = ordered.dims.index(axis)
    data = ordered.values.reshape(ordered.shape[:at] + shape + ordered.shape[at + 1 :])
    dims = ordered.dims[:at] + names + ordered.dims[at + 1 :]
    coords = {c: array.coords[c] for c in keep}
    coords.update({name: values for name, values in zip(names, present)})
    return xr.DataArray(data, dims=dims, coords=coords, attrs=array.attrs)


def every_query(probs: xr.DataArray, name: str, needs: str) -> xr.DataArray:
    """``probs`` if it holds every query of its site; a clear error if it was recorded with a query
    subset (``record(..., queries=)``), for readers (``needs``) that average or show whole grids."""
    if "queries" in probs.attrs:
        kept = probs.sizes.get("query", "some")
        raise ValueError(f"{needs} need every image/video query, but {name} was recorded with "
                         f"queries={probs.attrs['queries']!r} ({kept} of {probs.attrs.get('queries_of', '?')} queries): "
                         "record it without queries= (or lay the kept rows out with to_grid)")
    return probs


def resize(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if grid.shape[-2:] == size:
        return grid
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)).reshape(-1, 1, *grid.shape[-2:])
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out.reshape(grid.shape[:-2] + size).numpy()


def words_of(tokens: Iterable[str]) -> list[tuple[str, list[int]]]:
    """Group tokenizer tokens into words: CLIP marks a word's end with ``</w>``, T5/sentencepiece
    a word's start with ``▁``, byte-level BPE (Qwen, GLM-4) with ``Ġ``. Special and padding
    tokens, and byte-level whitespace tokens (``Ċ``, a newline), belong to no word."""
    words: list[tuple[str, list[int]]] = []
    current, positions = "", []
    for i, token in enumerate(tokens):
        if _SPECIAL.match(token) or (token and set(token) <= _BYTE_SPACE):
            if current:
                words.append((current, positions))
            current, positions = "", []
            continue
        starts = token.startswith(_WORD_START)
        if starts and current:
            words.append((current, positions))
            current, positions = "", []
        piece = token.replace("</w>", "").lstrip("".join(_WORD_START))
        current += piece
        positions.append(i)
        if token.endswith("</w>"):
            words.append((current, positions))
            current, positions = "", []
    if current:
        words.append((current, positions))
    return [(w, p) for w, p in words if w.strip()]


METHODS = ("mean", "daam")


def word_maps(recording, sample: int = 0, *, sites: str | None = None, steps=None, heads=None, layers=None,
              size: tuple[int, int] | None = None, branch: str = "cond", method: str = "mean",
              encoder: str | None = None) -> xr.DataArray:
    """Per-word attention maps over the image: dims (word, y, x); over the video of a video
    model: dims (word, frame, y, x).

    ``method="mean"`` (the default, any architecture) uses every recorded image->text (video->text)
    probability site (joint blocks ``*.probs.image->text``, whole joint matrices ``*.probs``, or U-Net/PixArt
    cross-attention ``attn2.probs``), the mid block included and maps of every size: each layer's
    map is *averaged* over heads and over the chosen ``steps`` (indices; all by default), then
    resized *bilinearly* to ``size`` (the finest recorded grid by default) without clamping, and
    the layers are averaged. A word split into several tokens, or present in two text encoders'
    tokens (SD3), *sums* its tokens' columns; each word's map is normalised to sum to one (over all frames for video), and a
    word that occurs twice gets the mean of its occurrences' normalised maps.

    Selection (DAAM lets one pick heads and layers the same way): ``steps`` are step indices,
    ``heads`` head indices (the recording must keep heads), ``layers`` positions in the list of
    attention sites this call uses, in recorded order (``sites`` narrows that list by name first).
    The result's attrs name what was averaged: ``sites``, ``steps``, ``heads``, ``branch``,
    ``model`` and ``prompt``.

    ``encoder`` (where several text encoders' tokens share the text axis, e.g. SD3's CLIP | T5, whose
    ``key_encoder`` coordinate names them): None sums every encoder's tokens as above; an encoder's
    name keeps only its tokens; ``"each"`` returns dims (encoder, word, ...) with one map per
    encoder and their sum (``"all"``), words missing from an encoder giving zero maps.

    ``method="daam"`` reproduces DAAM's heat maps (Tang et al. 2023, ``daam`` 0.2.0) from the same
    run; see :func:`daam_word_maps` for the recipe. Its maps are DAAM's raw values (not normalised)
    on the latent grid.
    """
    if method == "daam":
        if heads is not None or layers is not None:
            raise ValueError("method='daam' follows DAAM's recipe over every head and layer; heads= and layers= "
                             "select for method='mean' (narrow DAAM's layers by name with sites=)")
        return daam_word_maps(recording, sample, sites=sites, steps=steps, branch=branch, size=size)
    if method != "mean":
        raise ValueError(f"unknown word-map method {method!r}; valid: {', '.join(METHODS)}")
    from fnmatch import fnmatchcase

    candidates = []
    for name in recording:
        if sites is not None and not fnmatchcase(name, sites):
            continue
        parts = parse_site(name)
        if parts.kind != "probs" or parts.block not in (None, "image->text", "video->text"):
            continue
        probs = recording[name]
        if "key_kind" not in probs.coords or "text" not in set(probs.key_kind.values):
            continue
        every_query(probs, name, "word maps")
        visual = visual_kind(probs)
        if visual is not None:
            candidates.append((name, probs, visual))
    if not candidates:
        raise ValueError("no image->text (or video->text) attention in this recording: record e.g. "
                         "'**.probs.image->text', '**.probs.video->text' or '**.attn2.probs'")
    if layers is not None:
        layers = list(layers)
        bad = [i for i in layers if not isinstance(i, (int, np.integer)) or not -len(candidates) <= i < len(candidates)]
        if bad or not layers:
            raise ValueError(f"layers={layers!r}: give positions 0..{len(candidates) - 1} among these attention sites, "
                             f"in order: {', '.join(name for name, _, _ in candidates)}")
        candidates = [candidates[i] for i in layers]
    per_layer = []
    for name, probs, visual in candidates:
        _check_selection(probs, "step", steps, name)
        probs = _image_to_text(probs, sample, branch, steps, visual)
        if heads is not None:
            if "head" not in probs.dims:
                raise ValueError(f"heads={list(heads)!r}: {name} was recorded with heads reduced; record without "
                                 "reduce=('head',) to select heads")
            _check_selection(probs, "head", heads, name)
            probs = probs.isel(head=list(heads))
        if "head" in probs.dims:
            probs = probs.mean("head")
        per_layer.append(to_grid(probs.mean("step"), "query"))
    size = size or max((p.sizes["y"], p.sizes["x"]) for p in per_layer)
    first = per_layer[0]
    grid = tuple(d for d in first.dims if d != "key")  # (y, x), or (frame, y, x) for video
    if any(tuple(d for d in p.dims if d != "key") != grid for p in per_layer):
        raise ValueError("these sites mix image and video tokens; choose one kind with sites=")
    if "frame" in grid and len({p.sizes["frame"] for p in per_layer}) > 1:
        raise ValueError(f"these sites have different frame counts ({sorted({p.sizes['frame'] for p in per_layer})}); "
                         "choose sites of one temporal resolution with sites=")
    tokens = _tokens(first)
    stacked = np.mean([resize(p.transpose("key", *grid).values, size) for p in per_layer], axis=0)

    def maps_of(tokens: list[str]) -> dict[str, np.ndarray]:
        words, maps = [], []
        for word, positions in words_of(tokens):
            words.append(word)
            maps.append(stacked[positions].sum(axis=0))
        maps = np.asarray(maps)
        every_position = tuple(range(1, maps.ndim))
        maps = maps / np.clip(maps.sum(axis=every_position, keepdims=True), 1e-12, None)
        merged: dict[str, list[np.ndarray]] = {}
        for word, m in zip(words, maps):
            merged.setdefault(word, []).append(m)
        return {word: np.mean(v, axis=0) for word, v in merged.items()}

    if encoder is None:
        merged = maps_of(tokens)
        values, dims = np.stack(list(merged.values())), ("word", *grid)
    else:
        made_by = _encoders(first, encoder)
        only = {e: maps_of([t if by == e else "" for t, by in zip(tokens, made_by)]) for e in dict.fromkeys(made_by) if e}
        chosen = list(only) + ["all"] if encoder == "each" else [encoder]
        per = {**only, "all": maps_of(tokens)}
        merged = per["all"] if encoder == "each" else per[encoder]
        zero = np.zeros_like(next(iter(per["all"].values())))
        values = np.stack([[per[e].get(w, zero) for w in merged] for e in chosen])
        dims = ("encoder", "word", *grid)
        if encoder != "each":
            values, dims = values[0], dims[1:]
    return xr.DataArray(
        values,
        dims=dims,
        coords={"word": list(merged), **({"frame": np.arange(first.sizes["frame"])} if "frame" in grid else {}),
                **({"encoder": chosen} if encoder == "each" else {}),
                "y": np.arange(size[0]), "x": np.arange(size[1])},
        attrs={"layers": len(per_layer), "sample": sample, "method": "mean", **_provenance(candidates, sample, branch),
               "steps": _chosen(steps, candidates[0][1], "step"), "heads": _chosen(heads, candidates[0][1], "head")},
    )


def _check_selection(probs: xr.DataArray, dim: str, chosen, site: str) -> None:
    """A selection names existing entries of ``dim``; anything else is an error naming the valid ones."""
    if chosen is None:
        return
    valid = list(range(probs.sizes[dim])) if dim == "head" else [int(v) for v in probs[dim].values]
    wrong = [c for c in chosen if c not in valid]
    if wrong or len(list(chosen)) == 0:
        raise ValueError(f"{dim}s={list(chosen)!r} not in {site}: valid {dim}s are {valid[0]}..{valid[-1]}"
                         if valid else f"{site} has no {dim}s")


def _chosen(chosen, probs: xr.DataArray, dim: str) -> list[int] | str:
    if chosen is not None:
        return [int(c) for c in chosen]
    if dim not in probs.dims:
        return "reduced when recorded"
    return [int(v) for v in probs[dim].values] if dim == "step" else list(range(probs.sizes[dim]))


def _provenance(candidates, sample: int, branch: str) -> dict:
    """What a word map averages, for its reader and for ``export``'s metadata."""
    first = candidates[0][1]
    prompt = str(first.prompt.values[sample]) if "prompt" in first.coords and first.prompt.ndim == 1 else ""
    return {"sites": [name for name, _, _ in candidates], "branch": branch, "prompt": prompt,
            "model": str(first.attrs.get("model", "")), "family": str(first.attrs.get("family", ""))}


def _image_to_text(probs: xr.DataArray, sample: int, branch: str, steps, visual: str = "image") -> xr.DataArray:
    """One sample's image-query (``visual``: "image" or "video"), text-key probabilities on one
    guidance branch (the last branch when ``branch`` was not run, e.g. guidance off)."""
    probs = probs.isel(sample=sample)
    probs = probs.sel(branch=branch) if branch in probs.branch.values else probs.isel(branch=-1)
    if steps is not None:
        probs = probs.sel(step=list(steps))
    return probs.isel(query=(probs.query_kind == visual).values, key=(probs.key_kind == "text").values)


def _encoders(layer: xr.DataArray, encoder: str) -> list[str]:
    """Which encoder made each key token, checking that ``encoder`` is one of them (or "each")."""
    if "key_encoder" not in layer.coords:
        raise ValueError(f"encoder={encoder!r}: this recording's text axis comes from one encoder (no key_encoder "
                         "coordinate); leave encoder=None")
    made_by = [str(e) for e in layer.key_encoder.values]
    names = [e for e in dict.fromkeys(made_by) if e]
    if encoder != "each" and encoder not in names:
        raise ValueError(f"encoder={encoder!r} is not on this text axis: valid are {', '.join(names)} or 'each'")
    return made_by


def _tokens(layer: xr.DataArray) -> list[str]:
    if "key_token" not in layer.coords:
        raise ValueError("text tokens are unlabelled: record through a Model or pipeline call with prompts")
    return [str(t) for t in layer.key_token.values]


# DAAM never hooks the maps whose side is 1/8 of the latent's (8 x 8 on SD's 64 x 64 latent).
_DAAM_DROPPED_FACTOR = 8


def daam_word_maps(recording, sample: int = 0, *, sites: str | None = None, steps=None, branch: str = "cond",
                   size: tuple[int, int] | None = None) -> xr.DataArray:
    """DAAM's per-word heat maps (``word_maps(..., method="daam")``), dims (word, y, x).

    DAAM's recipe, step by step, applied to a recording of ``**.attn2.probs`` on a U-Net:

    1. layers: the cross-attention of the down and up blocks only; the mid block is left out.
    2. factor: ``int(sqrt(latent_h * latent_w // queries))``; maps with factor 8 (8 x 8 on SD's
       64 x 64 latent) are dropped.
    3. time: each (layer, head) map is *summed* over the steps (all of them by default; DAAM sums
       every denoiser call inside its trace), on the conditional branch only.
    4. each (layer, head) map is upsampled *bicubically* (``align_corners=False``) to the latent
       grid and clamped at 0 (bicubic undershoots); the maps are then *averaged* over every
       (layer, head) pair, all heads weighted alike.
    5. tokens: a word's map is the *mean* of the columns of its tokens, over every occurrence of
       the word's token sequence in the prompt (DAAM's ``compute_token_merge_indices``).

    No normalisation (DAAM's ``normalize=False`` default). ``size`` other than the latent grid
    resizes the latent-grid maps bicubically (DAAM's ``expand_as`` to the image), clamped at 0.
    """
    from fnmatch import fnmatchcase

    geometry = getattr(recording, "geometry", None)
    if geometry is None or geometry.grid is None:
        raise ValueError("DAAM's maps live on the latent grid and this recording does not know it "
                         "(record through wb.record on a Model)")
    latent = tuple(int(v) for v in geometry.grid)
    per_head, tokens, used = [], None, []
    for name in recording:
        parts = parse_site(name)
        module_path = parts.module.split(".")  # a torch module path: its own grammar, not a site name's
        if parts.kind != "probs" or module_path[-1] != "attn2" or module_path[0] == "mid_block":
            continue
        if sites is not None and not fnmatchcase(name, sites):
            continue
        probs = _image_to_text(every_query(recording[name], name, "DAAM's maps"), sample, branch, steps)
        if int(np.sqrt(latent[0] * latent[1] // probs.sizes["query"])) == _DAAM_DROPPED_FACTOR:
            continue
        tokens = tokens or _tokens(probs)
        grid = to_grid(probs.transpose("step", "head", "key", "query"), "query")
        summed = torch.from_numpy(np.ascontiguousarray(grid.values, dtype=np.float32)).sum(0)  # (head, key, y, x)
        for head in summed:
            per_head.append(_bicubic_clamped(head, latent))
        used.append(name)
    if not per_head:
        raise ValueError("no down/up-block cross-attention in this recording for DAAM's maps: record '**.attn2.probs' "
                         "on a U-Net (DAAM leaves out the mid block and the maps at 1/8 of the latent's side)")
    heat = torch.stack(per_head).mean(0)  # (key, latent_y, latent_x)
    if size is not None and tuple(size) != latent:
        heat = _bicubic_clamped(heat, tuple(size))
    words, maps = [], []
    for word, positions in _daam_word_positions(tokens):
        words.append(word)
        maps.append(heat[positions].mean(0))
    out = torch.stack(maps).numpy()
    return xr.DataArray(out, dims=("word", "y", "x"),
                        coords={"word": words, "y": np.arange(out.shape[1]), "x": np.arange(out.shape[2])},
                        attrs={"layers": len(used), "sample": sample, "method": "daam"})


def _bicubic_clamped(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) -> (n, *size): bicubic resize, negatives (undershoot) clamped to 0."""
    out = torch.nn.functional.interpolate(maps.unsqueeze(1), size=size, mode="bicubic", align_corners=False)
    return out[:, 0].clamp(min=0)


def _daam_word_positions(tokens: list[str]) -> list[tuple[str, list[int]]]:
    """Each distinct word with the positions DAAM merges for it: every start of the word's token
    sequence in the prompt, and the tokens that follow it (so a repeated word, or a word whose tokens
    recur inside a longer word, takes all of them)."""
    out: dict[str, list[int]] = {}
    for word, positions in words_of(tokens):
        if word in out:
            continue
        pattern = tokens[positions[0]:positions[-1] + 1]
        found = [start + k for start in range(len(tokens) - len(pattern) + 1)
                 if tokens[start:start + len(pattern)] == pattern for k in range(len(pattern))]
        out[word] = found
    return list(out.items())


#: DAAM's threshold for a word's region: its map scaled to [0, 1], positions at or above 0.4 (the
#: default of DAAM's word-relation analysis, ``--max-threshold``, and of its mask plots).
DAAM_THRESHOLD = 0.4
_POSITION_DIMS = ("frame", "y", "x")


def intersection_over_area(maps: xr.DataArray, threshold: float = DAAM_THRESHOLD) -> xr.DataArray:
    """For every ordered pair of words, the share of the first word's region that lies inside the
    second's: DAAM's intersection over area (Tang et al. 2023), dims (word, other).

    ``maps``: per-word maps, dims (word, y, x) or (word, frame, y, x), as :func:`word_maps` gives
    (either method; resize first with its ``size=`` to compare at image resolution, as DAAM does).
    Each word's *region* is its map scaled to [0, 1] by its own minimum and maximum, kept where
    it is at least ``threshold`` (``DAAM_THRESHOLD``, 0.4, DAAM's default). Then
    ``ioa[a, b] = |A and B| / |A|``: 1 when a's region lies wholly inside b's, 0 when they do not
    meet; not symmetric (a small region inside a large one gives 1 one way, less the other). A
    word whose map is flat has no region (nothing stands out), and its row is 0, as in DAAM.
    """
    if "word" not in maps.dims:
        raise ValueError(f"intersection_over_area takes per-word maps with a 'word' dim (word_maps gives them); "
                         f"these have dims {maps.dims}")
    positions = [d for d in maps.dims if d != "word"]
    stray = [d for d in positions if d not in _POSITION_DIMS]
    if stray or not positions:
        raise ValueError(f"maps must be (word, y, x) or (word, frame, y, x); these have dims {maps.dims}"
                         + (f": select one entry of {stray} first (e.g. maps.sel(encoder='all'))" if stray else ""))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}: a share of each map's own range, between 0 and 1 (DAAM: 0.4)")
    values = maps.transpose("word", *positions).values.reshape(maps.sizes["word"], -1).astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("maps hold NaN or infinite values; intersection over area needs finite maps")
    low, high = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    span = high - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    regions = (scaled >= threshold) & (span > 0)
    area = regions.sum(axis=1)
    overlap = regions.astype(np.int64) @ regions.T.astype(np.int64)  # [a, b] = |A and B|
    ioa = np.divide(overlap, area[:, None], out=np.zeros(overlap.shape), where=area[:, None] > 0)
    words = list(maps["word"].values)
    return xr.DataArray(ioa, dims=("word", "other"), coords={"word": words, "other": words},
                        attrs={"threshold": threshold, "measure": "intersection over area: |word and other| / |word|"})
