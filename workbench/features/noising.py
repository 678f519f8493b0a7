"""Deterministic noise for the forward process, and the timesteps it may run at.

Noise is a pure function of ``(seed, image index, timestep, draw)``: each image gets its own
generator, seeded from those four numbers through numpy's ``SeedSequence`` (which mixes them so
that neighbouring keys give unrelated streams). So any chunk of a job can be recomputed
identically, in any order, by any worker, whatever the batch it lands in.

The noising itself is ``Model.add_noise`` (``workbench.schedulers.add_noise``), the project's
one definition of each scheduler's training convention: flow matching ``x_t = (1 - s) x0 + s
noise`` with ``t = s * 1000``; DDPM-style schedulers ``scheduler.add_noise``.

Example:
    >>> a = noise_for(seed=0, index=5, timestep=150, draw=0, shape=(3, 4, 4))
    >>> b = noise_for(seed=0, index=5, timestep=150, draw=0, shape=(3, 4, 4))
    >>> bool((a == b).all()), bool((a == noise_for(0, 6, 150, 0, (3, 4, 4))).all())
    (True, False)
"""

from __future__ import annotations

import numpy as np
import torch

from ..schedulers import timestep_range


def noise_for(seed: int, index: int, timestep: int, draw: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise of ``shape`` for one (image, timestep, draw) of a job seeded ``seed``."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index), int(timestep), int(draw))).generate_state(2)
    generator = torch.Generator("cpu").manual_seed((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))
    return torch.randn(shape, generator=generator)


def batch_noise(seed: int, indices, timestep: int, draws: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for ``draws`` x ``len(indices)`` rows, draw-major: row ``d * n + i`` is draw d of image i."""
    return torch.stack([noise_for(seed, i, timestep, d, shape) for d in range(draws) for i in indices])


def check_timesteps(scheduler, timesteps: list[int]) -> None:
    """Refuse timesteps outside the scheduler's training range, naming it."""
    _, top = timestep_range(scheduler)  # flow matching: t = 1000 is pure noise and valid
    bad = [t for t in timesteps if not 0 <= t <= top]
    if bad:
        raise ValueError(f"timesteps {bad} are outside 0..{top}, the range {type(scheduler).__name__} was trained on")
