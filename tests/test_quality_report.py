"""The quality study's report (docs/reference_models.md, "The shipped weights"): the verdict on the
targets follows the saved quality.json files (a rate below its target is reported missed); no
model runs here. That the doc block is what the report writes is checked in
tests/test_study_reports.py."""

from __future__ import annotations

import copy
import json

import pytest

from workbench.studies.quality import report


def test_a_rate_below_its_target_is_reported_missed_and_one_at_it_met(tmp_path):
    runs = report.load(report.SHIPPED)
    low = copy.deepcopy(runs)
    low[1]["toy-mmdit"]["glyph"]["glyph"] = 89.9
    low[0]["toy-unet"]["two"]["both_right_at_positions"] = 60.0  # at the target: met
    assert report.verdict(low, report.MODELS) == "**Targets missed: toy-mmdit glyph on seed 1 (89.9% < 90%).**"
    low[0]["toy-unet"]["single"]["shape_and_colour"] = 96.9
    assert report.misses(low, report.MODELS) == ["toy-unet single on seed 0 (96.9% < 97%)",
                                                 "toy-mmdit glyph on seed 1 (89.9% < 90%)"]
    paths = {}
    for seed, results in low.items():
        paths[seed] = tmp_path / f"seed{seed}.json"
        paths[seed].write_text(json.dumps(results))
    block = report.shipped_block(paths)
    assert "| toy-mmdit | **100.0% / 100.0%** | 100.0% / 100.0% | **96.5% / 89.9%** |" in block
    assert ("\n**Targets missed: toy-unet single on seed 0 (96.9% < 97%); "
            "toy-mmdit glyph on seed 1 (89.9% < 90%).** Before (round 4" in block)
    # the held-out gap follows the lowered figure: 94.5% held out vs 89.9% trained, 4.6 points
    assert block.endswith("within 4.6 points of the trained ones (the largest gap: toy-mmdit glyph on seed 1, "
                          "94.5% held out vs 89.9% trained).")


def test_results_of_another_seed_or_of_candidate_weights_are_refused(tmp_path):
    runs = report.load(report.SHIPPED)
    (tmp_path / "swapped.json").write_text(json.dumps(runs[1]))
    with pytest.raises(ValueError, match="shipped weights on seed 0, but has toy-mmdit: seed 1"):
        report.load({0: tmp_path / "swapped.json"})
    with pytest.raises(KeyError, match="no results for 'toy-sd'"):
        report.table(list(runs.values()), ["toy-sd"])


def test_the_row_chosen_on_validation_is_the_best_mean_and_moves_with_it(tmp_path, monkeypatch):
    from workbench.studies.quality import rounds

    rows = rounds.VALIDATION["rounds-5-6"]
    assert rounds.chosen(rows) == {"toy-unet": "round 6", "toy-mmdit": "round 6"}
    for file in {file for _, _, file, _ in rows}:
        (tmp_path / file).write_text((rounds.RESULTS / file).read_text())
    monkeypatch.setattr(rounds, "RESULTS", tmp_path)
    selection = json.loads((tmp_path / "selection-toy-unet.json").read_text())
    selection["results"][rounds.R5U]["two"]["both_right_at_positions"] = 40.0  # round 5's mean: 79.3 > 74.7
    (tmp_path / "selection-toy-unet.json").write_text(json.dumps(selection))
    assert rounds.chosen(rows)["toy-unet"] == "round 5"
    table = rounds.validation_table("rounds-5-6")
    assert "| toy-unet **round 5** | 100% | 98% | 40% | **79.3** (chosen) |" in table
    assert "| toy-unet round 6 | 100% | 100% | 24% | 74.7 |" in table


def test_a_run_log_reads_as_its_json_would():
    """toy-mmdit's round-7 test runs left logs; their weights were shipped unchanged, so the logs'
    figures are the shipped run's."""
    from workbench.studies.quality import rounds

    for seed in (0, 1):
        logged = rounds.saved(f"mmdit-r7-seed{seed}-n200.log", rounds.R7M, seed)
        shipped = rounds.saved(rounds.SHIPPED_FILE.format(seed=seed), "toy-mmdit", seed)
        for family in ("single", "glyph", "two"):
            assert {k: v for k, v in logged[family].items() if k != "seconds"} == \
                   {k: v for k, v in shipped[family].items() if k != "seconds"}
    with pytest.raises(ValueError, match="no per-family lines of 'toy-mmdit \\[/tmp/r7/toy-mmdit\\]' for seed 1"):
        rounds.saved("mmdit-r7-seed0-n200.log", rounds.R7M, 1)
    with pytest.raises(ValueError, match="is of seed 0, not 1"):
        rounds.saved("shipped-seed0.json", "toy-unet", 1)
