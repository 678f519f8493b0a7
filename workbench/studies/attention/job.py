"""The attention studies on the reference models, at full size, each figure beside baselines that
use no model: attention segmentation scored on shapes-world masks (both models, every layer,
several timesteps, a DAAM-style aggregate; settings chosen on the validation split, reported on the
test split; with and without position words in the captions) and attention-reuse editing of
toy-mmdit scored against the exactly rendered target scene. Writes JSON results and heatmaps under
the results folder; the tables are :mod:`workbench.studies.attention.report`'s.

    python -m workbench.studies.attention.job --images 200 --pairs 150
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ... import load
from ...analysis.segmentation import cell_means
from ...data import generate
from ...models.judge import load_judge
from ...results import results_dir
from .editing import compare_methods
from .protocol import CAPTIONS, baseline_scores, select_on_validation, strip_positions
from .report import MODELS, editing_tables, heatmap, segmentation_tables
from .segmentation import segmentation_scores


def run_segmentation(name: str, images: int, timesteps: tuple[int, ...]) -> dict:
    model = load(name)
    splits = {split: generate(images, split=split, seed=0) for split in ("val", "test")}
    out = {"model": name, "images_per_split": images, "timesteps": list(timesteps), "results": {}}
    for caption_kind, position_known in CAPTIONS.items():
        start = time.perf_counter()
        scores, bases = {}, {}
        for split, scenes in splits.items():
            scenes = scenes if position_known else strip_positions(scenes)
            scores[split] = segmentation_scores(model, scenes, timesteps=timesteps)
            bases[split] = baseline_scores(scenes, scores[split], position_known=position_known)
        selection = select_on_validation(scores["val"], bases["val"], scores["test"], bases["test"])
        out["results"][caption_kind] = {
            "objects": {s: int(scores[s].sizes["object"]) for s in scores},
            "seconds": round(time.perf_counter() - start, 1),
            "selection": selection,
            "cells": {s: cell_means(scores[s]).to_dict() for s in scores},
            "prior_cells": {s: bases[s].mean("object").to_dict() for s in bases},
        }
        thresholds = {r["method"]: r["setting"].rsplit("threshold ", 1)[1] for r in selection["rows"]
                      if r["method"] in scores["test"].variant.values}
        slug = "" if position_known else "_no-positions"
        heatmap(cell_means(scores["test"]), thresholds, results_dir() / f"segmentation_{name}{slug}.html",
                f"{name}: attention segmentation, test mIoU ({images} test images, {caption_kind})")
        print(f"{name}, {caption_kind}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images per split (val and test)")
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--timesteps", default="100,300,500,700,900")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reuse-steps", type=int, default=10, help="steps whose attention the edit reuses")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-editing", action="store_true")
    parser.add_argument("--skip-segmentation", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results_dir().mkdir(parents=True, exist_ok=True)
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    if not args.skip_segmentation:
        for name in args.models.split(","):
            saved = run_segmentation(name, args.images, timesteps)
            (results_dir() / f"segmentation_{name}.json").write_text(json.dumps(saved, indent=1))
        print(segmentation_tables())
    if not args.skip_editing:
        model, judge = load("toy-mmdit"), load_judge()
        start = time.perf_counter()
        edits = compare_methods(model, judge, n_pairs=args.pairs, steps=args.steps, reuse_steps=args.reuse_steps)
        edits.attrs["seconds"] = round(time.perf_counter() - start, 1)
        (results_dir() / "editing_toy-mmdit.json").write_text(json.dumps(edits.to_dict(), indent=1))
        print(editing_tables())


if __name__ == "__main__":
    main()
