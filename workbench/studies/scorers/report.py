"""The scorer checks' report: the tables of docs/judge.md from the saved results
(``judge_checks.json``, ``ocr_accuracy.json``; written by :mod:`workbench.studies.scorers.job`). No
model runs here.

    python -m workbench.studies.scorers.report               # print the tables
    python -m workbench.studies.scorers.report --update-doc  # write them into docs/judge.md
"""

from __future__ import annotations

import json

from ...analysis.stats import wilson
from ...results import results_dir
from ..docs import report_main
from .protocol import CONDITION_NOTES


def judge_tables(saved: dict) -> str:
    out = ["Object named at an anchor (share of anchors; lower is better outside the world):\n",
           "| images | raw judge | with the calibrated gates |", "| --- | --- | --- |"]
    for name, row in saved["no_object"].items():
        out.append(f"| {name} | {row['raw']:.3f} | **{row['gated']:.3f}** |")
    cal = saved["calibration"]
    out.append(f"\nGates (from `calibration.json`): border <= {cal['border']:.3f}, roughness <= {cal['roughness']:.3f}, "
               f"confidence >= {cal['confidence']:.3f}.\n")
    out += ["In-world cost of the gates:\n", "| images | raw | gated |", "| --- | --- | --- |"]
    for name, row in saved["in_world"].items():
        out.append(f"| {name} | {row['raw']} | {row['gated']} |")
    for model, result in saved["agreement"].items():
        out += [f"\n**{model}** ({saved['prompts']} single-object test prompts, {saved['steps']} steps): agreement with "
                "the prompt at the asked position\n", "| reader | name | colour | both |", "| --- | --- | --- | --- |"]
        for reader, row in result["vs prompt"].items():
            out.append(f"| {reader} | {row['name']:.3f} | {row['colour']:.3f} | {row['both']:.3f} |")
        out += ["", "| pair | name disagreement | colour disagreement (both name an object) | any |",
                "| --- | --- | --- | --- |"]
        for pair, row in result["disagreement"].items():
            colour = "-" if row["colour"] is None else f"{row['colour']:.3f}"
            out.append(f"| {pair} | {row['name']:.3f} | {colour} | {row['verdict']:.3f} |")
    second = saved["second_judge"]
    out.append(f"\nSecond judge: `SecondJudge`, seed {second['seed']}, {second['scenes']} scenes, {second['steps']} "
               f"steps in {second['minutes']} min; clean test-split accuracy {second['test_accuracy']}.")
    return "\n".join(out)


def _cell(rows: list[dict]) -> str:
    k, n = sum(r["right"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({lo:.2f}-{hi:.2f})"


def ocr_tables(result: dict) -> str:
    out = []
    for condition, run in result["conditions"].items():
        rows = run["rows"]
        out += [f"**{condition}** ({CONDITION_NOTES[condition]}). Texts read right (k/n, 95% Wilson interval), by font "
                "size in pixels and kind of text:", "",
                "| size | " + " | ".join(result["kinds"]) + " | all |",
                "| --- |" + " --- |" * (len(result["kinds"]) + 1)]
        for size in run["sizes"]:
            at = [r for r in rows if r["size"] == size]
            out.append(f"| {size} px | " + " | ".join(_cell([r for r in at if r["kind"] == kind]) for kind in result["kinds"])
                       + f" | {_cell(at)} |")
        out += ["", "| font (all sizes) | read right |", "| --- | --- |"]
        out += [f"| {font} | {_cell([r for r in rows if r['font'] == font])} |" for font in result["fonts"]]
        small = min(run["sizes"])
        out += ["", f"Overall: {_cell(rows)}; at 12 px and up: {_cell([r for r in rows if r['size'] >= 12])}; at "
                f"{small} px: {_cell([r for r in rows if r['size'] == small])}. {run['seconds_per_image']} s per "
                f"{result['canvas']} px image on the shared 2-core CPU (load from other jobs included)."]
        wrong = [r for r in rows if not r["right"]]
        if wrong:
            empty = sum(not r["read"] for r in wrong)
            out += ["", f"Of the {len(wrong)} texts not read right, {empty} gave no reading at all (the detector "
                    "found no text), the others a wrong one."]
            out += ["", "Misreadings: " + "; ".join(f"{r['text']!r} read {r['read']!r} ({r['font']}, {r['size']} px)"
                                                   for r in wrong[:10]) + (" ..." if len(wrong) > 10 else "")]
        out.append("")
    return "\n".join(out)


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text."""
    return {("judge.md", "judge-checks"): judge_tables(json.loads((results_dir() / "judge_checks.json").read_text())),
            ("judge.md", "ocr-accuracy"): ocr_tables(json.loads((results_dir() / "ocr_accuracy.json").read_text()))}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
