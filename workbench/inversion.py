"""Scheduler inversion: a clean latent (a real image) run backwards to the noise it came from.

A flow-matching Euler step moves x_i to x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, t_i).
Inverting it means solving x_i = x_{i+1} - (sigma_{i+1} - sigma_i) v(x_i, t_i) for x_i, from the
clean latent (sigma = 0) back to pure noise (sigma = 1). The velocity at the unknown x_i is first
taken at x_{i+1} (the usual DDIM-inversion approximation) and then refined by ``refine``
fixed-point iterations, each one more denoiser call. Running the forward schedule from the
inverted noise with the same prompts and guidance then reconstructs the image; how well is what
``reconstruction PSNR`` measures.

Only schedulers ``workbench.schedulers.invertible`` accepts are inverted; others get a clear error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .model import Model
from .schedulers import invertible


def check_invertible(model: Model) -> None:
    """A clear error unless ``model``'s scheduler can be inverted."""
    scheduler = model.scheduler
    if scheduler is None or not invertible(scheduler):
        name = "no scheduler" if scheduler is None else type(scheduler).__name__
        raise ValueError(f"{model.name or 'this model'} runs {name}, which workbench cannot invert: inversion (and "
                         "editing a real image) needs a deterministic FlowMatchEulerDiscreteScheduler")


@torch.no_grad()
def invert(model: Model, latents: torch.Tensor, prompts: Sequence[str], steps: int, guidance_scale: float = 1.0,
           refine: int = 0) -> torch.Tensor:
    """The latents entering every step of a ``steps``-step run that would end at ``latents``:
    tensor (steps + 1, sample, ...) whose index k is what ``model.generate(..., latents=z,
    start_step=k)`` continues from; index 0 is the inverted noise, index ``steps`` the input."""
    check_invertible(model)
    prompts = list(prompts)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if latents.shape[0] != len(prompts):
        raise ValueError(f"{latents.shape[0]} latents but {len(prompts)} prompts")
    scheduler = model.scheduler
    scheduler.set_timesteps(steps)
    sigmas, timesteps = scheduler.sigmas.float(), scheduler.timesteps
    conditioning = model.encode(prompts)
    negative = model.encode([""] * len(prompts)) if guidance_scale > 1.0 else None

    def velocity(x, t):
        v = model.predict(x, float(t), conditioning, prompts=prompts)
        if negative is not None:
            v_neg = model.predict(x, float(t), negative, prompts=prompts)
            v = v_neg + guidance_scale * (v - v_neg)
        return v

    x = latents.float().clone()
    out = [x]
    for i in reversed(range(steps)):
        delta = sigmas[i + 1] - sigmas[i]  # negative: sigma falls along the forward run
        guess = x
        for _ in range(refine + 1):
            guess = x - delta * velocity(guess, timesteps[i])
        x = guess
        out.append(x)
    return torch.stack(out[::-1])


def invert_images(model: Model, images: np.ndarray, prompts: Sequence[str], steps: int, guidance_scale: float = 1.0,
                  refine: int = 0) -> torch.Tensor:
    """``invert`` for uint8 images (sample, H, W, 3), encoded by ``model.encode_images``."""
    return invert(model, model.encode_images(images), prompts, steps, guidance_scale, refine)
