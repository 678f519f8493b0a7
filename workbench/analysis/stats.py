"""Intervals for study scores: one bootstrap, used by every study (pure functions over arrays)."""

from __future__ import annotations

import numpy as np


def bootstrap(values: np.ndarray, statistic=np.mean, n: int = 2000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (a numpy reduction taking ``axis``) over the
    entries of ``values``, resampled ``n`` times with a fixed ``seed``."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(values), (n, len(values)))]
    stats = statistic(draws, axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))
