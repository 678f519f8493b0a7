"""The quality tables of docs/reference_models.md, from the results the quality job wrote (:mod:`.job`,
``quality.json``; no model runs here). "The shipped weights": one row per model, each cell the
test seeds' figures side by side (``seed 0 / seed 1``), and the verdict on the issue-9 targets
(:data:`.protocol.TARGETS`) computed from the same figures, beside round 4's on the same seeds.
The training rounds' tables (validation choices, test figures, held-out families) come from
:mod:`.rounds`.

    python -m workbench.studies.quality.report                # print the tables
    python -m workbench.studies.quality.report --update-doc   # write them into docs/reference_models.md

The shipped weights' results are kept with the candidate rounds' raw output, in
``checkpoints/results/shipped-r7-seed<S>-n200/quality.json`` (:data:`SHIPPED`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..docs import report_main
from .protocol import TARGETS, TEST_SEEDS
from .rounds import (RESULTS, SHIPPED_FILE, held_out_table, results_table, round_4, round_7_table, target_note,
                     validation_table)

#: The quality.json of the shipped weights (round 7) per test seed, as the job wrote them.
SHIPPED = {seed: RESULTS / SHIPPED_FILE.format(seed=seed) for seed in TEST_SEEDS}

#: The doc table's rows, in its order.
MODELS = ("toy-unet", "toy-mmdit")


#: (header, family, rate) per column after the model's; a target's column names the target and is
#: bold-faced. A family the results lack (held out with ``--n-held-out 0``) shows "-".
COLUMNS = (
    ("single: shape+colour" + target_note("single", "shape_and_colour"), "single", "shape_and_colour"),
    ("... at asked position", "single", "shape_and_colour_at_position"),
    ("glyph: right glyph" + target_note("glyph", "glyph"), "glyph", "glyph"),
    ("... at asked position", "glyph", "glyph_at_position"),
    ("two objects: both right at positions" + target_note("two", "both_right_at_positions"), "two",
     "both_right_at_positions"),
    ("objects right at position", "two", "objects_right_at_position"),
    ("held-out single: shape+colour", "single_held_out", "shape_and_colour"),
    ("held-out glyph: right glyph", "glyph_held_out", "glyph"),
)


def table(runs: list[dict], keys=None) -> str:
    """A markdown table of quality results: ``runs`` are the job's results (key -> result), one per
    seed, shown side by side in each cell; ``keys``: the rows (default: the first run's keys)."""
    keys = list(runs[0] if keys is None else keys)
    missing = [f"{key!r} (run {i})" for key in keys for i, run in enumerate(runs) if key not in run]
    if missing:
        raise KeyError(f"no results for {', '.join(missing)}; the runs hold {[sorted(run) for run in runs]}")
    lines = ["| model | " + " | ".join(header for header, _, _ in COLUMNS) + " |",
             "| --- |" + " --- |" * len(COLUMNS)]
    for key in keys:
        cells = []
        for _, family, rate in COLUMNS:
            cell = " / ".join(f"{run[key][family][rate]}%" if family in run[key] else "-" for run in runs)
            cells.append(f"**{cell}**" if (family, rate) in TARGETS else cell)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses(runs: dict[int, dict], keys) -> list[str]:
    """Every (model, seed, target) whose rate is below the target, in words (empty: all met)."""
    return [f"{key} {family} on seed {seed} ({results[key][family][rate]}% < {target:g}%)"
            for key in keys for seed, results in runs.items() for (family, rate), target in TARGETS.items()
            if results[key][family][rate] < target]


def verdict(runs: dict[int, dict], keys) -> str:
    """The bold-faced sentence under the table: all targets met, or which were missed."""
    missed = misses(runs, keys)
    if missed:
        return f"**Targets missed: {'; '.join(missed)}.**"
    words = {2: "both", 3: "all three"}
    targets, models, seeds = (words.get(n, f"all {n}") for n in (len(TARGETS), len(keys), len(runs)))
    return (f"**{targets.capitalize()} targets are met by {models} shipped models on {seeds} test "
            f"seed{'s' if len(runs) > 1 else ''}.**")


def before(runs: dict[int, dict], keys) -> str:
    """The target rates of ``runs`` (round 4's: :func:`.rounds.round_4`), seed by seed, per model."""
    rates = lambda key: ", ".join(" / ".join(f"{results[key][family][rate]}" for results in runs.values())  # noqa: E731
                                  for family, rate in TARGETS)
    return "; ".join(f"{key} {rates(key)}" for key in keys)


def held_out_gap(runs: dict[int, dict], keys) -> str:
    """How far the held-out families score from their trained families: the largest gap, where."""
    gaps = [(abs(results[key][f"{family}_held_out"][rate] - results[key][family][rate]), key, family, seed,
             results[key][f"{family}_held_out"][rate], results[key][family][rate])
            for key in keys for seed, results in runs.items()
            for family, rate in (("single", "shape_and_colour"), ("glyph", "glyph"))]
    gap, key, family, seed, held_out, trained = max(gaps, key=lambda g: g[0])
    return (f"Held-out triples score within {gap:.1f} points of the trained ones (the largest gap: {key} "
            f"{family} on seed {seed}, {held_out}% held out vs {trained}% trained)")


def load(paths: dict[int, Path]) -> dict[int, dict]:
    """seed -> the quality.json at ``paths[seed]``, checked to hold that seed's run of the shipped weights."""
    runs = {}
    for seed, path in paths.items():
        results = json.loads(Path(path).read_text())
        wrong = [f"{key}: seed {r['seed']}, weights {r['weights']!r}" for key, r in results.items()
                 if r["seed"] != seed or r["weights"] != "shipped"]
        if wrong:
            raise ValueError(f"{path} should hold the shipped weights on seed {seed}, but has {'; '.join(wrong)}")
        runs[seed] = results
    return runs


def shipped_block(paths: dict[int, Path] = SHIPPED) -> str:
    """The doc block: the shipped weights' table on the test seeds, the verdict, round 4's target
    rates for comparison and how the held-out families compare with the trained ones."""
    runs = load(paths)
    return (table(list(runs.values()), MODELS) + "\n\n" + verdict(runs, MODELS)
            + f" Before (round 4, the same benchmark and seeds, \"Results\" below): {before(round_4(), MODELS)}. "
            + held_out_gap(runs, MODELS) + ".")


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text: the shipped weights, then the training rounds (:mod:`.rounds`)."""
    doc = "reference_models.md"
    return {(doc, "quality-shipped"): shipped_block(), (doc, "quality-validation-r6"): validation_table("rounds-5-6"),
            (doc, "quality-results-r6"): results_table(), (doc, "quality-held-out-r6"): held_out_table(),
            (doc, "quality-validation-r7"): validation_table("round-7"), (doc, "quality-r7"): round_7_table()}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
