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
        [--work DIR]                        # the resumable store of generated images

Prints a markdown table and writes ``quality.md`` and ``quality.json`` into ``--out``; the table of
docs/reference_models.md is written from saved ``quality.json`` files by :mod:`.report`.

Resumable: the generated images are the items of an ``ItemStore`` (``--work/quality.zarr``), one item
per batch of a family's prompts for each model and weights. Ctrl-C stops after the batch in flight
and the same command resumes, generating only the missing batches; the judge scores the stored
images when all are there, so a resumed run gives what an uninterrupted one gives. The store's
identity is what the images depend on besides the weights (``--n``, ``--n-held-out``, ``--steps``,
``--batch``, ``--seed``, ``--guidance``): a store made with other settings is refused, each
difference named. An item's key names the model and a digest of its weights folder's files, so
other weights (a candidate, or a folder retrained in place) get items of their own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ... import load
from ...models.judge import load_judge
from ...models.reference import NAMES, load_reference, reference_dir
from ...store.items import ItemStore
from .protocol import TARGETS, TEST_SEEDS, VALIDATION_SEED, prompt_families, score
from .report import misses, table


def folder_digest(folder: Path) -> str:
    """Short SHA-256 over every file of a weights folder (relative path and bytes): what an item's
    images were generated with."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def generate_batch(model, prompts: list[str], steps: int, seed: int, guidance: float | None) -> np.ndarray:
    """The images of one item (the batch's noise is drawn from ``seed``)."""
    return model.generate(prompts, steps=steps, seed=seed, guidance_scale=guidance)


def run(models: list[str], n: int, steps: int, batch: int, seed: int, guidance: float | None,
        weights: list[tuple[str, str]] | None = None, shipped: bool = True, n_held_out: int | None = None,
        work: str | Path = "bench-out/quality", resume: str = "rerun the same command", progress: bool = True,
        loaded: dict | None = None, judge=None) -> dict:
    """Score each model; ``weights`` lists (model name, folder) candidates to load instead of (or,
    with ``shipped``, beside) the shipped weights. Results are keyed ``name`` for the shipped
    weights and ``name [folder]`` for a candidate. The images are generated into the store
    ``work/quality.zarr`` (resumable; see the module doc); ``seconds`` per family is the time its
    images took to generate, as they were computed. ``loaded``: shipped models already loaded, by
    name, and ``judge`` the judge already loaded (else each is loaded here)."""
    families = prompt_families(n, seed, n_held_out)
    weights = list(weights or [])
    unknown = sorted({name for name, _ in weights} - set(models))
    if unknown:
        raise ValueError(f"--weights names {unknown}, which are not in --models {models}")
    n_held_out = n if n_held_out is None else n_held_out  # the default spelled out: the same store either way
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    store = ItemStore(work / "quality.zarr", identity={"n": n, "n_held_out": n_held_out, "steps": steps,
                                                       "batch": batch, "seed": seed, "guidance": guidance},
                      resume=resume)
    judge = judge or load_judge()
    runs = [(name, None) for name in models if shipped or name not in {w for w, _ in weights}] + weights
    results = {}
    for name, folder in runs:
        key = name if folder is None else f"{name} [{folder}]"
        prefix = f"{name}-{folder_digest(reference_dir(name) if folder is None else Path(folder))}"
        items = {f"{prefix}-{family}-{start:04d}": (family, start)
                 for family, pairs in families.items() for start in range(0, len(pairs), batch)}
        model = load_reference(name, folder) if folder is not None else (loaded or {}).get(name) or load(name)

        def compute(item: str) -> xr.Dataset:
            family, start = items[item]
            prompts = [caption for caption, _ in families[family][start:start + batch]]
            began = time.time()
            images = generate_batch(model, prompts, steps, seed + start, guidance)
            return xr.Dataset({"image": (("prompt", "y", "x", "rgb"), images)},
                              coords={"prompt": prompts}, attrs={"seconds": time.time() - began})

        done = store.run(list(items), compute, progress=progress, desc=f"quality {key}")
        results[key] = {"model": name, "steps": steps, "guidance_scale": guidance or model.guidance_scale,
                        "weights": folder or "shipped", "seed": seed}
        for family, pairs in families.items():
            parts = [done[item] for item, (f, _) in items.items() if f == family]
            images = np.concatenate([part.image.values for part in parts])
            results[key][family] = score(family, [objects for _, objects in pairs], judge.judge(images))
            results[key][family]["seconds"] = round(sum(part.attrs["seconds"] for part in parts), 1)
            print(f"{key} {family}: {results[key][family]}", file=sys.stderr, flush=True)
    return results


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
    parser.add_argument("--work", default="bench-out/quality",
                        help="folder of the resumable store of generated images (quality.zarr)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = []
    for w in args.weights:
        if "=" not in w:
            parser.error(f"--weights takes NAME=FOLDER, got {w!r}")
        weights.append(tuple(w.split("=", 1)))
    results = run(args.models, args.n, args.steps, args.batch, args.seed, args.guidance, weights,
                  shipped=args.shipped or not weights, n_held_out=args.n_held_out, work=args.work,
                  resume="python -m workbench.studies.quality.job " + " ".join(sys.argv[1:] if argv is None else argv))
    markdown = table([results])
    print(markdown)
    missed = misses({args.seed: results}, results)
    print("targets missed: " + "; ".join(missed) if missed else f"every target met: {TARGETS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(markdown + "\n")
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
