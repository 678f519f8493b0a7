"""Runs: a ``Model`` handle over a diffusers pipeline or a bare denoiser, ``load`` to get one, and
``denoise``, a plain denoiser + scheduler loop.

Whatever runs the model, recording works the same: ``record`` hooks the denoiser instance. What
``Model`` adds is bookkeeping the hooks cannot see: the prompts (for ``sample``/token labels),
the guidance branches in the batch, and the number of steps (to refuse bad step selections and
oversized captures before the run goes far).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .hooks import site_map_for
from .hooks.pipelines import cfg_order, denoiser_of, uses_batched_cfg, vae_decode
from .hooks.schedulers import add_noise


@dataclass
class Model:
    """A denoiser with what it needs to run: ``pipeline`` (may be None), ``scheduler``."""

    denoiser: torch.nn.Module
    pipeline: Any = None
    scheduler: Any = None
    name: str = ""
    info: dict = field(default_factory=dict)
    # Without a pipeline (the reference models), generation runs ``denoise`` with these:
    encode: Callable[[list[str]], dict] | None = None  # prompts -> the denoiser's conditioning kwargs
    decode: Callable[[torch.Tensor], np.ndarray] | None = None  # latents -> images (N, H, W, 3) in [0, 1]
    latent_shape: tuple[int, ...] | None = None  # (channels, height, width) of one latent
    _recorders: list = field(default_factory=list, repr=False)

    @property
    def family(self) -> str:
        return site_map_for(self.denoiser).family

    def sites(self, pattern: str = "*") -> pd.DataFrame:
        return sites(self, pattern)

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        steps: int = 20,
        seed: int = 0,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        **pipeline_kwargs,
    ) -> np.ndarray:
        """Images as float arrays (sample, height, width, rgb) in [0, 1]: through the diffusers
        pipeline if there is one, else through ``denoise`` with ``encode``/``decode``."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.pipeline is None:
            return self._generate_bare(prompts, steps, seed, guidance_scale)
        kwargs = dict(self.info.get("generate_defaults", {}))
        if guidance_scale is None:  # say the pipeline's own default out loud: branches depend on it
            default = inspect.signature(self.pipeline.__call__).parameters.get("guidance_scale")
            guidance_scale = None if default is None else default.default
        if guidance_scale is not None:
            kwargs["guidance_scale"] = guidance_scale
        kwargs.update(pipeline_kwargs)
        if height is not None:
            kwargs["height"] = height
        if width is not None:
            kwargs["width"] = width
        cfg = uses_batched_cfg(self.pipeline, kwargs.get("guidance_scale", 1.0))
        branches = cfg_order(self.pipeline) if cfg else ("cond",)
        for recorder in self._recorders:
            recorder.begin_run(prompts=prompts, branches=branches, expected_steps=steps)
        generator = torch.Generator("cpu").manual_seed(seed)
        prompt_arg = self.info.get("prompt_arg", "prompt")
        if prompt_arg == "class_labels":  # DiT: prompts are class names or ids
            prompt_value = [self.pipeline.get_label_ids([p])[0] if isinstance(p, str) else p for p in prompts]
        else:
            prompt_value = prompts
        result = self.pipeline(
            **{prompt_arg: prompt_value}, num_inference_steps=steps, generator=generator, output_type="np", **kwargs
        )
        return np.clip(np.asarray(result.images, dtype=np.float32), 0.0, 1.0)


    def add_noise(self, clean: torch.Tensor, timestep: float, noise: torch.Tensor) -> torch.Tensor:
        """``clean`` latents noised to ``timestep`` the way this model's scheduler trains."""
        if self.scheduler is None:
            raise ValueError(f"{self.name or 'this model'} has no scheduler to noise with")
        return add_noise(self.scheduler, clean, noise, timestep)

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, timestep: float, conditioning: dict | None = None,
                prompts: list[str] | None = None) -> torch.Tensor:
        """One denoiser call on ``noisy`` at ``timestep`` (a single step: what probes and
        segmentation on real images run). Recording contexts see it as one step."""
        site_map = site_map_for(self.denoiser)
        for recorder in self._recorders:
            recorder.begin_run(prompts=prompts, branches=("cond",), expected_steps=None)
        call = {
            site_map.latent_input.kwarg: noisy,
            site_map.timestep_input.kwarg: torch.full((noisy.shape[0],), float(timestep)),
            **(conditioning or {}),
        }
        return self.denoiser(**call, return_dict=False)[0]

    def decode_latents(self, latents) -> np.ndarray:
        """Latents (sample, ...) as the denoiser sees them -> images (sample, H, W, 3) in [0, 1]."""
        latents = torch.as_tensor(np.asarray(latents))
        if self.decode is not None:
            return np.asarray(self.decode(latents), dtype=np.float32)
        if self.pipeline is not None and getattr(self.pipeline, "vae", None) is not None:
            return vae_decode(self.pipeline, latents)
        raise ValueError(f"{self.name or 'this model'} has no decoder for its latents")

    def _generate_bare(self, prompts: list[str], steps: int, seed: int, guidance_scale: float | None) -> np.ndarray:
        if self.encode is None or self.decode is None or self.latent_shape is None:
            raise ValueError(f"{self.name or 'this model'} has no pipeline and no encode/decode; run it with workbench.denoise(...)")
        scale = self.info.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn((len(prompts), *self.latent_shape), generator=generator)
        negative = self.encode([""] * len(prompts)) if scale > 1.0 else None
        with torch.no_grad():
            latents = denoise(self, latents, steps=steps, conditioning=self.encode(prompts), negative=negative,
                              guidance_scale=scale, prompts=prompts)
            return np.clip(np.asarray(self.decode(latents), dtype=np.float32), 0.0, 1.0)


def sites(model, pattern: str = "*") -> pd.DataFrame:
    """Every site of ``model`` matching ``pattern``: its name, dims (after batch) and meaning."""
    from .capture.engine import unwrap
    from .capture.resolve import resolve

    denoiser = unwrap(model)[0]
    rows = [
        {"site": s.name, "dims": ("sample", "branch", "step") + s.dims, "meaning": s.meaning}
        for s in resolve(denoiser, pattern)
    ]
    return pd.DataFrame(rows).set_index("site")


def load(source, **kwargs) -> Model:
    """A ``Model`` from: a reference model name (``"toy-mmdit"``, ``"toy-unet"``), a tiny random
    family (``"tiny-sd3"``, ``"tiny-flux"``, ``"tiny-sd"``, ``"tiny-pixart"``, ``"tiny-dit"``), a local
    diffusers folder (pipeline or single model; never downloads), a saved reference-model folder
    (it holds ``reference.json``), a pipeline object, or a denoiser module (``scheduler=`` optional)."""
    if isinstance(source, Model):
        return source
    if isinstance(source, torch.nn.Module):
        site_map_for(source)  # fail early on an unsupported architecture
        return Model(denoiser=source, scheduler=kwargs.get("scheduler"), name=type(source).__name__)
    if hasattr(source, "components"):
        return _from_pipeline(source, name=type(source).__name__)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if text.startswith("tiny-"):
            from .models.tiny import example_call_kwargs, tiny_pipeline

            family = text[len("tiny-"):]
            pipe = tiny_pipeline(family, seed=kwargs.get("seed", 0))
            per_run = ("prompt", "class_labels", "num_inference_steps", "generator", "output_type", "guidance_scale",
                       "true_cfg_scale", "negative_prompt")
            defaults = {k: v for k, v in example_call_kwargs(family).items() if k not in per_run}
            return _from_pipeline(pipe, name=text, generate_defaults=defaults)
        if (Path(text) / "reference.json").exists():  # a saved reference model (Components.save_pretrained)
            import json

            from .models.reference import load_reference

            name = json.loads((Path(text) / "reference.json").read_text())["name"]
            model = load_reference(name, folder=text)
            model.name = text
            return model
        if Path(text).exists():
            from .models.local import load_local

            loaded = load_local(text, **kwargs)
            return load(loaded) if not isinstance(loaded, Model) else loaded
        from .models import reference

        if text in reference.NAMES:
            return reference.load_reference(text)
        raise ValueError(
            f"cannot load {text!r}: not a folder on disk, not a reference model ({', '.join(reference.NAMES)}) "
            "and not a tiny family (tiny-sd3, tiny-sd35, tiny-flux, tiny-sd, tiny-pixart, tiny-dit, tiny-unet2d)"
        )
    raise TypeError(f"cannot load a {type(source).__name__}")


def _from_pipeline(pipe, name: str, **info) -> Model:
    pipe.set_progress_bar_config(disable=True)
    denoiser = denoiser_of(pipe)
    site_map_for(denoiser)
    prompt_arg = "class_labels" if type(pipe).__name__ == "DiTPipeline" else "prompt"
    if type(pipe).__name__ == "DDPMPipeline":
        raise ValueError("unconditional pipelines (DDPMPipeline) have no prompts: load the UNet2DModel and use denoise()")
    return Model(denoiser=denoiser, pipeline=pipe, scheduler=pipe.scheduler, name=name, info={"prompt_arg": prompt_arg, **info})


@torch.no_grad()
def denoise(
    model,
    latents: torch.Tensor,
    *,
    steps: int,
    conditioning: dict | None = None,
    negative: dict | None = None,
    guidance_scale: float = 1.0,
    scheduler=None,
    prompts: list[str] | None = None,
) -> torch.Tensor:
    """A plain denoising loop: ``latents`` from the first timestep to the last.

    ``conditioning`` holds the denoiser's extra keyword inputs (e.g. ``encoder_hidden_states``);
    with ``negative`` and ``guidance_scale > 1`` both are batched as [negative, conditioning] and
    combined with classifier-free guidance, as the diffusers pipelines do.
    """
    model = load(model, scheduler=scheduler) if not isinstance(model, Model) else model
    scheduler = scheduler or model.scheduler
    if scheduler is None:
        raise ValueError("denoise needs a scheduler (pass scheduler=...)")
    denoiser, site_map = model.denoiser, site_map_for(model.denoiser)
    cfg = negative is not None and guidance_scale > 1.0
    for recorder in model._recorders:
        recorder.begin_run(prompts=prompts, branches=("uncond", "cond") if cfg else ("cond",), expected_steps=steps)
    conditioning = conditioning or {}
    if cfg:
        conditioning = {k: torch.cat([negative[k], v]) for k, v in conditioning.items()}
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = scheduler.scale_model_input(model_input, t) if hasattr(scheduler, "scale_model_input") else model_input
        call = {
            site_map.latent_input.kwarg: model_input,
            site_map.timestep_input.kwarg: t.expand(model_input.shape[0]),
            **conditioning,
        }
        pred = denoiser(**call, return_dict=False)[0]
        if cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents
