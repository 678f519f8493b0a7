"""Quality report of the reference models: do generated images show what the prompt asks?

Three prompt families, each scored by the shipped judge (``workbench.models.judge``), which reads
the object at each position anchor:

* single: ``a red circle on the left`` - the shape x colour x position triples training draws
  (the 180 not held out; 200 prompts cycle through them). Target (issue 9): >= 97% of images
  show the asked shape in the asked colour (anywhere; "at the asked position" beside it).
* glyph: ``the letter "K" in red on the left`` - 200 prompts drawn from the 760 glyph x colour x
  position triples not held out. Target: >= 90% show the asked glyph.
* two: ``a red circle on the left and the digit "7" in blue at the top`` - 200 random pairs at
  distinct positions. Target: >= 60% with both objects right (name and colour) at their asked
  positions; the share of single objects right beside it.
* single_held_out, glyph_held_out: the same prompts for the triples removed from training
  (``workbench.data.holdout``: 20 shape and 40 glyph triples; from training round 5 on), cycled
  to ``--n-held-out`` prompts. Outside the training distribution; reported separately, no target.
  Weights warm-started from rounds 1-4 (which saw every triple) are not a clean test of them.

Captions are built by the shapes world's own caption templates (``make_scene``), i.e. exactly
the phrasing the models were trained on.

Prompt seeds: ``--seed`` draws the prompts and the sampling noise. Seeds 0 and 1 are the TEST
seeds that quality is reported on; choosing between candidate weights (which training round to
ship) uses the VALIDATION seed ``--seed 7`` only, so the reported figures are not the ones the
choice was made on.

    python -m workbench.studies.quality.job [--models toy-mmdit toy-unet] [--n 200] [--steps 20] [--out DIR]
        [--weights toy-mmdit=FOLDER ...]   # score candidate weights instead of the shipped ones
        [--shipped]                         # ... and the shipped ones beside them, in the same run

Prints a markdown table and writes ``quality.md`` and ``quality.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ... import load
from ...models.judge import load_judge
from ...models.reference import NAMES, load_reference
from .protocol import TARGETS, TEST_SEEDS, VALIDATION_SEED, prompt_families, score


def run(models: list[str], n: int, steps: int, batch: int, seed: int, guidance: float | None,
        weights: list[tuple[str, str]] | None = None, shipped: bool = True, n_held_out: int | None = None) -> dict:
    """Score each model; ``weights`` lists (model name, folder) candidates to load instead of (or,
    with ``shipped``, beside) the shipped weights. Results are keyed ``name`` for the shipped
    weights and ``name [folder]`` for a candidate."""
    judge = load_judge()
    families = prompt_families(n, seed, n_held_out)
    weights = list(weights or [])
    unknown = sorted({name for name, _ in weights} - set(models))
    if unknown:
        raise ValueError(f"--weights names {unknown}, which are not in --models {models}")
    runs = [(name, None) for name in models if shipped or name not in {w for w, _ in weights}] + weights
    results = {}
    for name, folder in runs:
        key = name if folder is None else f"{name} [{folder}]"
        model = load(name) if folder is None else load_reference(name, folder)
        results[key] = {"model": name, "steps": steps, "guidance_scale": guidance or model.guidance_scale,
                        "weights": folder or "shipped", "seed": seed}
        for family, items in families.items():
            start = time.time()
            prompts = [c for c, _ in items]
            images = np.concatenate([
                model.generate(prompts[i:i + batch], steps=steps, seed=seed + i, guidance_scale=guidance)
                for i in range(0, len(prompts), batch)
            ])
            results[key][family] = score(family, [o for _, o in items], judge.judge(images))
            results[key][family]["seconds"] = round(time.time() - start, 1)
            print(f"{key} {family}: {results[key][family]}", file=sys.stderr, flush=True)
    return results


def markdown(results: dict) -> str:
    lines = [
        "| model | single: shape+colour (target >= 97%) | ... at asked position | glyph: right glyph (target >= 90%) "
        "| ... at asked position | two objects: both right at positions (target >= 60%) | objects right "
        "| held-out single: shape+colour | held-out glyph: right glyph |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in results.items():
        s, g, t = r["single"], r["glyph"], r["two"]
        hs = f"{r['single_held_out']['shape_and_colour']}%" if "single_held_out" in r else "-"
        hg = f"{r['glyph_held_out']['glyph']}%" if "glyph_held_out" in r else "-"
        lines.append(f"| {key} | {s['shape_and_colour']}% | {s['shape_and_colour_at_position']}% | {g['glyph']}% "
                     f"| {g['glyph_at_position']}% | {t['both_right_at_positions']}% | {t['objects_right_at_position']}% "
                     f"| {hs} | {hg} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES))
    parser.add_argument("--n", type=int, default=200, help="prompts per family")
    parser.add_argument("--n-held-out", type=int, default=None,
                        help="prompts per held-out family (default: --n; 0 leaves them out)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0,
                        help=f"prompt and noise seed: test seeds {TEST_SEEDS}, validation seed {VALIDATION_SEED}")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="score the weights in FOLDER for model NAME instead of the shipped ones (repeatable)")
    parser.add_argument("--shipped", action="store_true",
                        help="with --weights: score the shipped weights too, in the same run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = []
    for w in args.weights:
        if "=" not in w:
            parser.error(f"--weights takes NAME=FOLDER, got {w!r}")
        weights.append(tuple(w.split("=", 1)))
    results = run(args.models, args.n, args.steps, args.batch, args.seed, args.guidance, weights,
                  shipped=args.shipped or not weights, n_held_out=args.n_held_out)
    table = markdown(results)
    print(table)
    for key, r in results.items():
        for (family, rate), target in TARGETS.items():
            gap = r[family][rate] - target
            print(f"{key} {family} {rate}: {r[family][rate]}% vs target {target}% "
                  f"({'met' if gap >= 0 else f'missed by {-gap:.1f} points'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(table + "\n")
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
