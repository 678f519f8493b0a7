"""The SVD study's runs: the model produces trajectories of latents, continues a run from an
edited latent at step k (through its public run engine, ``Model.generate`` with ``stop_step`` /
``start_step``), serves a live edit session, and patches text K/V as the study's baseline. The math
over the latents is :mod:`workbench.analysis.svd`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import xarray as xr

from ...analysis.svd import (LATENT_DIMS, as_latents, at_step, edit_latents, latent_svd, max_rank, scale_values,
                             subspace_distances)


# -- the run engine -------------------------------------------------------------------------------
def initial_noise(model, n: int, seed: int = 0) -> torch.Tensor:
    """The noise a run of ``n`` prompts with ``seed`` starts from (what ``Model.generate(seed=)`` and
    :func:`trajectory` draw): one generator for the batch, so sample i of a batch of n is sample i
    of any larger batch with the same seed."""
    if model.latent_shape is None:
        raise ValueError(f"{model.name or 'this model'} runs through a pipeline, which cannot start from given latents")
    return torch.randn((n, *model.latent_shape), generator=torch.Generator("cpu").manual_seed(seed))


def trajectory(model, prompts: Sequence[str], steps: int, seed: int = 0, guidance_scale: float | None = None,
               latents=None) -> xr.DataArray:
    """The latents entering every step of a run, and the final latents: dims (sample, step,
    channel, y, x) with steps 0 .. ``steps`` (the last is the run's output), computed one step at
    a time through ``model.generate(stop_step=...)`` (bit for bit the full run)."""
    prompts = list(prompts)
    z = initial_noise(model, len(prompts), seed) if latents is None else torch.as_tensor(np.asarray(latents))
    frames = [z.clone()]
    for k in range(steps):
        z = model.generate(prompts, steps=steps, seed=seed, guidance_scale=guidance_scale, latents=z, start_step=k,
                           stop_step=k + 1, output="latents")
        frames.append(z.clone())
    values = torch.stack(frames, 1).numpy()
    return xr.DataArray(values, dims=("sample", "step", *LATENT_DIMS),
                        coords={"step": np.arange(steps + 1), "prompt": ("sample", prompts)}, name="latent.in")


def continue_from(model, prompts: Sequence[str], latents, step: int, steps: int, guidance_scale: float | None = None,
                  output: str = "images"):
    """Continue a ``steps``-step run from ``latents`` entering ``step`` (e.g. an edited latent):
    images (or final latents with ``output='latents'``). Latents from ``trajectory`` at ``step``
    continue exactly as the original run."""
    prompts = list(prompts)
    if not isinstance(step, (int, np.integer)) or not 0 <= step < steps:
        raise ValueError(f"step {step!r} is out of range: a {steps}-step run continues from a step in 0..{steps - 1}")
    array = as_latents(latents)
    expected = (len(prompts), *model.latent_shape)
    if tuple(array.shape) != expected:
        raise ValueError(f"latents have shape {tuple(array.shape)}; {len(prompts)} prompts for {model.name or 'this model'} "
                         f"need {expected}")
    z = torch.from_numpy(np.ascontiguousarray(array.values))
    return model.generate(prompts, steps=steps, latents=z, start_step=int(step), guidance_scale=guidance_scale,
                          output=output)


class EditSession:
    """One prompt's run, ready to be edited at any step by gains on its top singular values
    (per channel view): what the singular-value explorer (``workbench.widgets.svd``) shows.

    ``pictures(step, gains)`` gives the denoiser's clean-image estimate of the edited latent at
    that step (``latent.x0``, one denoiser call, recorded) and the final image of the run
    continued from it; ``distances(k)`` the step x step Grassmann distances of the run."""

    def __init__(self, model, prompt: str, steps: int = 10, seed: int = 0, guidance_scale: float | None = None):
        self.model, self.prompt, self.steps, self.guidance_scale = model, prompt, steps, guidance_scale
        self.latents = trajectory(model, [prompt], steps, seed=seed, guidance_scale=guidance_scale)
        self.factors = latent_svd(self.latents.isel(sample=0), "per_channel")  # dims step, channel, ...
        self.max_rank = max_rank(model.latent_shape, "per_channel")

    def edited_latent(self, step: int, gains) -> xr.DataArray:
        """The latent entering ``step`` with its top ``len(gains)`` singular values scaled."""
        return edit_latents(at_step(self.latents, step), lambda f: scale_values(f, list(gains)), "per_channel")

    def pictures(self, step: int, gains) -> tuple[np.ndarray, np.ndarray]:
        """(x0 estimate at ``step``, final image), each (H, W, 3) in [0, 1]."""
        from ...capture import record

        if not 0 <= step < self.steps:
            raise ValueError(f"step {step!r} is out of range: a {self.steps}-step run has steps 0..{self.steps - 1}")
        z = self.edited_latent(step, gains)
        with record(self.model, ["latent.x0"]) as rec:
            self.model.generate([self.prompt], steps=self.steps, latents=torch.from_numpy(np.ascontiguousarray(z.values)),
                                start_step=step, stop_step=step + 1, guidance_scale=self.guidance_scale,
                                output="latents")
        x0 = rec["latent.x0"].isel(sample=0, branch=-1, step=-1).values
        preview = np.clip(self.model.decode_latents(x0[None]), 0.0, 1.0)[0]
        final = continue_from(self.model, [self.prompt], z, step, self.steps, guidance_scale=self.guidance_scale)[0]
        return preview, final

    def top_values(self, step: int, n: int) -> np.ndarray:
        """The top ``n`` singular values at ``step``, averaged over channels."""
        return self.factors["S"].sel(step=step).isel(component=slice(0, n)).mean("channel").values

    def distances(self, k: int) -> xr.DataArray:
        return subspace_distances(self.factors, k)


# -- baseline: text K/V patching ------------------------------------------------------------------
def text_kv_edits(model, sources: Sequence[str], attributes: Sequence[str], start_steps: Sequence[int], steps: int,
                  latents, *, source_spans=None, attribute_spans=None, guidance_scale: float | None = None,
                  batch: int = 25) -> dict:
    """The text K/V patching baseline of the editing comparison: each source prompt runs from its
    noise (``latents``, one per sample) and, from each of ``start_steps`` on, the keys and values
    that the *attribute* prompt's text produces (cached from its own run from the same noise) replace
    the source's at **every** text layer, all heads (:mod:`workbench.studies.localization.patching`).

    Tokens are aligned by the captions' role spans (``source_spans`` / ``attribute_spans``, one
    ``Scene.spans`` dict per sample; None: prompts of equal token count, position by position); a
    pair that cannot be aligned raises the library's ``ValueError``. The steps before a start step
    are the unpatched source run, so every start step continues the source's recorded trajectory
    from there (bit for bit the full patched run). Returns ``{"source": images, s: images, ...}``
    with images (sample, y, x, rgb) in [0, 1]."""
    from ...capture import intervene
    from ..localization.patching import PatchPlan, cache_text, pick_layers, prompt_token_maps, text_patches

    sources, attributes = list(sources), list(attributes)
    if len(sources) != len(attributes):
        raise ValueError(f"{len(sources)} source prompts but {len(attributes)} attribute prompts: one per pair")
    starts = [int(s) for s in start_steps]
    bad = [s for s in starts if not 0 <= s < steps]
    if bad or not starts:
        raise ValueError(f"start step(s) {bad or starts} are out of range: a {steps}-step run patches from a step in 0..{steps - 1}")
    noise = torch.as_tensor(np.asarray(latents))
    expected = (len(sources), *model.latent_shape)
    if tuple(noise.shape) != expected:
        raise ValueError(f"latents have shape {tuple(noise.shape)}; {len(sources)} pairs for {model.name or 'this model'} "
                         f"need {expected}")
    tokens = prompt_token_maps(model, sources, attributes, source_spans, attribute_spans)  # clear error if impossible
    layers = pick_layers(model, None)
    out: dict = {"source": [], **{s: [] for s in starts}}
    for lo in range(0, len(sources), batch):
        part = slice(lo, lo + batch)
        src, att, z = sources[part], attributes[part], noise[part]
        n = len(src)
        labels = list(range(lo, lo + n))  # the noise is given per sample; the labels only tie the runs together
        _, cache = cache_text(model, att, steps=steps, seed=labels, guidance_scale=guidance_scale, latents=z)
        cache.check_run(steps, labels, guidance_scale)
        run = trajectory(model, src, steps, guidance_scale=guidance_scale, latents=z).values
        out["source"].append(np.clip(model.decode_latents(run[:, -1]), 0.0, 1.0).astype(np.float32))
        for s in starts:
            plan = PatchPlan(source=np.arange(n), heads={layer.module: np.ones((n, cache.heads(layer)), dtype=bool)
                                                         for layer in layers},
                             start=np.full(n, s), tokens=None if tokens is None else tokens[part])
            with intervene(model, text_patches(model, cache, plan, steps)):
                images = model.generate(src, steps=steps, latents=torch.from_numpy(np.ascontiguousarray(run[:, s])),
                                        start_step=s, guidance_scale=guidance_scale)
            out[s].append(np.asarray(images, dtype=np.float32))
    return {key: np.concatenate(value) for key, value in out.items()}
