"""A patching sweep engine that does not recompute what variants share.

A variant patches a source's text K/V into a target run at some layers (and heads) from a start
step on. Every variant starting at step ``s`` runs steps ``[0, s)`` exactly as the unpatched
target does, so the engine runs the unpatched target once, keeps the latents entering every start
step (partial runs: ``Model.generate(stop_step=...)`` then ``start_step=...`` is bit for bit the
full run), and runs only ``[s, n)`` per variant, with all variants that start at ``s`` (for all
pairs) batched along ``sample``. :func:`naive_sweep` is the anchor's way, one full generation per
variant, kept as the reference the engine must reproduce.

Both return images ``(pair, variant, y, x, rgb)`` and count denoiser calls and CPU time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ...capture import intervene
from ...chain import ModelHook, attach
from ...sitemap import kwarg_or_arg
from .patching import PatchPlan, TextCache, cache_text, head_mask, pick_layers, text_patches


@dataclass(frozen=True)
class Variant:
    """Patch ``layers`` (indices; all heads, or ``heads`` when one layer) from ``start`` on."""

    layers: tuple[int, ...]
    start: int
    heads: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        heads = "" if self.heads is None else "h" + "+".join(map(str, self.heads))
        return f"L{'+'.join(map(str, self.layers))}{heads}@{self.start}"


@dataclass
class Cost:
    """Denoiser calls, rows pushed through them (calls x batch) and CPU seconds."""

    calls: int = 0
    rows: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "rows": self.rows, "cpu_s": round(self.cpu_s, 3), "wall_s": round(self.wall_s, 3)}


@dataclass
class SweepResult:
    images: np.ndarray  # (pair, variant, y, x, rgb)
    target: np.ndarray  # (pair, y, x, rgb) unpatched target
    source: np.ndarray  # (pair, y, x, rgb)
    variants: list[Variant]
    cost: Cost = field(default_factory=Cost)
    swaps: np.ndarray | None = None  # (pair, swap start, y, x, rgb): the source prompt from step k on
    latents: np.ndarray | None = None  # (pair, variant, *latent): final latents, model dtype (keep_latents=True)


def noise_for(model, seeds: Sequence[int]) -> torch.Tensor:
    """One initial noise per sample from its own seed, so a sample's run never depends on its batch
    (drawn in float32, then in the denoiser's dtype: a float64 model gets the same noise)."""
    if model.latent_shape is None:
        raise ValueError(f"{model.name or 'this model'} runs through a pipeline, which cannot start from given "
                         "latents or resume mid-schedule: sweep it with naive_sweep, or patch single pairs "
                         "with patched_generate")
    dtype = next(model.denoiser.parameters()).dtype
    return torch.cat([torch.randn((1, *model.latent_shape), generator=torch.Generator("cpu").manual_seed(int(s)))
                      for s in seeds]).to(dtype)


class _Counter(ModelHook):
    """Counts denoiser calls and their batch rows while active (an entry of the denoiser's hook
    chain, removed after)."""

    def __init__(self, model, cost: Cost):
        self.model, self.cost = model, cost

    def pre_forward(self, module, args, kwargs):
        latent = kwarg_or_arg(args, kwargs, self.model.site_map.latent_input)
        self.cost.calls += 1
        self.cost.rows += int(latent.shape[0])

    def __enter__(self):
        self.handle = attach(self.model.denoiser, "sweep.cost", self)
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.cost.cpu_s += time.process_time() - self.cpu
        self.cost.wall_s += time.perf_counter() - self.wall


def _plan(model, cache: TextCache, variants: Sequence[Variant], pairs: Sequence[int],
          token_maps: np.ndarray | None) -> PatchPlan:
    """A patch plan for the batch ``[variant 0: pairs..., variant 1: pairs..., ...]``."""
    layers = pick_layers(model, None)
    n = len(variants) * len(pairs)
    heads = {layer.module: np.zeros((n, cache.heads(layer)), dtype=bool) for layer in layers}
    start = np.zeros(n, dtype=int)
    source = np.tile(np.asarray(pairs), len(variants))
    for v, variant in enumerate(variants):
        rows = slice(v * len(pairs), (v + 1) * len(pairs))
        if variant.heads is not None and len(variant.layers) != 1:
            raise ValueError(f"variant {variant.label}: heads select inside one layer")
        for layer in pick_layers(model, list(variant.layers)):
            heads[layer.module][rows] = head_mask(cache, layer, variant.heads, len(pairs))
        start[rows] = variant.start
    tokens = None if token_maps is None else np.tile(token_maps[np.asarray(pairs)], (len(variants), 1))
    used = {m: h for m, h in heads.items() if h.any()}
    return PatchPlan(source=source, heads=used, start=start, tokens=tokens)


def _check_variants(variants: Sequence[Variant], steps: int) -> None:
    bad = [v.label for v in variants if not 0 <= v.start < steps]
    if bad:
        raise ValueError(f"variants {bad} start beyond the run: a {steps}-step run has steps 0..{steps - 1}")


def sweep(model, targets: Sequence[str], sources: Sequence[str], seeds: Sequence[int], variants: Sequence[Variant],
          *, steps: int, guidance_scale: float | None = None, token_maps: np.ndarray | None = None,
          batch: int = 64, swap_starts: Sequence[int] = (), progress=None, keep_latents: bool = False) -> SweepResult:
    """Every variant on every (target, source, seed) pair, sharing prefixes and batching variants.

    ``batch`` caps the rows of one denoiser call (x2 with guidance). ``progress``: a tqdm-like
    object to ``update(n)`` per finished variant group. ``swap_starts``: also run the baseline
    "prompt swap from step k" (the target's own latents entering k, then the source prompt).
    ``keep_latents``: also return every variant's final latents in the model's dtype (images are
    float32; a float64 equality check compares these)."""
    variants = list(variants)
    _check_variants(variants, steps)
    cost = Cost()
    noise = noise_for(model, seeds)
    n = len(targets)
    with _Counter(model, cost):
        source_images, cache = cache_text(model, sources, steps=steps, seed=list(seeds),
                                          guidance_scale=guidance_scale, latents=noise)
        cache.check_run(steps, seeds, guidance_scale)
        starts = sorted({v.start for v in variants} | set(swap_starts))
        latents, at = noise, 0
        entering: dict[int, torch.Tensor] = {}
        for s in starts:  # the unpatched target, stopping at every start step on its way
            latents = _run(model, targets, latents, steps, at, s, guidance_scale) if s > at else latents
            entering[s], at = latents, s
        target_latents = _run(model, targets, latents, steps, at, steps, guidance_scale)
        target_images = model.decode_latents(target_latents)
        images = np.zeros((n, len(variants), *target_images.shape[1:]), dtype=np.float32)
        kept = np.zeros((n, len(variants), *target_latents.shape[1:]), dtype=_np_dtype(target_latents)) if keep_latents else None
        for s in starts:
            group = [i for i, v in enumerate(variants) if v.start == s]
            if not group:
                continue
            per_call = max(1, batch // n)  # variants per call, all pairs each
            for k in range(0, len(group), per_call):
                chunk = group[k:k + per_call]
                plan = _plan(model, cache, [variants[i] for i in chunk], range(n), token_maps)
                prompts = list(targets) * len(chunk)
                start_latents = entering[s].repeat(len(chunk), *([1] * (entering[s].dim() - 1)))
                with intervene(model, text_patches(model, cache, plan, steps)):
                    out = _run(model, prompts, start_latents, steps, s, steps, guidance_scale)
                decoded = np.clip(model.decode_latents(out), 0.0, 1.0).reshape(len(chunk), n, *target_images.shape[1:])
                images[:, chunk] = decoded.transpose(1, 0, *range(2, decoded.ndim))
                if kept is not None:
                    final = out.numpy().reshape(len(chunk), n, *out.shape[1:])
                    kept[:, chunk] = final.transpose(1, 0, *range(2, final.ndim))
                if progress is not None:
                    progress.update(len(chunk))
        swaps = None
        if swap_starts:
            swaps = np.stack([np.clip(model.decode_latents(_run(model, sources, entering[k], steps, k, steps,
                                                                  guidance_scale)), 0.0, 1.0) for k in swap_starts], 1)
    return SweepResult(images, np.clip(target_images, 0, 1), np.clip(source_images, 0, 1), variants, cost, swaps, kept)


def naive_sweep(model, targets: Sequence[str], sources: Sequence[str], seeds: Sequence[int],
                variants: Sequence[Variant], *, steps: int, guidance_scale: float | None = None,
                token_maps: np.ndarray | None = None, pairs_per_run: int | None = None,
                keep_latents: bool = False) -> SweepResult:
    """One full generation per variant, nothing shared: the reference the engine must reproduce,
    and the way to sweep a model that runs through its pipeline (which cannot resume mid-schedule;
    each sample's noise then comes from its own seed, drawn by the pipeline).

    ``pairs_per_run=1`` is the anchor's way (one generation per prompt and variant); None batches
    all pairs of a variant in one generation (a stronger baseline)."""
    variants = list(variants)
    _check_variants(variants, steps)
    cost = Cost()
    if model.latent_shape is None and keep_latents:
        raise ValueError(f"{model.name or 'this model'} runs through a pipeline, which returns images, not latents: "
                         "sweep it with keep_latents=False")
    noise = noise_for(model, seeds) if model.latent_shape is not None else None
    n = len(targets)
    per_run = n if pairs_per_run is None else pairs_per_run
    with _Counter(model, cost):
        source_images, cache = cache_text(model, sources, steps=steps, seed=list(seeds),
                                          guidance_scale=guidance_scale, latents=noise)
        if noise is None:
            target_images = model.generate(list(targets), steps=steps, seed=list(seeds), guidance_scale=guidance_scale)
        else:
            target_images = model.decode_latents(_run(model, targets, noise, steps, 0, steps, guidance_scale))
        images = np.zeros((n, len(variants), *target_images.shape[1:]), dtype=np.float32)
        kept = np.zeros((n, len(variants), *noise.shape[1:]), dtype=_np_dtype(noise)) if keep_latents else None
        for v, variant in enumerate(variants):
            for a in range(0, n, per_run):
                pairs = list(range(a, min(a + per_run, n)))
                plan = _plan(model, cache, [variant], pairs, token_maps)
                with intervene(model, text_patches(model, cache, plan, steps)):
                    if noise is None:
                        images[pairs, v] = model.generate([targets[i] for i in pairs], steps=steps,
                                                          seed=[int(seeds[i]) for i in pairs],
                                                          guidance_scale=guidance_scale)
                        continue
                    out = _run(model, [targets[i] for i in pairs], noise[pairs], steps, 0, steps, guidance_scale)
                images[pairs, v] = model.decode_latents(out)
                if kept is not None:
                    kept[pairs, v] = out.numpy()
    return SweepResult(np.clip(images, 0.0, 1.0), np.clip(target_images, 0, 1), np.clip(source_images, 0, 1),
                       variants, cost, latents=kept)


def _np_dtype(tensor: torch.Tensor):
    return torch.empty((), dtype=tensor.dtype).numpy().dtype


def _run(model, prompts, latents, steps, start, stop, guidance_scale):
    return model.generate(list(prompts), steps=steps, latents=latents, start_step=start, stop_step=stop,
                          guidance_scale=guidance_scale, output="latents")


def layer_start_grid(model, starts: Sequence[int]) -> list[Variant]:
    """One variant per (text layer, start step), all heads."""
    return [Variant((layer.index,), s) for layer in pick_layers(model, None) for s in starts]
