"""The training rounds' quality tables of docs/reference_models.md (rounds 4-7: the choice on
validation, the test figures, the held-out families), from the quality job's raw output kept in
``checkpoints/results/`` (:data:`RESULTS`). Written into the doc by :mod:`.report`; no model runs here.

Each row names the file and the result key the job wrote it under (the shipped weights of the
time are keyed by the model's name, candidates by ``name [folder]``). A file is a ``quality.json``,
a ``selection-<model>.json`` of :mod:`.select_weights` (its ``results``), or the log of a run
stopped before it wrote its JSON: the lines ``<key> <family>: {...}`` the job prints per family.
What the tables *derive* is derived here: the validation mean is :func:`.protocol.validation_score`,
and the row marked chosen is each model's best mean on validation, as ``select_weights`` chooses.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ..docs import DOCS
from .protocol import TARGETS, VALIDATION_SEED, validation_score

RESULTS = DOCS.parent / "checkpoints" / "results"  # the benchmark's raw output, kept with the candidate rounds
UNET, MMDIT = "toy-unet", "toy-mmdit"
R5U, R6U, R7U = (f"{UNET} [/tmp/r{r}/{UNET}]" for r in (5, 6, 7))
R5M, R6M, R7M = (f"{MMDIT} [/tmp/r{r}/{MMDIT}]" for r in (5, 6, 7))
R4U, R4M = (f"{m} [workbench/reference/{m}]" for m in (UNET, MMDIT))  # round 4, scored as a candidate folder
C6U, C6M = (f"{m} [checkpoints/round6/{m}]" for m in (UNET, MMDIT))  # round 6, as kept in checkpoints/
S7U, S7M = f"{UNET} [/tmp/r7/{UNET}/checkpoints/step-002000]", f"{MMDIT} [/tmp/r7/{MMDIT}/checkpoints/step-007000]"


def saved(file: str, key: str, seed: int) -> dict:
    """The result ``key`` of ``RESULTS/file`` (a JSON or a job log), checked to be of ``seed``."""
    path = RESULTS / file
    if path.suffix == ".log":
        result = {}
        for line in path.read_text().splitlines():
            head, _, value = line.partition(": {")
            if head.startswith(f"{key} ") and value:
                result[head[len(key) + 1:]] = ast.literal_eval("{" + value)
        result["seed"] = seed  # a log does not name its seed: the file name does (``-seed<S>-``)
        if f"-seed{seed}-" not in path.name or not result.keys() - {"seed"}:
            raise ValueError(f"{path} holds no per-family lines of {key!r} for seed {seed}")
    else:
        results = json.loads(path.read_text())
        results = results.get("results", results)
        if key not in results:
            raise KeyError(f"{path} has no result {key!r}; it has {sorted(results)}")
        result = results[key]
    if result["seed"] != seed:
        raise ValueError(f"{path} [{key!r}] is of seed {result['seed']}, not {seed}")
    return result


def target_note(family: str, rate: str) -> str:
    """A target's note in a column header: `` (>= 97%)``."""
    return f" (>= {TARGETS[(family, rate)]:g}%)"


def _rate(result: dict, family: str, rate: str) -> str:
    return f"{result[family][rate]}%"


# -- choosing on validation ------------------------------------------------------------------------
#: (model, label, file, key) per row of the validation tables of rounds 5-6 and of round 7.
VALIDATION = {
    "rounds-5-6": [(UNET, "round 4 (shipped then)", "selection-toy-unet.json", R4U),
                   (UNET, "round 5", "selection-toy-unet.json", R5U),
                   (UNET, "round 6", "selection-toy-unet-round6.json", R6U),
                   (MMDIT, "round 4 (shipped then)", "selection-toy-mmdit.json", R4M),
                   (MMDIT, "round 5", "selection-toy-mmdit.json", R5M),
                   (MMDIT, "round 6", "selection-toy-mmdit.json", R6M)],
    "round-7": [(UNET, "round 6", "selection-toy-unet-round7-mid.json", C6U),
                (UNET, "round 7, step 2000", "selection-toy-unet-round7.json", S7U),
                (UNET, "round 7, final", "selection-toy-unet-round7.json", R7U),
                (MMDIT, "round 6", "selection-toy-mmdit-round7-mid.json", C6M),
                (MMDIT, "round 7, step 7000", "selection-toy-mmdit-round7.json", S7M),
                (MMDIT, "round 7, final", "selection-toy-mmdit-round7.json", R7M)],
}


def chosen(rows) -> dict[str, str]:
    """model -> the label of its row with the best validation mean (the choice ``select_weights`` makes)."""
    best = {}
    for model, label, file, key in rows:
        score = validation_score(saved(file, key, VALIDATION_SEED))
        if model not in best or score > best[model][0]:
            best[model] = (score, label)
    return {model: label for model, (_, label) in best.items()}


def validation_table(name: str) -> str:
    """The validation table ``name`` of :data:`VALIDATION`: target rates, their mean, the choice."""
    rows = VALIDATION[name]
    picks = chosen(rows)
    n = {saved(file, key, VALIDATION_SEED)["single"]["n"] for _, _, file, key in rows}
    if len(n) != 1:
        raise ValueError(f"the {name} validation rows were measured on different prompt counts: {sorted(n)}")
    lines = [f"| validation (seed {VALIDATION_SEED}, n = {n.pop()}) | single | glyph | two: both right | mean |",
             "| --- | --- | --- | --- | --- |"]
    for model, label, file, key in rows:
        result = saved(file, key, VALIDATION_SEED)
        rates = " | ".join(f"{result[family][rate]:g}%" for family, rate in TARGETS)
        mean = f"{validation_score(result):.1f}"
        if picks[model] == label:
            label, mean = f"**{label}**", f"**{mean}** (chosen)"
        lines.append(f"| {model} {label} | {rates} | {mean} |")
    return "\n".join(lines)


# -- the test seeds ----------------------------------------------------------------------------------
SHIPPED_FILE = "shipped-r7-seed{seed}-n200/quality.json"  # the shipped weights (round 7), measured after the swap

#: (model, label, {test seed: (file, key)}) per set of weights measured on the test seeds, in the
#: docs' row order. Round 4 was shipped until issue 9: its results are keyed by the model's name in
#: the runs of rounds 5 and 6 (seed 1 of toy-mmdit is the shipped row of round 6's run). "Round 7
#: (chosen)" are the final weights of round 7, chosen on validation (:data:`VALIDATION`), before
#: the swap; toy-mmdit's seed runs stopped before writing their JSON and left their logs.
TEST_RUNS = [
    (UNET, "round 4 (shipped then)", {0: ("shipped-seed0.json", UNET), 1: ("shipped-unet-seed1.json", UNET)}),
    (UNET, "round 5", {s: (f"unet-r5-seed{s}.json", R5U) for s in (0, 1)}),
    (UNET, "round 6", {s: (f"unet-r6-seed{s}.json", R6U) for s in (0, 1)}),
    (UNET, "round 7 (chosen)", {s: (f"unet-r7-seed{s}-n100.json", R7U) for s in (0, 1)}),
    (UNET, "round 7 (shipped)", {s: (SHIPPED_FILE.format(seed=s), UNET) for s in (0, 1)}),
    (MMDIT, "round 4 (shipped then)", {0: ("shipped-seed0.json", MMDIT), 1: ("mmdit-r6-seed1.json", MMDIT)}),
    (MMDIT, "round 6", {s: (f"mmdit-r6-seed{s}.json", R6M) for s in (0, 1)}),
    (MMDIT, "round 7 (chosen)", {s: (f"mmdit-r7-seed{s}-n200.log", R7M) for s in (0, 1)}),
    (MMDIT, "round 7 (shipped)", {s: (SHIPPED_FILE.format(seed=s), MMDIT) for s in (0, 1)}),
]


def _runs(labels) -> list[tuple[str, str, dict]]:
    """(model, label, {seed: result}) of the :data:`TEST_RUNS` whose label is in ``labels``."""
    return [(model, label, {seed: saved(file, key, seed) for seed, (file, key) in files.items()})
            for model, label, files in TEST_RUNS if label in labels]


def round_4() -> dict[int, dict]:
    """seed -> model -> round 4's results on the test seeds."""
    runs = _runs({"round 4 (shipped then)"})
    return {seed: {model: results[seed] for model, _, results in runs} for seed in runs[0][2]}


def results_table() -> str:
    """Rounds 4-6 on each test seed: the target rates and the objects right; the row chosen on
    validation (``VALIDATION["rounds-5-6"]``) in bold."""
    picks = chosen(VALIDATION["rounds-5-6"])
    lines = ["| model | weights | test seed | single: shape+colour" + target_note("single", "shape_and_colour")
             + " | glyph: right glyph" + target_note("glyph", "glyph") + " | two: both right at positions"
             + target_note("two", "both_right_at_positions") + " | objects right at position |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, label, results in _runs({"round 4 (shipped then)", "round 5", "round 6"}):
        bold = picks[model] == label
        for seed, result in results.items():
            rates = [f"**{_rate(result, *c)}**" if bold else _rate(result, *c) for c in TARGETS]
            name = f"**{label} (chosen)**" if bold else label
            lines.append(f"| {model} | {name} | {seed} | " + " | ".join(rates)
                         + f" | {_rate(result, 'two', 'objects_right_at_position')} |")
    return "\n".join(lines)


def held_out_table(seed: int = 0) -> str:
    """Rounds 4-6 on the held-out families of test seed ``seed`` ("not measured" where a run left them out)."""
    runs = _runs({"round 4 (shipped then)", "round 5", "round 6"})
    n = {r[seed]["single_held_out"]["n"] for _, _, r in runs if "single_held_out" in r[seed]}
    if len(n) != 1:
        raise ValueError(f"the held-out runs of seed {seed} were measured on different prompt counts: {sorted(n)}")
    lines = [f"| held-out (seed {seed}, n = {n.pop()}) | single: shape+colour | glyph: right glyph |",
             "| --- | --- | --- |"]
    for model, label, results in runs:
        result = results[seed]
        cells = [_rate(result, f"{family}_held_out", rate) if f"{family}_held_out" in result else "not measured"
                 for family, rate in (("single", "shape_and_colour"), ("glyph", "glyph"))]
        lines.append(f"| {model} {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def round_7_table() -> str:
    """Round 7 beside rounds 4 and 6, the test seeds side by side; the shipped rows in bold."""
    finals = chosen(VALIDATION["round-7"])
    if set(finals.values()) != {"round 7, final"}:
        raise ValueError(f"the rows 'round 7 (chosen)' are the final weights, but validation chose {finals}")
    lines = ["| model | weights | test seed | n per family | single: shape+colour"
             + target_note("single", "shape_and_colour") + " | glyph" + target_note("glyph", "glyph")
             + " | two: both right" + target_note("two", "both_right_at_positions") + " |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, label, results in _runs({"round 4 (shipped then)", "round 6", "round 7 (chosen)", "round 7 (shipped)"}):
        n = {result[family]["n"] for result in results.values() for family, _ in TARGETS}
        if len(n) != 1:
            raise ValueError(f"{model} {label} was measured on different prompt counts: {sorted(n)}")
        bold = label.endswith("(shipped)")
        rates = [" / ".join(_rate(result, *c) for result in results.values()) for c in TARGETS]
        rates = [f"**{r}**" for r in rates] if bold else rates
        lines.append(f"| {model} | {f'**{label}**' if bold else label} | {' / '.join(map(str, results))} "
                     f"| {n.pop()} | " + " | ".join(rates) + " |")
    return "\n".join(lines)
