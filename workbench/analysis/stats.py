"""Intervals for study scores (pure functions over arrays): one bootstrap for means and medians of
continuous scores, Wilson score intervals for proportions, and Newcombe's paired interval for the
difference of two proportions measured on the same items.

A percentile bootstrap of a proportion degenerates at 0 or 1: every resample of 44 successes in
44 is 44 in 44, so it reports "1.00 [1.00, 1.00]" although 44/44 is compatible with a true rate
of about 0.92. Score intervals do not collapse there; :func:`interval` picks the right one.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def bootstrap(values: np.ndarray, statistic=np.mean, n: int = 2000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (a numpy reduction taking ``axis``) over the
    entries of ``values``, resampled ``n`` times with a fixed ``seed``. For continuous scores;
    proportions go to :func:`wilson` (see :func:`interval`)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(values), (n, len(values)))]
    stats = statistic(draws, axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(norm.ppf(1 - (1 - level) / 2))


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; never zero-width, also at 0 and 1."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 and 1 the bound on that side is exactly 0 or 1 (rounding can leave 1e-17)
    low = 0.0 if successes == 0 else float(centre - half)
    high = 1.0 if successes == n else float(centre + half)
    return low, high


def is_binary(values: np.ndarray) -> bool:
    values = np.asarray(values, dtype=float)
    return values.size > 0 and bool(np.isin(values, (0.0, 1.0)).all())


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Interval of mean(a) - mean(b) for 0/1 outcomes ``a`` and ``b`` on the same items: Newcombe's
    (1998) method 10, Wilson intervals of each rate combined with the correlation of the pairs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not (is_binary(a) and is_binary(b)):
        raise ValueError(f"need two 0/1 arrays of one shape over the same items, got shapes {a.shape} and {b.shape}")
    n = len(a)
    both, only_a = float(np.sum((a == 1) & (b == 1))), float(np.sum((a == 1) & (b == 0)))
    only_b, neither = float(np.sum((a == 0) & (b == 1))), float(np.sum((a == 0) & (b == 0)))
    p1, p2 = a.mean(), b.mean()
    l1, u1 = wilson(int(a.sum()), n, level)
    l2, u2 = wilson(int(b.sum()), n, level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    if margins == 0:
        phi = 0.0
    else:  # Newcombe's continuity correction of the phi coefficient
        phi = (max(cross - n / 2, 0.0) if cross > 0 else cross) / np.sqrt(margins)
    d = p1 - p2
    below = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    above = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return float(max(d - below, -1.0)), float(min(d + above, 1.0))


def difference(successes_a: int, n_a: int, successes_b: int, n_b: int, level: float = 0.95) -> tuple[float, float]:
    """Interval of the difference of two proportions a - b when only their counts are known
    (Newcombe's square-and-add of the Wilson intervals, method 10 with no pairing). For outcomes on
    the same items, :func:`paired_difference` is narrower when the pairs agree."""
    l1, u1 = wilson(successes_a, n_a, level)
    l2, u2 = wilson(successes_b, n_b, level)
    p1, p2 = successes_a / n_a, successes_b / n_b
    d = p1 - p2
    return float(max(d - np.hypot(p1 - l1, u2 - p2), -1.0)), float(min(d + np.hypot(u1 - p1, p2 - l2), 1.0))


def interval(values: np.ndarray, level: float = 0.95, n_boot: int = 2000) -> tuple[float, float]:
    """The interval of the mean of ``values``: Wilson for 0/1 outcomes, the bootstrap otherwise."""
    values = np.asarray(values, dtype=float)
    if is_binary(values):
        return wilson(int(values.sum()), len(values), level)
    return bootstrap(values, n=n_boot, level=level)
