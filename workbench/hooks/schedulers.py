"""How to read the clean-sample estimate x0 off a scheduler step.

Most diffusers schedulers return ``pred_original_sample``; flow-matching Euler does not, but its
x0 follows from the velocity: x_t = (1 - sigma) x0 + sigma * noise and v = noise - x0 give
x0 = x_t - sigma * v, with sigma the one the step just used.
"""

from __future__ import annotations

import torch


def x0_from_step(scheduler, output, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    pred = getattr(output, "pred_original_sample", None)
    if pred is not None:
        return pred
    name = type(scheduler).__name__
    if name.startswith("FlowMatch"):
        sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device, sample.dtype)
        return sample - sigma * model_output
    raise ValueError(
        f"{name} does not report pred_original_sample and workbench has no x0 formula for it; "
        "record latent.in and latent.pred instead"
    )
