"""benchmarks/capture_targets.py: the "Against the targets" table of docs/benchmarks.md is the one
its --update-doc writes from docs/results/capture_targets.json (no figure typed in), and its
verdicts follow the numbers (made-up measurements)."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(ROOT / "benchmarks" / "capture_targets.py"), run_name="capture_targets")


def test_the_doc_table_is_the_one_written_from_the_results_file(bench):
    block = re.search(r"<!-- generated:capture-targets -->\n(.*?)\n<!-- /generated:capture-targets -->",
                      (ROOT / "docs" / "benchmarks.md").read_text(), re.S).group(1)
    saved = json.loads((ROOT / "docs" / "results" / "capture_targets.json").read_text())
    assert bench["targets_table"](saved).strip() == block


def _run(ratios, bare=3.0, peak=100.0):
    ratio = sorted(ratios)[len(ratios) // 2]
    return {"ratio": ratio, "cpu_ratios": list(ratios), "bare_cpu_s": bare, "instrumented_cpu_s": bare * ratio,
            "extra_peak_mib": peak}


def _saved(nnsight_ratios, nnsight="0.8.1"):
    blocks = {"blocks_workbench": _run([1.03, 1.02, 1.04, 1.03, 1.05]),
              "blocks_handwritten": _run([1.02, 1.02, 1.03, 1.02, 1.04])}
    if nnsight_ratios is not None:
        blocks["blocks_nnsight"] = _run(nnsight_ratios)
    return {"date": "d", "machine": "m", "model": "sd3", "nnsight": nnsight if nnsight_ratios is not None else None,
            "blocks": blocks, "image_text_attention": _run([1.05] * 5, peak=110.0),
            "full_attention_all_layers": _run([1.5] * 5, peak=990.0)}


def test_verdicts_follow_the_numbers(bench):
    table = bench["targets_table"]
    assert "| met |" in table(_saved(None)).split("\n")[4]  # 1.05x <= 1.2x
    assert "**no**: nnsight's CPU time is lower" in table(_saved([0.98, 0.99, 1.00, 0.99, 1.01]))
    assert "met: workbench's CPU time is lower" in table(_saved([1.10, 1.09, 1.12, 1.11, 1.10]))
    assert "**not demonstrated**" in table(_saved([1.02, 1.05, 1.03, 1.01, 1.04]))
    missing = table(_saved(None))
    assert "no results file holds an nnsight run" in missing and "not measured" in missing
    # slices: 0.15 s of capture against 1.5 s, 110 MiB against 990 MiB
    assert "(**10.0x less**)" in missing and "extra peak memory 110 MiB vs 990 MiB (9.0x smaller) | met" in missing
    per_run = _saved(None)
    per_run["image_text_attention"]["run_extra_mib"], per_run["full_attention_all_layers"]["run_extra_mib"] = 100.0, 200.0
    assert "a run's peak memory above its start 100 MiB vs 200 MiB (2.0x smaller) | **not met**" in table(per_run)
