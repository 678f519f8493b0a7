"""Intervals for study scores (issue 23): proportions never get a zero-width interval at 0 or 1,
paired differences of 0/1 outcomes use the pairing, continuous scores keep the bootstrap."""

import numpy as np
import pytest
from scipy.stats import beta

from workbench.analysis.stats import bootstrap, interval, paired_difference, wilson


def test_wilson_is_not_zero_width_at_0_or_1_and_brackets_the_rate():
    low, high = wilson(44, 44)
    assert high == 1.0 and 0.91 < low < 0.93  # 44 of 44: the "about 0.92"
    assert beta.ppf(0.025, 44, 1) < low  # Wilson sits inside the exact (Clopper-Pearson) bound
    low, high = wilson(0, 44)
    assert low == 0.0 and 0.07 < high < 0.09
    for k in (1, 10, 22, 43):
        low, high = wilson(k, 44)
        assert low < k / 44 < high
    # the percentile bootstrap is what collapsed
    assert bootstrap(np.ones(44)) == (1.0, 1.0)


def test_wilson_matches_its_closed_form():
    # 7 of 20 at 95%: the textbook value (Newcombe 1998, table I) is 0.1812 to 0.5671
    low, high = wilson(7, 20)
    assert low == pytest.approx(0.1812, abs=1e-4) and high == pytest.approx(0.5671, abs=1e-4)


def test_bad_counts_get_a_clear_error():
    with pytest.raises(ValueError, match="successes <= n"):
        wilson(5, 4)
    with pytest.raises(ValueError, match="0/1 arrays"):
        paired_difference(np.array([0, 1, 2]), np.array([0, 1, 1]))


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(0)
    b = (rng.random(100) < 0.5).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:10]] = 1  # a = b plus 10 more successes: strongly correlated pairs
    low, high = paired_difference(a, b)
    assert low < 0.10 < high and low > 0  # the pairing makes +0.10 on 100 items clear of zero
    # ignoring the pairing (phi = 0, Newcombe's unpaired square-and-add) is wider
    l1, u1 = wilson(int(a.sum()), 100)
    l2, u2 = wilson(int(b.sum()), 100)
    unpaired_low = 0.10 - np.hypot(a.mean() - l1, u2 - b.mean())
    assert unpaired_low < low
    assert paired_difference(b, a) == pytest.approx((-high, -low))
    same_low, same_high = paired_difference(a, a)
    assert same_low < 0 < same_high  # no difference observed, but not a zero-width claim


def test_interval_picks_wilson_for_0_1_and_the_bootstrap_otherwise():
    assert interval(np.ones(44)) == wilson(44, 44)
    values = np.linspace(0, 1, 50) ** 2
    assert interval(values) == bootstrap(values)


def test_editing_differences_are_paired_for_rates_and_bootstrapped_for_continuous_scores():
    from workbench.studies.attention.editing import SCORES, paired_differences

    rng = np.random.default_rng(1)
    base = {s: (rng.random(40) < 0.5).astype(float) if s in ("edit_success", "name_right", "colour_right")
            else rng.random(40) for s in SCORES}
    same = {s: v.copy() for s, v in base.items()}
    out = paired_differences({"prompt-swap": base, "same": same}, base)
    assert out["difference"][0] == ("method", "score")
    i = list(SCORES).index("edit_success")
    assert out["difference_low"][1][1, i] < 0 < out["difference_high"][1][1, i]  # Newcombe: not zero-width
    j = list(SCORES).index("target_iou")
    assert out["difference_low"][1][1, j] == out["difference_high"][1][1, j] == 0  # a bootstrap of zeros


def test_unpaired_difference_of_counts_is_the_square_and_add_of_wilson():
    from workbench.analysis.stats import difference

    low, high = difference(99, 100, 100, 100)
    assert low < -0.01 < high and high > 0  # one failure in 100 is no evidence of a loss
    l1, u1 = wilson(99, 100)
    l2, u2 = wilson(100, 100)
    assert low == pytest.approx(-0.01 - np.hypot(0.99 - l1, u2 - 1.0))
