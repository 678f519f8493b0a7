"""Choose which candidate weights to ship, on VALIDATION prompts only.

Each candidate folder (a training round's output or one of its checkpoints) is scored by
``workbench.studies.quality.job`` with the validation seed (``quality.VALIDATION_SEED``: its own prompts
and sampling noise, never the test seeds 0 and 1 that quality is reported on). The candidate with
the best mean of the three target rates (single shape + colour, glyph, two objects both right)
is chosen; its test figures are then measured separately with ``quality.py --seed 0`` / ``--seed 1``.

    python -m workbench.studies.quality.select_weights toy-unet /tmp/r5/toy-unet /tmp/r6/toy-unet [--n 100] [--out DIR]

Writes ``selection.json`` (every candidate's validation figures and the choice) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import job as quality
from .protocol import validation_score
from .report import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=quality.NAMES)
    parser.add_argument("folders", nargs="+", help="candidate weight folders")
    parser.add_argument("--n", type=int, default=100, help="validation prompts per family")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/selection")
    parser.add_argument("--work", default="bench-out/selection",
                        help="folder of the resumable store of generated images (the quality job's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    missing = [f for f in args.folders if not (Path(f) / "reference.json").exists()]
    if missing:
        parser.error(f"not a saved reference folder (no reference.json): {', '.join(missing)}")
    results = quality.run([args.model], args.n, args.steps, batch=100, seed=quality.VALIDATION_SEED, guidance=None,
                          weights=[(args.model, f) for f in args.folders], shipped=False, n_held_out=0,
                          work=args.work, resume="python -m workbench.studies.quality.select_weights "
                          + " ".join(sys.argv[1:] if argv is None else argv))
    scores = {r["weights"]: round(validation_score(r), 2) for r in results.values()}
    chosen = max(scores, key=scores.get)
    print(table([results]))
    for folder, score in scores.items():
        print(f"{folder}: validation score {score}{'  <- chosen' if folder == chosen else ''}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"selection-{args.model}.json").write_text(json.dumps(
        {"seed": quality.VALIDATION_SEED, "n": args.n, "scores": scores, "chosen": chosen, "results": results},
        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
