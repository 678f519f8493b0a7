"""Attribution patching: every text layer's and head's patching effect from gradients.

Activation patching (:mod:`workbench.studies.localization.patching`) runs the target prompt once per
variant with the source's text K/V put in. Attribution patching (Nanda 2023; Syed et al. 2023)
estimates all variants at once, to first order, from one *clean* run (the target prompt A, with
autograd on), one *corrupted* run (the source prompt B: its text K/V cached, as for activation
patching) and one backward pass:

    effect(layer, heads, start) ~= sum over steps >= start, heads, tokens, channels, K and V of
                                   (KV_B - KV_A) * d metric / d KV   (evaluated on the clean run)

where ``KV_B`` is the source's text K/V aligned to the target's tokens (:func:`align_tokens`),
``KV_A`` the clean run's, and the gradient flows from the metric on the final image back through
the whole sampling loop (scheduler steps included) to the text K/V of the conditional branch at
every step. The estimate is linear, so one backward pass gives every (layer, head, start step)
and any set of them (the sum of its parts).

How the gradient reaches the K/V without touching the model: an ``edit`` on every text K/V site
adds a zero tensor that requires grad to the conditional rows (the forward values are unchanged
bit for bit) and keeps a detached copy of the clean K/V; ``Model.generate(grad=True)`` keeps
autograd on through the loop. Nothing is patched globally; the denoiser's parameters stay frozen;
the leaves, the graph and the hooks are released when the run ends, also when it raises.

``attribute(path_points=n)`` is the integrated-gradients variant: the same terms with the gradient
averaged (trapezoid) over n points of the straight path on which every attributed layer's K/V moves
from the clean run's to the source's together; n = 1 (the default) is the first-order estimate.
It exists because the metric can be a switch along that path (issue 23: toy-unet's layer 4 is flat
at both ends and jumps in between, so the gradient at the clean run sees none of the effect); see
``attribution_fd_scan --part path`` for how much a few points help.

The metric (:class:`GlyphMetric`, the study's choice): the judge's name logit for glyph B minus
its logit for glyph A, at the pair's position, on the final image. The judge is a CNN over 16 x 16
crops, differentiable from the pixels; the image is the clamped pixel-space latent, exactly what
``Model.decode_latents`` gives (models whose latents are not the image are refused: their decoder
is not differentiable here). The same metric on finished images (:func:`glyph_logit_gap`) scores
activation-patched runs, so both sides are compared on one scale.

Pure functions over the result: :func:`layer_effects`, :func:`head_effects`,
:func:`variant_effect` (any :class:`~workbench.studies.localization.sweeps.Variant`), :func:`spearman`,
:func:`top_k_overlap`. :func:`blended_generate` runs ``KV + alpha (KV_B - KV)`` in chosen layers and
heads (alpha = 1: activation patching), the finite-difference check of the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr

from ...capture import edit, intervene
from ...data import make_scene
from .patching import TextCache, TextLayer, cache_text, pick_layers, prompt_token_maps
from .sweeps import Cost, Variant, _Counter, noise_for

Metric = Callable[[torch.Tensor, np.ndarray], torch.Tensor]  # (final latents, pair indices) -> (pairs,)


# -- the metric -------------------------------------------------------------------------------------
def differentiable_images(model, latents: torch.Tensor) -> torch.Tensor:
    """Final latents -> images (N, 3, H, W) in [-1, 1] with their graph: the clamped latent itself
    for a pixel-space model (``Model.pixel_space``), which is what its decoder returns, detached."""
    if not model.pixel_space:
        raise ValueError(f"{model.name or 'this model'} denoises {model.latent_channels}-channel latents through a "
                         "decoder that is not differentiable here; attribution patching needs a pixel-space model "
                         "(the reference models), whose latent is the image")
    return latents.clamp(-1.0, 1.0)


@dataclass
class GlyphMetric:
    """The judge's name logit for the source glyph minus that for the target glyph, at each pair's
    position: > 0 where the image reads more like B than A. Differentiable from the image."""

    judge: torch.nn.Module
    positions: Sequence[str]
    target_glyphs: Sequence[str]
    source_glyphs: Sequence[str]

    def __post_init__(self):
        n = len(self.positions)
        if not (len(self.target_glyphs) == len(self.source_glyphs) == n):
            raise ValueError(f"{n} positions but {len(self.target_glyphs)} target and {len(self.source_glyphs)} "
                             "source glyphs: one of each per pair")
        names, places = list(self.judge.names), list(self.judge.positions)
        unknown = sorted({g for g in (*self.target_glyphs, *self.source_glyphs) if g not in names})
        if unknown:
            raise ValueError(f"the judge does not know {unknown}; it reads {names}")
        bad = sorted({p for p in self.positions if p not in places})
        if bad:
            raise ValueError(f"unknown position(s) {bad}; the judge reads {places}")
        self._a = np.array([names.index(g) for g in self.target_glyphs])
        self._b = np.array([names.index(g) for g in self.source_glyphs])
        self._p = np.array([places.index(p) for p in self.positions])

    def on_images(self, images: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """``images`` (N, 3, H, W) in [-1, 1] of pairs ``rows`` -> (N,) logit gaps."""
        from ...models.judge import CROP, crop_at_anchors

        rows = np.asarray(rows)
        crops = crop_at_anchors(images.float(), tuple(self.judge.positions))  # (N, P, 3, C, C)
        mine = crops[torch.arange(len(rows)), torch.as_tensor(self._p[rows])]
        self.judge.eval()
        logits, _ = self.judge(mine.reshape(-1, 3, CROP, CROP))
        index = torch.arange(len(rows))
        return logits[index, torch.as_tensor(self._b[rows])] - logits[index, torch.as_tensor(self._a[rows])]


def glyph_logit_gap(metric: GlyphMetric, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The metric on finished images ``(..., H, W, 3)`` in [0, 1] (as ``generate`` and the sweeps
    return them; the leading axes are per pair first): what activation-patched runs score."""
    images = np.asarray(images, dtype=np.float32)
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    rows = np.arange(lead[0]) if rows is None else np.asarray(rows)
    per = int(np.prod(lead[1:])) if len(lead) > 1 else 1
    with torch.no_grad():
        pixels = torch.from_numpy(flat).permute(0, 3, 1, 2) * 2 - 1
        out = metric.on_images(pixels, np.repeat(rows, per))
    return out.numpy().reshape(lead)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class _GradientTap:
    """``edit`` function: conditional rows become ``x + alpha (KV_B - x) + d`` with ``d`` a zero leaf
    that requires grad, and ``KV_B - x`` (detached) is kept as the direction the estimate dots
    with the gradient. alpha = 0 leaves the values unchanged (the clean run of first-order
    attribution); 0 < alpha <= 1 is a point on the straight path to the source's K/V (integrated
    gradients). One leaf per (site, step)."""

    cache: TextCache
    token_index: torch.Tensor | None  # (pair, token): target -> source token map, or None
    alpha: float = 0.0
    leaves: dict = field(default_factory=dict)  # (site, step) -> leaf (cond rows, head, token, channel)
    delta: dict = field(default_factory=dict)  # (site, step) -> detached KV_B - x

    def __call__(self, x, ctx):
        rows = torch.tensor([r for r, b in enumerate(ctx.row_branches) if b == "cond"], dtype=torch.long)
        key = (ctx.site.name, ctx.step)
        if key in self.leaves:
            raise RuntimeError(f"{ctx.site.name} fired twice at step {ctx.step}: one gradient per step expected")
        source = self.cache.kv[ctx.site.name][:, ctx.step]  # (pair, head, token, channel)
        if self.token_index is not None:
            index = self.token_index[:, None, :, None].expand(-1, source.shape[1], -1, source.shape[3])
            source = torch.gather(source, 2, index)
        delta = source.to(x.dtype).to(x.device) - x.detach()[rows]
        self.delta[key] = delta
        leaf = torch.zeros((len(rows), *x.shape[1:]), dtype=x.dtype, device=x.device, requires_grad=True)
        self.leaves[key] = leaf
        # alpha = 0 adds nothing, so the clean run stays bit-identical to an unhooked one
        shift = leaf if self.alpha == 0 else self.alpha * delta + leaf
        return x.index_add(0, rows.to(x.device), shift)

    def release(self) -> None:
        for leaf in self.leaves.values():
            leaf.grad = None
        self.leaves.clear()
        self.delta.clear()


def path_weights(points: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of the trapezoid rule over ``points`` equally spaced points of [0, 1]
    (both ends included); ``points = 1`` is the clean point alone, weight 1: first-order attribution.
    ``sum(weights * f(alphas))`` approximates the integral of ``f`` over [0, 1]."""
    if int(points) != points or points < 1:
        raise ValueError(f"path_points must be a whole number >= 1 (1: the gradient at the clean run; n > 1: "
                         f"integrated gradients over n points from clean to source), got {points}")
    points = int(points)
    if points == 1:
        return np.zeros(1), np.ones(1)
    alphas = np.linspace(0.0, 1.0, points)
    weights = np.full(points, 1.0 / (points - 1))
    weights[[0, -1]] /= 2
    return alphas, weights


@dataclass
class Attribution:
    """Per pair, text layer, head and step: ``(KV_B - KV_A) . d metric / d KV`` summed over tokens,
    channels and K + V (``contributions``, NaN for heads a layer does not have), the gradient taken
    at the clean run or averaged over the path (``path``: the same terms at each point ``alpha``;
    ``contributions`` is their trapezoid mean); ``clean``: the metric on the unpatched target;
    ``path_metric`` (alpha, pair): the metric at each point; ``cost``: denoiser calls and CPU time."""

    contributions: xr.DataArray  # (pair, layer, head, step)
    clean: np.ndarray  # (pair,)
    layers: list[TextLayer]
    cost: Cost
    backward_passes: int = 0
    path: xr.DataArray | None = None  # (alpha, pair, layer, head, step)
    path_metric: np.ndarray | None = None  # (alpha, pair)


def attribute(model, targets: Sequence[str], sources: Sequence[str], seeds: Sequence[int], metric: Metric, *,
              steps: int, guidance_scale: float | None = None, token_maps: np.ndarray | None = None,
              layers=None, batch: int = 32, path_points: int = 1) -> Attribution:
    """Estimated patching effects of every text layer, head and step, for every pair.

    Per chunk of ``batch`` pairs: the source run (its text K/V cached, no graph), the target run
    with autograd on from the same noise, ``metric(final latents, pair indices).sum()`` backward
    (pairs are independent, so each pair's gradient is its own). ``token_maps`` (pair, token): the
    target -> source token map (``prompt_token_maps``). ``metric`` may use
    :func:`differentiable_images`; a :class:`GlyphMetric` is taken as it is.

    ``path_points = 1`` (the default) is first-order attribution patching: the gradient at the clean
    run. ``path_points = n > 1`` is integrated gradients: the target run and backward pass are
    repeated at ``n`` points ``alpha`` of [0, 1] (:func:`path_weights`, both ends included), where
    every attributed layer's conditional K/V, at every step, is ``x + alpha (KV_B - x)`` together,
    and each term is the trapezoid mean along that joint path. Summed over all layers, heads and
    steps the terms then approach the effect of patching all attributed layers at once (the path
    integral of the metric's derivative; exact as n grows), not each layer's own patch. Costs n
    target runs and backward passes per chunk instead of one."""
    targets, sources, seeds = list(targets), list(sources), [int(s) for s in seeds]
    n = len(targets)
    if n == 0:
        raise ValueError("no pairs to attribute")
    if not (len(sources) == len(seeds) == n):
        raise ValueError(f"{n} targets, {len(sources)} sources and {len(seeds)} seeds: one of each per pair")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if token_maps is not None and len(token_maps) != n:
        raise ValueError(f"token_maps has {len(token_maps)} rows for {n} pairs")
    if isinstance(metric, GlyphMetric):
        glyph = metric
        metric = lambda latents, rows: glyph.on_images(differentiable_images(model, latents), rows)  # noqa: E731
    alphas, weights = path_weights(path_points)
    chosen = pick_layers(model, layers)
    noise = noise_for(model, seeds)
    cost = Cost()
    chunks: list[list[dict[str, np.ndarray]]] = []  # chunk -> point -> layer module -> (pairs, step, head)
    scores = np.zeros((len(alphas), n), dtype=np.float64)
    passes = 0
    with _Counter(model, cost):
        for a in range(0, n, batch):
            rows = np.arange(a, min(a + batch, n))
            _, cache = cache_text(model, [sources[i] for i in rows], steps=steps, seed=[seeds[i] for i in rows],
                                  guidance_scale=guidance_scale, latents=noise[rows],
                                  layers=[layer.index for layer in chosen])
            maps = None if token_maps is None else np.asarray(token_maps)[rows]
            points = []
            for p, alpha in enumerate(alphas):
                values, score = _one_chunk(model, [targets[i] for i in rows], noise[rows], steps, guidance_scale,
                                           chosen, cache, maps, metric, rows, float(alpha))
                points.append(values)
                scores[p, rows] = score
                passes += 1
            chunks.append(points)
    heads = max(v.shape[2] for v in chunks[0][0].values())
    data = np.full((len(alphas), n, len(chosen), heads, steps), np.nan)
    for c, a in enumerate(range(0, n, batch)):
        for p in range(len(alphas)):
            for j, layer in enumerate(chosen):
                block = chunks[c][p][layer.module]  # (pairs, step, head)
                data[p, a:a + len(block), j, :block.shape[2], :] = block.transpose(0, 2, 1)
    coords = {"pair": np.arange(n), "layer": [layer.index for layer in chosen], "head": np.arange(heads),
              "step": np.arange(steps), "layer_module": ("layer", [layer.module for layer in chosen])}
    path = xr.DataArray(data, dims=("alpha", "pair", "layer", "head", "step"), coords={"alpha": alphas, **coords},
                        name="contribution",
                        attrs={"meaning": "(KV_source - KV) . d metric / d KV at a point alpha of the joint path, "
                                          "summed over tokens, channels and K+V (conditional branch)"})
    # the trapezoid mean; NaN (heads a layer lacks) stays NaN
    contributions = xr.DataArray(np.tensordot(weights, data, axes=(0, 0)), dims=("pair", "layer", "head", "step"),
                                 coords=coords, name="contribution",
                                 attrs={"meaning": "(KV_source - KV_target) . d metric / d KV, at the clean target "
                                                   "run" + ("" if len(alphas) == 1 else
                                                            f" averaged over {len(alphas)} points of the path") +
                                                   ", summed over tokens, channels and K+V (conditional branch)",
                                        "path_points": len(alphas)})
    return Attribution(contributions, scores[0], chosen, cost, passes, path, scores)


def _one_chunk(model, targets, noise, steps, guidance_scale, layers, cache: TextCache, maps, metric, rows, alpha):
    token_index = None if maps is None else torch.as_tensor(np.asarray(maps), dtype=torch.long)
    tap = _GradientTap(cache, token_index, alpha)
    sites = [s for layer in layers for s in (layer.key, layer.value)]
    try:
        with intervene(model, [edit(site, tap) for site in sites]):
            latents = model.generate(targets, steps=steps, latents=noise, guidance_scale=guidance_scale,
                                     output="latents", grad=True)
        with torch.enable_grad():  # callers may sit in no_grad; the metric's graph is needed
            score = metric(latents, rows)
        if score.shape != (len(targets),):
            raise ValueError(f"the metric returned shape {tuple(score.shape)}; expected ({len(targets)},): one "
                             "score per pair")
        if not score.requires_grad:
            raise ValueError("the metric does not depend on the final latents through autograd (it returned a "
                             "tensor without a graph): compute it with torch operations from the latents")
        with torch.enable_grad():
            score.sum().backward()
        out = {}
        for layer in layers:
            per_step = []
            for step in range(steps):
                total = 0.0
                for site in (layer.key, layer.value):
                    key = (site, step)
                    if key not in tap.leaves:
                        raise RuntimeError(f"{site} did not fire at step {step}")
                    grad = tap.leaves[key].grad
                    total = total + (tap.delta[key] * grad).sum((-2, -1)).double()  # (pair, head)
                per_step.append(total.numpy())
            out[layer.module] = np.stack(per_step, 1)  # (pair, step, head)
        return out, score.detach().double().numpy()
    finally:
        tap.release()


# -- estimates from the contributions (pure) --------------------------------------------------------
def _check_start(contributions: xr.DataArray, start: int) -> None:
    steps = contributions.sizes["step"]
    if not 0 <= int(start) < steps:
        raise ValueError(f"start step {start} is beyond the run: the attribution covers steps 0..{steps - 1}")


def _layer_position(contributions: xr.DataArray, layer: int) -> int:
    layers = [int(x) for x in contributions["layer"].values]
    if int(layer) not in layers:
        raise IndexError(f"text layer {layer} is not in this attribution (layers {layers}): it has no text stream "
                         "or was not attributed")
    return layers.index(int(layer))


def heads_of(contributions: xr.DataArray, layer: int) -> int:
    """How many heads ``layer`` has (its non-NaN head slots)."""
    block = contributions.isel(layer=_layer_position(contributions, layer))
    return int((~np.isnan(block.values)).any(axis=(0, 2)).sum())


def layer_effects(contributions: xr.DataArray, start: int = 0) -> xr.DataArray:
    """(pair, layer): the estimated effect of patching each whole layer from ``start`` on."""
    _check_start(contributions, start)
    return contributions.sel(step=slice(int(start), None)).sum(("head", "step"), skipna=True)


def head_effects(contributions: xr.DataArray, layer: int, start: int = 0,
                 heads: Sequence[int] | None = None) -> xr.DataArray:
    """(pair, head): the estimated effect of patching single heads of ``layer`` from ``start`` on."""
    _check_start(contributions, start)
    count = heads_of(contributions, layer)
    heads = list(range(count)) if heads is None else [int(h) for h in heads]
    bad = [h for h in heads if not 0 <= h < count]
    if bad:
        raise IndexError(f"head(s) {bad} out of range: text layer {layer} has {count} heads (0..{count - 1})")
    block = contributions.isel(layer=_layer_position(contributions, layer)).sel(step=slice(int(start), None))
    return block.sel(head=heads).sum("step")


def variant_effect(contributions: xr.DataArray, variant: Variant) -> xr.DataArray:
    """(pair,): the first-order estimate of any sweep variant (layers, heads, start): the sum of
    its heads' and steps' contributions (the estimate is linear)."""
    if variant.heads is not None:
        if len(variant.layers) != 1:
            raise ValueError(f"variant {variant.label}: heads select inside one layer")
        return head_effects(contributions, variant.layers[0], variant.start, variant.heads).sum("head")
    _check_start(contributions, variant.start)
    for layer in variant.layers:
        _layer_position(contributions, layer)
    return layer_effects(contributions, variant.start).sel(layer=list(variant.layers)).sum("layer")


# -- agreement --------------------------------------------------------------------------------------
def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long score vectors (ties: average ranks)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"cannot rank-correlate {x.size} scores with {y.size}")
    if x.size < 3:
        raise ValueError(f"a rank correlation over {x.size} items says nothing: need at least 3")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def top_k(scores, k: int = 3) -> list[int]:
    """Indices of the ``k`` highest scores (ties: the lower index first)."""
    scores = np.asarray(scores, dtype=float).ravel()
    if not 1 <= k <= scores.size:
        raise ValueError(f"top-{k} of {scores.size} items")
    return sorted(range(scores.size), key=lambda i: (-scores[i], i))[:k]


def top_k_overlap(x, y, k: int = 3) -> int:
    """How many of the ``k`` highest of ``x`` are among the ``k`` highest of ``y``."""
    return len(set(top_k(x, k)) & set(top_k(y, k)))


# -- the finite-difference / activation side ---------------------------------------------------------
@dataclass
class _KVBlend:
    """``edit`` function: conditional rows' K/V of the chosen heads become ``x + alpha (source - x)``
    from ``start`` on (alpha = 1: the source's K/V, i.e. activation patching)."""

    values: torch.Tensor  # (pair, step, head, token, channel)
    heads: torch.Tensor  # (head,) bool
    start: int
    alpha: float
    token_map: torch.Tensor | None

    def __call__(self, x, ctx):
        if ctx.step < self.start:
            return x
        rows = [r for r, b in enumerate(ctx.row_branches) if b == "cond"]
        source = self.values[:, ctx.step]
        if self.token_map is not None:
            index = self.token_map[:, None, :, None].expand(-1, source.shape[1], -1, source.shape[3])
            source = torch.gather(source, 2, index)
        out = x.clone()
        current = x[rows]
        blended = current + self.alpha * (source.to(x.dtype) - current)
        out[rows] = torch.where(self.heads[None, :, None, None], blended, current)
        return out


def blended_generate(model, targets: Sequence[str], cache: TextCache, seeds: Sequence[int], *, layers,
                     heads: Sequence[int] | None = None, start: int = 0, alpha: float = 1.0, steps: int,
                     guidance_scale: float | None = None, token_maps: np.ndarray | None = None) -> torch.Tensor:
    """Final latents of the target runs with ``K/V + alpha (K/V_source - K/V)`` in ``layers`` (heads:
    all, or ``heads`` of a single layer) from ``start`` on; ``cache`` holds the sources (one per
    target, same seeds). alpha = 1 is activation patching; small alpha gives the finite-difference
    derivative that attribution patching estimates."""
    seeds = [int(s) for s in seeds]
    cache.check_run(steps, seeds, guidance_scale)
    if not 0 <= start < steps:
        raise ValueError(f"start step {start} is beyond the run: a {steps}-step run has steps 0..{steps - 1}")
    chosen = pick_layers(model, layers)
    if heads is not None and len(chosen) != 1:
        raise ValueError("heads= selects heads inside one layer: pass a single layer with it")
    tokens = None if token_maps is None else torch.as_tensor(np.asarray(token_maps), dtype=torch.long)
    patches = []
    for layer in chosen:
        count = cache.heads(layer)
        mask = torch.ones(count, dtype=torch.bool)
        if heads is not None:
            bad = [h for h in heads if not 0 <= int(h) < count]
            if bad:
                raise IndexError(f"head(s) {bad} out of range: layer {layer.module} has {count} heads (0..{count - 1})")
            mask = torch.zeros(count, dtype=torch.bool)
            mask[list(heads)] = True
        for site in (layer.key, layer.value):
            patches.append(edit(site, _KVBlend(cache.kv[site], mask, int(start), float(alpha), tokens)))
    with intervene(model, patches):
        return model.generate(list(targets), steps=steps, latents=noise_for(model, seeds),
                              guidance_scale=guidance_scale, output="latents")


# -- one glyph pair, checked by finite differences ----------------------------------------------
@dataclass
class GlyphPair:
    """One glyph swap A -> B in one shapes-world cell: the two captions, the noise seed, the
    target -> source token map and the judge's logit-gap metric at the glyph's position."""

    target: str
    source: str
    seeds: list[int]
    maps: np.ndarray
    metric: GlyphMetric


def glyph_pair(model, judge, a: str, b: str, colour: str, position: str, seed: int) -> GlyphPair:
    """The pair that renders glyph ``a`` (target) or ``b`` (source) in ``colour`` at ``position``."""
    target, source = (make_scene([dict(glyph=g, colour=colour, position=position, template=0)], seed=seed)
                      for g in (a, b))
    maps = prompt_token_maps(model, [target.caption], [source.caption], [target.spans[0]], [source.spans[0]])
    return GlyphPair(target.caption, source.caption, [seed], maps, GlyphMetric(judge, [position], [a], [b]))


def blended_metric(model, pair: GlyphPair, cache: TextCache, alpha: float, *, steps: int, **where) -> float:
    """The pair's metric on the image of one blended run (:func:`blended_generate` at ``alpha``;
    ``where``: its ``layers``, ``heads``, ``start``): what a finite difference of the estimate reads."""
    latents = blended_generate(model, [pair.target], cache, pair.seeds, alpha=alpha, steps=steps,
                               token_maps=pair.maps, **where)
    return float(pair.metric.on_images(differentiable_images(model, latents), np.arange(1)))
