"""Text localization by activation patching (Staniszewski et al., ICLR 2025).

Which attention layers (and heads) decide the text a model renders? Cache the keys and values the
text tokens produce in every text-attention layer for a *source* prompt (glyph B), run the
*target* prompt (glyph A) from the same noise, and from a start step on replace the target's text
K/V at one layer, or some heads of it, with the source's. If the image now shows B, with colour,
position and background kept, that layer carries the glyph.

Architecture facts come from the site map only: ``site_map.text_keys`` / ``text_values`` name the
sites holding text-derived keys and values (MM-DiT: the text stream's K/V in each joint block;
U-Net: ``attn2``'s K/V of the encoder states). A *text layer* is one attention module holding both.

This module holds the pieces every patching run needs, and the scores, as plain functions:

* :func:`text_layers`, :func:`layer_parameter_share`: the layers and what share of the denoiser's
  parameters produce their text K/V;
* :func:`align_tokens`: the source -> target token map from the shapes world's caption spans;
* :func:`cache_text` (run a source prompt, keep its text K/V) and :func:`text_patches` (the
  interventions that patch them into a target run, per sample: layers, heads, start step);
* :func:`patched_generate`: the two together, one target/source pair on any model;
The scores live in :mod:`workbench.analysis.metrics`, the selection rules in
:mod:`workbench.studies.localization.protocol`, and the sweep engine that shares work between
variants in :mod:`workbench.studies.localization.sweeps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ...capture import Intervention, edit, intervene, record, resolve
from ...data import ROLES, token_alignment

Span = tuple[int, int]
ROLES_ALIGNED = ROLES  # caption roles: patched token for token


# -- layers -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextLayer:
    """One attention module whose keys and values come from text tokens."""

    index: int
    module: str  # the attention module's path in the denoiser
    key: str  # site name of its text keys
    value: str  # site name of its text values


def text_layers(model) -> list[TextLayer]:
    """The denoiser's text layers in forward order (site map ``text_keys`` / ``text_values``)."""
    site_map = model.site_map
    if not site_map.text_keys or not site_map.text_values:
        raise ValueError(f"{model.name or site_map.family}: its site map declares no text keys/values "
                         f"(family {site_map.family!r} has no text stream to patch)")
    keys = {s.module: s.name for s in resolve(model.denoiser, list(site_map.text_keys))}
    values = {s.module: s.name for s in resolve(model.denoiser, list(site_map.text_values))}
    modules = [m for m in keys if m in values]
    return [TextLayer(i, m, keys[m], values[m]) for i, m in enumerate(modules)]


def pick_layers(model, layers) -> list[TextLayer]:
    """``layers`` (indices, module paths, or None for all) as TextLayers; a clear error for a layer
    that has no text stream."""
    available = text_layers(model)
    if layers is None:
        return available
    if isinstance(layers, (int, str, np.integer)):
        layers = [layers]
    by_module = {layer.module: layer for layer in available}
    chosen = []
    for layer in layers:
        if isinstance(layer, (int, np.integer)):
            if not 0 <= layer < len(available):
                raise IndexError(f"text layer {layer} is out of range: {model.name or 'this model'} has "
                                 f"{len(available)} text layers (0..{len(available) - 1})")
            chosen.append(available[int(layer)])
        elif layer in by_module:
            chosen.append(by_module[layer])
        else:
            valid = ", ".join(by_module)
            raise ValueError(f"{layer!r} is not a layer with a text stream; the text layers of "
                             f"{model.name or 'this model'} are: {valid} (or their indices 0..{len(available) - 1})")
    return chosen


def layer_parameter_share(model, layers: Sequence[TextLayer] | None = None) -> float:
    """Share of the denoiser's parameters that produce the text K/V of ``layers``.

    Found without architecture knowledge: a parameter inside the layer's attention module counts if
    the text keys or values depend on it (:func:`text_kv_parameters`). This is the
    paper's count (SD3 block 10: 0.23%, SDXL layers 55-57: 0.61%): the text key/value projections
    (and their norms), not the whole attention block."""
    layers = text_layers(model) if layers is None else list(layers)
    owners = text_kv_parameters(model, layers)
    total = sum(p.numel() for p in model.denoiser.parameters())
    return sum(p.numel() for p in owners.values()) / total


def text_kv_parameters(model, layers: Sequence[TextLayer]) -> dict[str, torch.nn.Parameter]:
    """Parameters (by name) inside each layer's module on which its text K/V depend.

    Found by perturbation, the same way on every model (pipelines included): record the layer's
    text K/V in a one-step run, nudge one parameter tensor of the module, run again, restore it;
    the tensors that moved the K/V are the owners."""
    owners: dict[str, torch.nn.Parameter] = {}
    generator = torch.Generator().manual_seed(0)
    for layer in layers:
        sites = [layer.key, layer.value]
        base = _one_step_kv(model, sites)
        for name, param in model.denoiser.get_submodule(layer.module).named_parameters():
            saved = param.detach().clone()
            with torch.no_grad():
                param.add_(0.1 + 0.1 * torch.randn(param.shape, generator=generator).to(param))
            try:
                moved = _one_step_kv(model, sites)
            finally:
                with torch.no_grad():
                    param.copy_(saved)
            if any(not np.array_equal(moved[s], base[s]) for s in sites):
                owners[f"{layer.module}.{name}"] = param
    return owners


def _one_step_kv(model, sites: list[str]) -> dict[str, np.ndarray]:
    with record(model, sites) as rec:
        model.generate(["a red circle", 'the letter "K"'], steps=1, seed=0)
    return {site: rec[site].values for site in sites}


# -- token alignment --------------------------------------------------------------------------------
def align_tokens(target_offsets: Sequence[Span], source_offsets: Sequence[Span],
                 target_spans: Mapping[str, Span], source_spans: Mapping[str, Span]) -> np.ndarray:
    """For each target token, the index of the source token whose K/V it receives.

    Both captions are cut at their role spans (``Scene.spans``: name, colour, size, position) into
    pieces: the words before the first role, each role, the words between roles, and the tail (end
    token, padding). Role pieces map one to one, so the glyph, colour and position tokens land on
    their own counterparts even when the words around them ("letter" / "capital letter") tokenize
    to other lengths; those in-between pieces and the tail map position by position, the shorter
    repeating its last token. A role that tokenizes to different lengths (a glyph the tokenizer
    splits differently) cannot be aligned: a ``ValueError`` names it."""
    target_pieces = _pieces(target_offsets, target_spans)
    source_pieces = _pieces(source_offsets, source_spans)
    if [k for k, _ in target_pieces] != [k for k, _ in source_pieces]:
        raise ValueError(f"the prompts mention different roles in different orders (target "
                         f"{[k for k, _ in target_pieces]}, source {[k for k, _ in source_pieces]}): no token alignment")
    mapping = np.arange(len(target_offsets))
    for (kind, t_tokens), (_, s_tokens) in zip(target_pieces, source_pieces):
        if kind not in ROLES_ALIGNED:
            for i, t in enumerate(t_tokens):
                mapping[t] = s_tokens[min(i, len(s_tokens) - 1)] if s_tokens else t
            continue
        if len(t_tokens) != len(s_tokens):
            what = "the glyph" if kind == "name" else f"the {kind} word"
            raise ValueError(f"{what} tokenizes into {len(s_tokens)} token(s) in the source prompt but "
                             f"{len(t_tokens)} in the target: the tokenizer splits them differently, so "
                             "their keys/values cannot be patched token for token")
        mapping[t_tokens] = s_tokens
    return mapping


def _pieces(offsets: Sequence[Span], spans: Mapping[str, Span]) -> list[tuple[str, list[int]]]:
    roles = sorted(((s, e, r) for r, (s, e) in spans.items() if 0 <= s < e), key=lambda x: x[0])
    aligned = token_alignment({r: (s, e) for s, e, r in roles}, offsets)
    owner: dict[int, str] = {t: role for role, tokens in aligned.items() for t in tokens}
    content = [i for i, (a, b) in enumerate(offsets) if a < b]
    first = content[0] if content else len(offsets)
    last = content[-1] if content else -1
    pieces: list[tuple[str, list[int]]] = []
    for i, (a, b) in enumerate(offsets):
        if i > last:
            kind = "tail"
        elif i < first:
            kind = "gap0"
        elif i in owner:
            kind = owner[i]
        else:
            kind = f"gap{sum(1 for s, e, _ in roles if e <= a)}"
        if pieces and pieces[-1][0] == kind:
            pieces[-1][1].append(i)
        else:
            pieces.append((kind, [i]))
    if not pieces or pieces[-1][0] != "tail":
        pieces.append(("tail", []))
    return pieces


def prompt_token_maps(model, targets: Sequence[str], sources: Sequence[str],
                      target_spans: Sequence[Mapping[str, Span]] | None = None,
                      source_spans: Sequence[Mapping[str, Span]] | None = None) -> np.ndarray | None:
    """Per pair, the target -> source token map (``align_tokens``); None where the model has no
    single tokenizer (pipelines: positions are patched as they are). Without spans the prompts
    must have the same number of tokens, else a clear error asks for them."""
    if model.tokenizer is None:
        return None
    t_offsets, s_offsets = model.token_offsets(targets), model.token_offsets(sources)
    maps = []
    for i, (t_off, s_off) in enumerate(zip(t_offsets, s_offsets)):
        if target_spans is not None and source_spans is not None:
            maps.append(align_tokens(t_off, s_off, target_spans[i], source_spans[i]))
            continue
        t_len = sum(a < b for a, b in t_off)
        s_len = sum(a < b for a, b in s_off)
        if t_len != s_len:
            raise ValueError(f"target {targets[i]!r} has {t_len} text tokens but source {sources[i]!r} has "
                             f"{s_len}: pass the captions' role spans (Scene.spans) so they can be aligned")
        maps.append(np.arange(len(t_off)))
    return np.stack(maps)


# -- caching a source run and patching it in --------------------------------------------------------
@dataclass
class TextCache:
    """A source run's text keys and values, cond branch: site -> (sample, step, head, token, channel)."""

    prompts: list[str]
    steps: int
    seeds: list[int]
    guidance_scale: float | None
    kv: dict[str, torch.Tensor] = field(repr=False)
    first_step: int = 0

    def heads(self, layer: TextLayer) -> int:
        return int(self.kv[layer.key].shape[2])

    def check_run(self, steps: int, seeds: Sequence[int], guidance_scale: float | None) -> None:
        """The target run must share the source's noise and schedule, else patching mixes two runs."""
        if steps != self.steps:
            raise ValueError(f"the source run has {self.steps} steps but the target run {steps}: patch "
                             "between runs of the same step count")
        if list(seeds) != list(self.seeds):
            raise ValueError(f"the source run used seeds {self.seeds} but the target run {list(seeds)}: "
                             "source and target must start from the same noise")
        if guidance_scale != self.guidance_scale:
            raise ValueError(f"the source run used guidance {self.guidance_scale}, the target run {guidance_scale}")


def cache_text(model, prompts: Sequence[str], *, steps: int, seed: int | Sequence[int] = 0,
               guidance_scale: float | None = None, latents: torch.Tensor | None = None,
               layers=None) -> tuple[np.ndarray, TextCache]:
    """Run ``prompts`` and keep their text K/V at every step (cond branch): ``(images, cache)``.

    ``seed`` is one seed (the run's) or, with ``latents`` (one noise per sample), the seed of
    each sample, kept so that a target run can be checked against it."""
    prompts = list(prompts)
    chosen = pick_layers(model, layers)
    sites = [s for layer in chosen for s in (layer.key, layer.value)]
    with record(model, sites) as rec:
        # Given latents carry each sample's noise; without them (a pipeline) each sample draws its
        # noise from its own seed.
        run_seed = seed if isinstance(seed, int) else (0 if latents is not None else list(seed))
        images = model.generate(prompts, steps=steps, seed=run_seed,
                                guidance_scale=guidance_scale, **({} if latents is None else {"latents": latents}))
    kv = {}
    for site in sites:
        array = rec[site]
        if "branch" in array.dims:
            array = array.sel(branch="cond")
        kv[site] = torch.from_numpy(np.ascontiguousarray(array.transpose("sample", "step", "head", "token", "channel").values))
    seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
    return images, TextCache(prompts, steps, seeds, guidance_scale, kv)


@dataclass
class PatchPlan:
    """Per sample of a target batch: which source sample, which heads of which layers, from when.

    ``source[i]`` indexes the cache's samples; ``heads[layer][i]`` is a bool mask over heads (all
    False: that layer is not patched for sample i); ``start[i]`` is the first patched step;
    ``tokens[i]`` maps target tokens to source tokens (None: identity)."""

    source: np.ndarray
    heads: dict[str, np.ndarray]  # layer module -> (sample, head) bool
    start: np.ndarray
    tokens: np.ndarray | None = None


@dataclass
class _KVReplacement:
    """``edit`` function: text K/V of the cond branch, per sample, replaced by the cached source's
    (see PatchPlan). A plan acts per sample, which the edit selections (heads=, branch=) cannot say."""

    values: torch.Tensor  # (source sample, step, head, token, channel)
    source_of: torch.Tensor  # (sample,)
    head_mask: torch.Tensor  # (sample, head) bool
    start: torch.Tensor  # (sample,)
    token_map: torch.Tensor | None  # (sample, token) or None
    first_step: int = 0

    def __call__(self, x, ctx):
        rows = [r for r, b in enumerate(ctx.row_branches) if b == "cond"]
        if len(rows) != len(self.source_of):
            raise ValueError(f"a patch plan for {len(self.source_of)} samples met a batch with {len(rows)} "
                             f"conditional rows at {ctx.site.name}")
        active = self.head_mask & (self.start <= ctx.step)[:, None]
        if not bool(active.any()):
            return x
        source = self.values[:, ctx.step - self.first_step][self.source_of]  # (sample, head, token, channel)
        if self.token_map is not None:
            index = self.token_map[:, None, :, None].expand(-1, source.shape[1], -1, source.shape[3])
            source = torch.gather(source, 2, index)
        out = x.clone()
        out[rows] = torch.where(active[:, :, None, None], source.to(x.dtype), x[rows])
        return out

    def __repr__(self) -> str:
        # Recordings keep each intervention's repr; printing the cached K/V tensors cost ~0.1 s per
        # intervention (7 of a 2-pair sweep's 130 s), and their shapes say what the record needs.
        return (f"_KVReplacement(values={tuple(self.values.shape)}, samples={len(self.source_of)}, "
                f"heads={self.head_mask.sum(1).tolist()}, start={self.start.tolist()}, "
                f"token_map={'none' if self.token_map is None else tuple(self.token_map.shape)}, "
                f"first_step={self.first_step})")


def text_patches(model, cache: TextCache, plan: PatchPlan, steps: int) -> list[Intervention]:
    """The interventions that carry out ``plan`` in a target run of ``steps`` steps."""
    n = len(plan.source)
    start = np.asarray(plan.start)
    if (start < 0).any() or (start >= steps).any():
        bad = sorted(set(start[(start < 0) | (start >= steps)].tolist()))
        raise ValueError(f"start step(s) {bad} are beyond the run: a {steps}-step run has steps 0..{steps - 1}")
    if np.any(np.asarray(plan.source) >= len(cache.prompts)) or np.any(np.asarray(plan.source) < 0):
        raise IndexError(f"source indices must be in 0..{len(cache.prompts) - 1}")
    layers = pick_layers(model, list(plan.heads))
    tokens = None if plan.tokens is None else torch.as_tensor(np.asarray(plan.tokens), dtype=torch.long)
    out = []
    for layer in layers:
        mask = np.asarray(plan.heads[layer.module], dtype=bool)
        if mask.shape != (n, cache.heads(layer)):
            raise IndexError(f"layer {layer.module} has {cache.heads(layer)} heads; its head mask has shape "
                             f"{mask.shape}, expected ({n}, {cache.heads(layer)})")
        if layer.key not in cache.kv:
            raise KeyError(f"the source cache holds no K/V for {layer.module}; cache it with layers=None")
        for site in (layer.key, layer.value):
            replace = _KVReplacement(values=cache.kv[site],
                                     source_of=torch.as_tensor(np.asarray(plan.source), dtype=torch.long),
                                     head_mask=torch.as_tensor(mask), start=torch.as_tensor(start),
                                     token_map=tokens, first_step=cache.first_step)
            out.append(edit(site, replace, steps=slice(int(start.min()), None)))
    return out


def head_mask(cache: TextCache, layer: TextLayer, heads: Sequence[int] | None, n: int = 1) -> np.ndarray:
    """(n, heads) bool mask for ``heads`` (None: all); a clear error for a head out of range."""
    count = cache.heads(layer)
    mask = np.zeros((n, count), dtype=bool)
    if heads is None:
        mask[:] = True
        return mask
    bad = [h for h in heads if not 0 <= int(h) < count]
    if bad:
        raise IndexError(f"head(s) {bad} out of range: layer {layer.module} has {count} heads (0..{count - 1})")
    mask[:, list(heads)] = True
    return mask


def patched_generate(model, target: str, source: str, *, layers=None, heads: Sequence[int] | None = None,
                     start_step: int = 0, steps: int = 20, seed: int = 0, guidance_scale: float | None = None,
                     target_spans: Mapping[str, Span] | None = None, source_spans: Mapping[str, Span] | None = None,
                     cache: TextCache | None = None) -> dict[str, np.ndarray]:
    """One pair: ``{"source", "target", "patched"}`` images, the target run with ``source``'s text
    K/V patched into ``layers`` (indices or module paths; None: all), ``heads`` (None: all) from
    ``start_step`` on. Works on any model with a text stream (reference models and pipelines)."""
    if not 0 <= start_step < steps:
        raise ValueError(f"start_step={start_step} is beyond the run: a {steps}-step run has steps 0..{steps - 1}")
    chosen = pick_layers(model, layers)
    if heads is not None and len(chosen) != 1:
        raise ValueError("heads= selects heads inside one layer: pass a single layer with it")
    if cache is None:
        source_images, cache = cache_text(model, [source], steps=steps, seed=seed, guidance_scale=guidance_scale)
    else:
        source_images = None
    cache.check_run(steps, [seed], guidance_scale)
    tokens = prompt_token_maps(model, [target], [source], None if target_spans is None else [target_spans],
                               None if source_spans is None else [source_spans])
    plan = PatchPlan(source=np.zeros(1, dtype=int),
                     heads={layer.module: head_mask(cache, layer, heads) for layer in chosen},
                     start=np.array([start_step]), tokens=tokens)
    target_images = model.generate([target], steps=steps, seed=seed, guidance_scale=guidance_scale)
    with intervene(model, text_patches(model, cache, plan, steps)):
        patched = model.generate([target], steps=steps, seed=seed, guidance_scale=guidance_scale)
    out = {"target": target_images[0], "patched": patched[0]}
    if source_images is not None:
        out["source"] = source_images[0]
    return out
