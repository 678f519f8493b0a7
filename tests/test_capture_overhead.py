"""benchmarks/capture_overhead.py's comparison of workbench.record with a hand-written hook loop:
the rotating rounds on a 2-layer model (the same code path as --record), and what its summaries,
verdict and tables say on made-up figures."""

from __future__ import annotations

import itertools
import runpy
from pathlib import Path

import pytest

from workbench.studies.timing import counterbalanced

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "capture_overhead.py"
NAMES = ("blocks_workbench", "blocks_handwritten", "bare")


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="capture_overhead")  # the script's functions, not its main()


def test_rounds_rotate_through_every_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    cpu = counterbalanced(runs, rounds=12, warm_up=False)
    assert {name: len(values) for name, values in cpu.items()} == {"a": 4 * 3, "b": 12, "c": 12}
    orders = [tuple(calls[3 * i: 3 * i + 3]) for i in range(12)]
    assert sorted(set(orders)) == sorted(itertools.permutations("abc"))  # every order, each twice
    assert all(orders.count(o) == 2 for o in set(orders))
    with pytest.raises(ValueError, match="at least 1"):
        counterbalanced(runs, rounds=0)


def test_the_pair_captures_the_same_tensors_and_is_summarised(bench, one_thread):
    measured = bench["measure_pair"](layers=2, steps=2, rounds=3, cheap=True)
    # 2 SD3 blocks: the first returns text and image, the last (context_pre_only) image only; 2 steps
    assert measured["tensors_per_run"] == 6
    assert sorted(measured["cpu_s"]) == sorted(NAMES)
    assert all(len(v) == 3 and all(t > 0 for t in v) for v in measured["cpu_s"].values())
    for summary in (bench["summarise_per_call"](measured, bare_run_cpu_s=1.0), bench["summarise_pair"](measured)):
        for key in ("workbench_us_per_tensor", "difference_us_per_tensor", "implied_gap", "gap"):
            if key in summary:
                median, low, high = summary[key]
                assert low <= median <= high, key


def _made_up(per_tensor_us: dict, n: int = 10, bare: float = 0.05, drift: float = 1e-3, rounds: int = 20) -> dict:
    """Rounds whose CPU time is the bare run plus ``per_tensor_us`` per tensor, all three slowed
    alike by a drift that changes from round to round (a machine's speed)."""
    slow = [drift * (i % 7 - 3) for i in range(rounds)]
    cpu = {name: [bare + n * us * 1e-6 + s for s in slow] for name, us in per_tensor_us.items()}
    cpu["bare"] = [bare + s for s in slow]
    return {"tensors_per_run": n, "cpu_s": cpu}


def test_per_call_summary_pairs_each_round_and_scales_to_the_real_run(bench):
    summary = bench["summarise_per_call"](_made_up({"blocks_workbench": 12.0, "blocks_handwritten": 4.0}), 2.0)
    assert summary["workbench_us_per_tensor"][0] == pytest.approx(12.0)  # the drift cancels within a round
    assert summary["handwritten_us_per_tensor"][0] == pytest.approx(4.0)
    assert summary["difference_us_per_tensor"] == pytest.approx([8.0, 8.0, 8.0])
    assert summary["implied_gap"][0] == pytest.approx(10 * 8e-6 / 2.0)


def test_pair_summary_divides_each_rounds_difference_by_the_bare_median(bench):
    summary = bench["summarise_pair"](_made_up({"blocks_workbench": 300.0, "blocks_handwritten": 100.0}, bare=0.1))
    assert summary["gap"] == pytest.approx([0.02, 0.02, 0.02])  # 10 x 200 us over 0.1 s, the drift cancelling
    assert summary["workbench_ratio"] == pytest.approx(1.03) and summary["handwritten_ratio"] == pytest.approx(1.01)
    assert summary["rounds"] == 20 and summary["gap_per_round"] == sorted(summary["gap_per_round"])


def test_verdict_is_met_only_when_the_whole_interval_is_within_the_target(bench):
    verdict = bench["interval_verdict"]
    assert verdict([0.001, 0.0005, 0.0015], 0.02).startswith("yes")
    assert verdict([0.019, 0.015, 0.025], 0.02).startswith("not resolved")
    assert verdict([0.03, 0.025, 0.035], 0.02).startswith("**no**")
    assert verdict([0.02, 0.01, 0.02], 0.02).startswith("yes")  # on the target is within it


def test_tables_show_the_end_to_end_gap_and_the_per_call_rows(bench):
    measured = _made_up({"blocks_workbench": 12.0, "blocks_handwritten": 4.0})
    row = {"width": 512, "steps": 3, **bench["summarise_pair"](measured)}
    row["per_call"] = bench["summarise_per_call"](measured, 2.0)
    table = bench["overhead_table"]({"date": "d", "machine": "m", "model": "big", "per_call_model": "cheap",
                                     "target_gap": 0.02, "rows": [row]})
    assert "| 512, 3 steps | 20 | 1.002x | 1.001x | +0.16% [+0.16, +0.16] |" in table  # 80 us over 0.05 s
    assert "| 512, 3 steps | 20 | 10 | +12.0 [" in table and "| +0.1 [+0.1, +0.1] |" in table  # 80 us per run
    assert "| +0.00% [+0.00, +0.00] | yes: the interval is within 2% |" in table
