"""How to read the clean-sample estimate x0 off a scheduler step.

DDIM, DDPM and Euler report ``pred_original_sample`` (second element when ``return_dict=False``).
Flow-matching Euler does not, but x_t = (1 - sigma) x0 + sigma * noise and v = noise - x0 give
x0 = x_t - sigma * v, with sigma the one the step just used. Other alpha-schedulers (PNDM,
DPM-Solver) follow from their ``alphas_cumprod`` and prediction type.
"""

from __future__ import annotations

import torch


def is_flow_matching(scheduler) -> bool:
    """Whether ``scheduler`` interpolates noise linearly (rectified flow) rather than by alphas."""
    return type(scheduler).__name__.startswith("FlowMatch")


def x0_from_step(scheduler, output, model_output: torch.Tensor, sample: torch.Tensor, timestep) -> torch.Tensor:
    pred = output[1] if isinstance(output, tuple) and len(output) > 1 else getattr(output, "pred_original_sample", None)
    if pred is not None:
        return pred
    name = type(scheduler).__name__
    if is_flow_matching(scheduler):
        sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device, sample.dtype)
        return sample - sigma * model_output
    alphas = getattr(scheduler, "alphas_cumprod", None)
    kind = getattr(scheduler.config, "prediction_type", None)
    if alphas is not None and kind in ("epsilon", "v_prediction", "sample"):
        a = alphas[int(torch.as_tensor(timestep).flatten()[0])].to(sample.device, sample.dtype)
        if kind == "epsilon":
            return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
        if kind == "v_prediction":
            return a.sqrt() * sample - (1 - a).sqrt() * model_output
        return model_output
    raise ValueError(
        f"{name} does not report pred_original_sample and workbench has no x0 formula for it; "
        "record latent.in and latent.pred instead"
    )


def add_noise(scheduler, clean: torch.Tensor, noise: torch.Tensor, timestep: float) -> torch.Tensor:
    """The noisy sample at ``timestep`` as this scheduler's training defines it: flow matching
    interpolates x_t = (1 - s) x0 + s noise with s = t / num_train_timesteps; alpha schedulers
    (DDPM, DDIM, ...) use their own ``add_noise``."""
    if is_flow_matching(scheduler):
        sigma = float(timestep) / scheduler.config.num_train_timesteps
        return (1.0 - sigma) * clean + sigma * noise
    t = torch.full((clean.shape[0],), int(round(float(timestep))), dtype=torch.long)
    return scheduler.add_noise(clean, noise, t)


def timestep_range(scheduler) -> tuple[int, int]:
    """(first, last) timestep ``scheduler`` was trained on, inclusive: flow matching includes
    t = num_train_timesteps (pure noise); alpha schedulers index 0 .. num_train_timesteps - 1."""
    total = int(getattr(scheduler.config, "num_train_timesteps", 1000))
    return (0, total if is_flow_matching(scheduler) else total - 1)


def resumable(scheduler) -> bool:
    """Whether a run can stop after any step and resume from its latents alone: the scheduler's
    state is a function of the step index (Euler, flow-matching Euler, DDIM), not a history of past
    predictions (multistep solvers keep ``model_outputs``, PNDM keeps ``ets``)."""
    return not any(hasattr(scheduler, history) for history in ("model_outputs", "ets"))


def invertible(scheduler) -> bool:
    """Whether ``workbench.inversion`` can run this scheduler backwards, image -> noise: a
    deterministic flow-matching Euler step (x_next = x + (sigma_next - sigma) v) undone by solving
    for x. Stochastic samplers, alpha schedulers and multistep solvers are refused."""
    if not is_flow_matching(scheduler) or not resumable(scheduler):
        return False
    if getattr(scheduler.config, "stochastic_sampling", False):
        return False
    return type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
