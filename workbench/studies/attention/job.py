"""The attention studies on the reference models, at full size, each figure beside baselines that
use no model: attention segmentation scored on shapes-world masks (both models, every layer,
several timesteps, a DAAM-style aggregate; settings chosen on the validation split, reported on the
test split; with and without position words in the captions) and attention-reuse editing of
toy-mmdit scored against the exactly rendered target scene. Writes JSON results and heatmaps under
the results folder; the tables are :mod:`workbench.studies.attention.report`'s.

    python -m workbench.studies.attention.job --images 200 --pairs 150 [--work bench-out/attention]

Both are resumable jobs over items (``workbench.store.items.ItemStore``), each into a zarr store
under ``--work``: segmentation keeps the scores of each batch of images (per caption kind and
split) in ``segmentation_<model>.zarr``; editing keeps the source and edited images of each
method on each batch of pairs in ``editing_toy-mmdit.zarr``. Ctrl-C stops after the item in
flight and the same command resumes; a store made with other settings is refused. The summaries
(selection on validation, baselines, intervals: :mod:`.protocol`, :mod:`.editing`) are computed from
the stored items, exactly as from a run in memory.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ... import load
from ...analysis.segmentation import THRESHOLDS, cell_means
from ...data import generate
from ...models.judge import load_judge
from ...results import results_dir
from ...store.items import ItemStore
from .editing import METHODS, compare_methods, run_edits
from .protocol import CAPTIONS, baseline_scores, select_on_validation, strip_positions
from .report import MODELS, editing_tables, heatmap, segmentation_tables
from .segmentation import VARIANTS, batch_scores, join_batches

SPLITS = ("val", "test")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run_segmentation(name: str, images: int, timesteps: tuple[int, ...], work=None, *, batch: int = 25,
                     progress: bool = True, resume: str = "rerun the same command", model=None) -> dict:
    """The segmentation study on one model: its items (a batch of images of one caption kind and
    split) kept in ``work/segmentation_<name>.zarr`` (a temporary store when ``work`` is None); the
    heatmaps written under the results folder; returns what ``segmentation_<name>.json`` holds."""
    model = model or load(name)
    splits = {split: generate(images, split=split, seed=0) for split in SPLITS}
    out = {"model": name, "images_per_split": images, "timesteps": list(timesteps), "results": {}}
    store = _store(work, f"segmentation_{name}.zarr", resume,
                   {"model": name, "images": images, "timesteps": list(timesteps), "batch": batch, "seed": 0,
                    "variants": list(VARIANTS), "thresholds": list(THRESHOLDS)})
    for caption_kind, position_known in CAPTIONS.items():
        start = time.perf_counter()
        scores, bases = {}, {}
        for split, scenes in splits.items():
            scenes = scenes if position_known else strip_positions(scenes)
            items = store.run([f"{_slug(caption_kind)}-{split}-{a:05d}" for a in range(0, images, batch)],
                              _scorer(model, scenes, batch, timesteps), progress=progress,
                              desc=f"segmentation {name}, {caption_kind}, {split}")
            scores[split] = join_batches(list(items.values()))
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


def _scorer(model, scenes: xr.Dataset, batch: int, timesteps):
    """compute(key) of a segmentation item: the scores of the batch of images the key starts at."""
    def compute(key: str) -> xr.Dataset:
        start = int(key.rsplit("-", 1)[1])
        return batch_scores(model, scenes, start, min(start + batch, scenes.sizes["sample"]), timesteps)

    return compute


def run_editing(pairs: int, steps: int, reuse_steps: int, work=None, *, methods=tuple(METHODS), batch: int = 10,
                progress: bool = True, resume: str = "rerun the same command", model=None, judge=None) -> xr.Dataset:
    """The editing study on toy-mmdit: the images of each method on each batch of pairs kept in
    ``work/editing_toy-mmdit.zarr`` (a temporary store when ``work`` is None); returns the summary
    ``editing_toy-mmdit.json`` holds (``compare_methods`` over the stored images)."""
    model, judge = model or load("toy-mmdit"), judge or load_judge()
    store = _store(work, f"editing_{model.name}.zarr", resume,
                   {"model": model.name, "pairs": pairs, "steps": steps, "reuse_steps": reuse_steps, "seed": 0,
                    "batch": batch})

    def edits(method: str, all_pairs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        def compute(key: str) -> xr.Dataset:
            a = int(key.rsplit("-", 1)[1])
            sources, edited = run_edits(model, all_pairs[a:a + batch], method, steps=steps, reuse_steps=reuse_steps,
                                        seed=a, batch=batch)
            return xr.Dataset({"source": (("pair", "y", "x", "rgb"), sources), "edit": (("pair", "y", "x", "rgb"), edited)})

        items = store.run([f"{_slug(method)}-{a:05d}" for a in range(0, len(all_pairs), batch)], compute,
                          progress=progress, desc=f"editing, {method}")
        return (np.concatenate([ds.source.values for ds in items.values()]),
                np.concatenate([ds.edit.values for ds in items.values()]))

    start = time.perf_counter()
    summary = compare_methods(model, judge, n_pairs=pairs, methods=methods, edits=edits, steps=steps,
                              reuse_steps=reuse_steps)
    summary.attrs["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def _store(work, name: str, resume: str, identity: dict) -> ItemStore:
    if work is None:
        import tempfile

        work = tempfile.mkdtemp(prefix="workbench-attention-")
    Path(work).mkdir(parents=True, exist_ok=True)
    return ItemStore(Path(work) / name, identity=identity, resume=resume)


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
    parser.add_argument("--work", default="bench-out/attention", help="folder of the job's zarr stores")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results_dir().mkdir(parents=True, exist_ok=True)
    resume = "python -m workbench.studies.attention.job " + " ".join(sys.argv[1:] if argv is None else argv)
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    if not args.skip_segmentation:
        for name in args.models.split(","):
            saved = run_segmentation(name, args.images, timesteps, args.work, resume=resume)
            (results_dir() / f"segmentation_{name}.json").write_text(json.dumps(saved, indent=1))
        print(segmentation_tables())
    if not args.skip_editing:
        edits = run_editing(args.pairs, args.steps, args.reuse_steps, args.work, resume=resume)
        (results_dir() / "editing_toy-mmdit.json").write_text(json.dumps(edits.to_dict(), indent=1))
        print(editing_tables())


if __name__ == "__main__":
    main()
