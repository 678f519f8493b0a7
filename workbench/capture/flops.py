"""FLOPs per denoising step of any run, counted by ``torch.utils.flop_counter``, so caching schemes
(``reuse``, ``deepcache``, ``tgate``) are compared by the work they really skip, beside their
measured speed-ups. The counter counts the matrix products and convolutions that ran (a multiply-add
is two FLOPs); elementwise work is not counted."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..sitemap import kwarg_or_arg
from .resolve import as_model


def flops_per_step(model, run: Callable[[], Any]) -> list[int]:
    """FLOPs of each step of ``run()`` (a callable that runs ``model`` once, inside any caching
    context): the counter runs around the whole call, and a hook pair on the denoiser cuts the
    count per denoiser call; calls that share a timestep (guidance as separate calls) are one step.

    >>> with wb.tgate(model, gate_step=5):
    ...     per_step = flops_per_step(model, lambda: model.generate(prompts, steps=20))
    """
    model = as_model(model)
    denoiser, timestep_input = model.denoiser, model.site_map.timestep_input
    steps: list[int] = []
    state: dict[str, Any] = {"t": None, "start": 0}
    counter = FlopCounterMode(display=False)

    def before(module, args, kwargs):
        state["start"] = counter.get_total_flops()
        t = float(torch.as_tensor(kwarg_or_arg(args, kwargs, timestep_input)).flatten()[0])
        if t != state["t"]:
            steps.append(0)
            state["t"] = t

    def after(module, args, kwargs, output):
        steps[-1] += counter.get_total_flops() - state["start"]

    handles = [denoiser.register_forward_pre_hook(before, with_kwargs=True),
               denoiser.register_forward_hook(after, with_kwargs=True)]
    try:
        with counter:
            run()
    finally:
        for handle in handles:
            handle.remove()
    if not steps:
        raise ValueError("the run never called the model's denoiser: nothing to count")
    return steps
