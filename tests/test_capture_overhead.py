"""benchmarks/capture_overhead.py's per-call measurement: the cheap-model comparison on a 2-layer
model (the same code path as --record), and what its summary, verdict and table say on made-up figures."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "capture_overhead.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="capture_overhead")  # the script's functions, not its main()


def test_per_call_runs_capture_the_same_tensors_and_are_summarised(bench, one_thread):
    measured = bench["measure_per_call"](layers=2, steps=2, repeats=3)
    wb, hand = measured["blocks_workbench"], measured["blocks_handwritten"]
    # 2 SD3 blocks: the first returns text and image, the last (context_pre_only) image only; 2 steps
    assert wb["tensors_per_run"] == hand["tensors_per_run"] == 6
    assert len(wb["cpu_s"]) == len(hand["cpu_s"]) == len(wb["bare_cpu_s"]) == 3
    assert all(t > 0 for t in wb["cpu_s"] + hand["cpu_s"] + wb["bare_cpu_s"])
    summary = bench["summarise_per_call"](measured, bare_run_cpu_s=1.0)
    assert summary["repeats"] == 3 and summary["tensors_per_run"] == 6
    for key in ("workbench_us_per_tensor", "handwritten_us_per_tensor", "difference_us_per_tensor", "implied_gap"):
        median, low, high = summary[key]
        assert low <= median <= high, key


def _made_up(per_tensor_us: dict, n: int = 10, bare: float = 0.05, jitter: float = 1e-6) -> dict:
    """Repeats whose CPU time is the bare run plus ``per_tensor_us`` per tensor, with a small spread."""
    return {name: {"tensors_per_run": n, "bare_cpu_s": [bare] * 20,
                   "cpu_s": [bare + n * us * 1e-6 + jitter * (i % 5 - 2) for i in range(20)]}
            for name, us in per_tensor_us.items()}


def test_summary_subtracts_the_pair_and_scales_to_the_real_run(bench):
    measured = _made_up({"blocks_workbench": 12.0, "blocks_handwritten": 4.0})
    summary = bench["summarise_per_call"](measured, bare_run_cpu_s=2.0)
    assert summary["workbench_us_per_tensor"][0] == pytest.approx(12.0)
    assert summary["handwritten_us_per_tensor"][0] == pytest.approx(4.0)
    assert summary["difference_us_per_tensor"][0] == pytest.approx(8.0)  # paired: the jitter cancels
    assert summary["implied_gap"][0] == pytest.approx(10 * 8e-6 / 2.0)
    with pytest.raises(ValueError, match="must capture the same tensors"):
        bench["summarise_per_call"]({**measured, "blocks_handwritten": _made_up({"h": 4.0}, n=9)["h"]}, 2.0)


def test_verdict_is_met_only_when_the_whole_interval_is_within_the_target(bench):
    verdict = bench["per_call_verdict"]
    assert verdict([0.001, 0.0005, 0.0015], 0.02).startswith("yes")
    assert verdict([0.019, 0.015, 0.025], 0.02).startswith("not resolved")
    assert verdict([0.03, 0.025, 0.035], 0.02).startswith("**no**")


def test_table_shows_the_per_call_rows_beside_the_direct_gap(bench):
    summary = bench["summarise_per_call"](_made_up({"blocks_workbench": 12.0, "blocks_handwritten": 4.0}), 2.0)
    side = {"ratio": 1.01, "cpu_ratios": [1.0, 1.01, 1.02]}
    row = {"width": 512, "steps": 3, "repeats": 3, "workbench": side, "handwritten": side, "gap": 0.0,
           "gap_per_repeat": [-0.01, 0.0, 0.01], "gap_median_per_repeat": 0.0, "gap_quartiles": [-0.01, 0.0, 0.01],
           "per_call": summary}
    table = bench["overhead_table"]({"date": "d", "machine": "m", "model": "big", "per_call_model": "cheap",
                                     "target_gap": 0.02, "rows": [row]})
    assert "| 512, 3 steps | 20 | 10 | +12.0 [" in table and "| +0.1 [+0.1, +0.1] |" in table  # 80 us per run
    assert "| +0.00% [+0.00, +0.00] | +0.0% | yes: the interval is within 2% |" in table
