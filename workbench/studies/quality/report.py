"""The quality table of docs/reference_models.md ("The shipped weights"), from the JSON files the
quality job wrote (:mod:`.job`, ``quality.json``; no model runs here): one row per model, each cell
the test seeds' figures side by side (``seed 0 / seed 1``), and the verdict on the issue-9 targets
(:data:`.protocol.TARGETS`) computed from the same figures.

    python -m workbench.studies.quality.report                # print the table and the verdict
    python -m workbench.studies.quality.report --update-doc   # write them into docs/reference_models.md

The shipped weights' results are kept with the candidate rounds' raw output, in
``checkpoints/results/shipped-r7-seed<S>-n200/quality.json`` (:data:`SHIPPED`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..docs import DOCS, write_block
from .protocol import TARGETS, TEST_SEEDS

#: The quality.json of the shipped weights (round 7) per test seed, as the job wrote them.
SHIPPED = {seed: DOCS.parent / "checkpoints" / "results" / f"shipped-r7-seed{seed}-n200" / "quality.json"
           for seed in TEST_SEEDS}

#: The doc table's rows, in its order.
MODELS = ("toy-unet", "toy-mmdit")


def _target(family: str, rate: str) -> str:
    return f" (>= {TARGETS[(family, rate)]:g}%)"


#: (header, family, rate) per column after the model's; a target's column names the target and is
#: bold-faced. A family the results lack (held out with ``--n-held-out 0``) shows "-".
COLUMNS = (
    ("single: shape+colour" + _target("single", "shape_and_colour"), "single", "shape_and_colour"),
    ("... at asked position", "single", "shape_and_colour_at_position"),
    ("glyph: right glyph" + _target("glyph", "glyph"), "glyph", "glyph"),
    ("... at asked position", "glyph", "glyph_at_position"),
    ("two objects: both right at positions" + _target("two", "both_right_at_positions"), "two",
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
    """The doc block: the shipped weights' table on the test seeds, then the verdict."""
    runs = load(paths)
    return table(list(runs.values()), MODELS) + "\n\n" + verdict(runs, MODELS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-doc", action="store_true", help="write the table into docs/reference_models.md")
    args = parser.parse_args(argv)
    if args.update_doc:
        write_block("reference_models.md", "quality-shipped", shipped_block())
        return
    print(shipped_block())


if __name__ == "__main__":
    main()
