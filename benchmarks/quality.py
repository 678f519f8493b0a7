"""Quality report of the reference models: do generated images show what the prompt asks?

Three prompt families, each scored by the shipped judge (``workbench.models.judge``), which reads
the object at each position anchor:

* single: ``a red circle on the left`` - every shape x colour x position (200 prompts). Target:
  >= 90% of images show the asked shape in the asked colour (anywhere; "at the asked position"
  is reported beside it).
* glyph: ``the letter "K" in red on the left`` - 200 prompts drawn from glyph x colour x position.
  Target: >= 80% show the asked glyph (anywhere; at the asked position beside it).
* two: ``a red circle on the left and the digit "7" in blue at the top`` - 200 random pairs at
  distinct positions. No target: both objects right (name and colour) at their asked positions,
  and the share of single objects right.

Captions are built by the shapes world's own caption templates (``make_scene``), i.e. exactly
the phrasing the models were trained on.

    python benchmarks/quality.py [--models toy-mmdit toy-unet] [--n 200] [--steps 20] [--out DIR]
                                 [--weights toy-mmdit=FOLDER]   # score candidate weights, not the shipped

Prints a markdown table and writes ``quality.md`` and ``quality.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import workbench as wb
from workbench.data import make_scene
from workbench.data.recipe import default_recipe
from workbench.models.judge import NONE, load_judge
from workbench.models.reference import NAMES, load_reference


def prompt_families(n: int = 200, seed: int = 0) -> dict[str, list[tuple[str, list[dict]]]]:
    """Family -> list of (caption, objects), each object a dict(name, colour, position)."""
    recipe = default_recipe()
    rng = np.random.default_rng(seed)
    positions, colours = list(recipe.positions), list(recipe.colours)

    def caption(objects: list[dict]) -> str:
        specs = [{("glyph" if o["name"] in recipe.glyphs else "shape"): o["name"], "colour": o["colour"],
                  "position": o["position"], "template": 0} for o in objects]
        return make_scene(specs, seed=0).caption

    single = [dict(name=s, colour=c, position=p) for s, c, p in itertools.product(recipe.shapes, colours, positions)]
    single = [single[i] for i in rng.permutation(len(single))[:n]] if n <= len(single) else \
        [single[i % len(single)] for i in range(n)]
    glyph_all = list(itertools.product(recipe.glyphs, colours, positions))
    glyph = [dict(name=g, colour=c, position=p) for g, c, p in (glyph_all[i] for i in rng.permutation(len(glyph_all))[:n])]
    names = list(recipe.shapes) + list(recipe.glyphs)
    two = []
    for _ in range(n):
        p1, p2 = rng.choice(len(positions), size=2, replace=False)
        two.append([dict(name=names[rng.integers(len(names))], colour=colours[rng.integers(len(colours))],
                         position=positions[p]) for p in (p1, p2)])
    return {
        "single": [(caption([o]), [o]) for o in single],
        "glyph": [(caption([o]), [o]) for o in glyph],
        "two": [(caption(objs), objs) for objs in two],
    }


def score(family: str, objects: list[list[dict]], verdict: dict) -> dict:
    """Per-family rates from the judge's verdict on images generated for ``objects``."""
    positions = list(verdict["name"])
    at_pos, anywhere, name_ok, colour_ok, position_ok, objects_ok = [], [], [], [], [], []
    for i, objs in enumerate(objects):
        right = []
        for o in objs:
            seen = [(verdict["name"][p][i], verdict["colour"][p][i]) for p in positions]
            here = (verdict["name"][o["position"]][i], verdict["colour"][o["position"]][i])
            right.append(here == (o["name"], o["colour"]))
            if family != "two":
                anywhere.append((o["name"], o["colour"]) in seen if family == "single"
                                else any(n == o["name"] for n, _ in seen))
                name_ok.append(any(n == o["name"] for n, _ in seen))
                colour_ok.append(any(n != NONE and c == o["colour"] for n, c in seen))
                position_ok.append(here[0] != NONE)
                at_pos.append(here == (o["name"], o["colour"]) if family == "single" else here[0] == o["name"])
        objects_ok.extend(right)
        if family == "two":
            at_pos.append(all(right))
    pct = lambda v: round(100 * float(np.mean(v)), 1)  # noqa: E731
    if family == "two":
        return {"both_right_at_positions": pct(at_pos), "objects_right_at_position": pct(objects_ok), "n": len(objects)}
    key = "shape_and_colour" if family == "single" else "glyph"
    return {key: pct(anywhere), f"{key}_at_position": pct(at_pos), "name": pct(name_ok), "colour": pct(colour_ok),
            "object_at_position": pct(position_ok), "n": len(objects)}


TARGETS = {("single", "shape_and_colour"): 90.0, ("glyph", "glyph"): 80.0}


def run(models: list[str], n: int, steps: int, batch: int, seed: int, guidance: float | None,
        weights: dict[str, str] | None = None) -> dict:
    """``weights`` maps a model name to a folder to load instead of the shipped weights."""
    judge = load_judge()
    families = prompt_families(n, seed)
    results = {}
    weights = weights or {}
    for name in models:
        model = load_reference(name, weights[name]) if name in weights else wb.load(name)
        results[name] = {"steps": steps, "guidance_scale": guidance or model.guidance_scale,
                         "weights": weights.get(name, "shipped")}
        for family, items in families.items():
            start = time.time()
            prompts = [c for c, _ in items]
            images = np.concatenate([
                model.generate(prompts[i:i + batch], steps=steps, seed=seed + i, guidance_scale=guidance)
                for i in range(0, len(prompts), batch)
            ])
            results[name][family] = score(family, [o for _, o in items], judge.judge(images))
            results[name][family]["seconds"] = round(time.time() - start, 1)
            print(f"{name} {family}: {results[name][family]}", file=sys.stderr, flush=True)
    return results


def markdown(results: dict) -> str:
    lines = [
        "| model | single: shape+colour (target >= 90%) | ... at asked position | glyph: right glyph (target >= 80%) "
        "| ... at asked position | two objects: both right at positions | objects right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        s, g, t = r["single"], r["glyph"], r["two"]
        lines.append(f"| {name} | {s['shape_and_colour']}% | {s['shape_and_colour_at_position']}% | {g['glyph']}% "
                     f"| {g['glyph_at_position']}% | {t['both_right_at_positions']}% | {t['objects_right_at_position']}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES))
    parser.add_argument("--n", type=int, default=200, help="prompts per family")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="score the weights in FOLDER for model NAME instead of the shipped ones")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = dict(w.split("=", 1) for w in args.weights)
    results = run(args.models, args.n, args.steps, args.batch, args.seed, args.guidance, weights)
    table = markdown(results)
    print(table)
    for name, r in results.items():
        for (family, key), target in TARGETS.items():
            gap = r[family][key] - target
            print(f"{name} {family} {key}: {r[family][key]}% vs target {target}% ({'met' if gap >= 0 else f'missed by {-gap:.1f} points'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(table + "\n")
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
