"""benchmarks/real_width.py at tiny sizes: the same code path as the real-width run (side by side with
bare runs, the streamed-memory runs, the generated tables), and its verdicts on made-up figures."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_width.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="real_width")  # the script's functions, not its main()


def test_smoke_run_measures_every_configuration_and_writes_its_tables(bench, tmp_path, one_thread):
    out = tmp_path / "real_width.json"
    saved = bench["run_all"](["sd3-medium"], real=False, device="cpu", threads=1, video_heads=2,
                             flat_geometry="sd3-medium", flat_layers=None, out=out, in_process=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(saved))  # what the doc is written from
    (geometry,) = saved["geometries"]
    assert [r["config"] for r in geometry["rows"]] == list(bench["CONFIGS"])
    for row in geometry["rows"]:
        assert row["instrumented_cpu_s"] > 0 and row["bare_cpu_s"] > 0 and len(row["cpu_ratios"]) == geometry["repeats"]
        assert row["run_peak_mib"] > 0  # Linux: each run's own peak
    assert geometry["captured_mib_per_step"] > 0  # the image->text configuration really captured
    assert [r["steps"] for r in saved["flatness"]] == list(bench["SMOKE_FLAT_STEPS"])
    assert all(r["captured_mib_per_step"] > 0 and r["peak_mib"] > 0 for r in saved["flatness"])  # the store was written
    table = bench["tables"](saved)
    for description in bench["CONFIGS"].values():
        assert f"| {description} |" in table
    assert "Peak memory flat in the number of steps: " in table


def test_verdicts_say_met_or_missed_with_the_number(bench):
    row = {"ratio": 1.149}
    assert bench["image_text_verdict"](row, 1.15).startswith("met: 1.149x")
    assert bench["image_text_verdict"]({"ratio": 1.151}, 1.15).startswith("**missed**: 1.151x")
    flat = [{"steps": 2, "peak_mib": 1000.0, "captured_mib_per_step": 500.0},
            {"steps": 6, "peak_mib": 1100.0, "captured_mib_per_step": 500.0}]
    assert bench["flatness_verdict"](flat).startswith("met: +100 MiB from 2 to 6 steps")
    grown = [flat[0], dict(flat[1], peak_mib=1000.0 + 4 * 500.0)]  # what an unstreamed recording would do
    assert bench["flatness_verdict"](grown).startswith("**missed**: +2000 MiB")
