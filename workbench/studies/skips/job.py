"""Issue 12 study runs: skip spectra, feature dynamics, and the FreeU (b, s) grid scored by the judge.

    python -m workbench.studies.skips.job spectra   [--models toy-unet tiny-sd] [--prompts 8] [--steps 20]
    python -m workbench.studies.skips.job dynamics  [--models toy-unet toy-mmdit] [--prompts 8] [--steps 20]
    python -m workbench.studies.skips.job freeu     [--val 30] [--test 100] [--steps 20]

Each is a resumable job over items (``workbench.store.items.ItemStore``) into the zarr store
``--work/skips_<what>.zarr``: one item per model (spectra, dynamics) or per FreeU cell (validation)
and per test run (the plain model, the chosen cell). Finished items are kept; Ctrl-C stops after the
item in flight, and the same command resumes; a store made with other settings is refused. When
every item is done, the job writes one JSON file under ``--out`` (default ``docs/results``), which
the report reads: xarray Datasets stored with ``Dataset.to_dict()`` (read back with
``xr.Dataset.from_dict``), so named dims survive. The protocol (prompts, splits, the selection on
validation, the plain-model baseline) is :mod:`.protocol`'s: the grid is scored on validation
prompts, and only the plain model (b = s = 1) and the best FreeU cell on validation on test.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ... import intervene, load, record
from ... import sites as site_table
from ...analysis.skips import (
    adjacent_similarity,
    block_roles,
    radial_spectrum,
    relative_change,
    share_above,
    spectral_shares,
    step_similarity,
)
from ...capture.freeu import freeu, skip_stages
from ...capture.reuse import stage_modules
from ...models.judge import load_judge
from ...results import results_dir
from ...sitemap import parse_site, site_name

from ...store.items import ItemStore
from ...store.jobs import write_json_atomically
from .protocol import FAMILIES, SPLITS, accuracies, cell, cell_factors, judged_prompts, recorded_prompts, \
    select_on_validation


def _backbone_of(skip: str) -> str:
    """The backbone site a skip site is concatenated to (``up_blocks.i.skip.j`` -> ``up_blocks.i.backbone.j``)."""
    parts = parse_site(skip)
    return site_name(parts.module, "backbone", index=parts.index)


def spectra(model_name: str, prompts: list[str], steps: int) -> xr.Dataset:
    """Low-frequency shares of backbone against skip features, per decoder stage, site and step."""
    model = load(model_name)
    stages = skip_stages(model)
    sites = [s for _, skips in stages for s in skips] + [_backbone_of(s) for _, skips in stages for s in skips]
    with record(model, sites) as rec:
        model.generate(prompts, steps=steps, seed=0)
    rows = []
    for stage_index, (module, skips) in enumerate(stages):
        for skip in skips:
            j = parse_site(skip).index
            for kind, site in (("skip", skip), ("backbone", _backbone_of(skip))):
                shares = spectral_shares(rec[site]).mean(("sample", "branch"))
                profile = radial_spectrum(rec[site])
                rows.append(shares.assign(radial=profile).expand_dims(
                    stage=[stage_index], kind=[kind], resnet=[int(j)]))
    ds = xr.combine_by_coords(rows)
    ds.attrs.update(model=model_name, prompts=len(prompts), steps=steps,
                    stage_modules=json.dumps([m for m, _ in stages]),
                    # each stage's feature-map side, as recorded (the tables print it; not derived by formula)
                    stage_map_size=json.dumps([int(rec[skips[0]].sizes["y"]) for _, skips in stages]))
    return ds


def block_sites(model) -> list[str]:
    """The output sites of every top-level block (image and text streams of joint blocks)."""
    names = []
    for block in stage_modules(model):
        names += [s for s in site_table(model, f"{block}.out*").index if s in (f"{block}.out", f"{block}.out.image",
                                                                               f"{block}.out.text")]
    return names


def dynamics(model_name: str, prompts: list[str], steps: int) -> xr.Dataset:
    """Step x step similarity, adjacent similarity and relative change of every block output."""
    model = load(model_name)
    sites = block_sites(model)
    roles = block_roles(stage_modules(model), model.site_map.stages)
    with record(model, sites) as rec:
        model.generate(prompts, steps=steps, seed=0)
    sims, adjacent, change, role, share = [], [], [], [], []
    for site in sites:
        da = rec[site]
        sims.append(step_similarity(da))
        adj = adjacent_similarity(da)
        adjacent.append(adj.mean(("sample", "branch")))
        change.append(relative_change(da).mean(("sample", "branch")))
        share.append(share_above(adj, 0.95))
        role.append(roles[site.split(".out")[0]])
    ds = xr.Dataset(
        {
            "similarity": xr.concat(sims, "site"),
            "adjacent": xr.concat(adjacent, "site"),
            "relative_change": xr.concat(change, "site"),
            "share_adjacent_above_095": ("site", share),
            "role": ("site", role),
        },
        coords={"site": sites},
    )
    ds.attrs.update(model=model_name, prompts=len(prompts), steps=steps)
    return ds


def judged(model, families: dict, steps: int, seed: int, interventions: list, batch: int = 50) -> xr.Dataset:
    """The judged families' accuracies (percent) of ``model`` under ``interventions``, one 0-d
    variable per accuracy (an item of the FreeU store)."""
    judge = load_judge()
    verdicts = {}
    for family, items in families.items():
        prompts = [c for c, _ in items]
        with intervene(model, interventions):
            images = np.concatenate([model.generate(prompts[i:i + batch], steps=steps, seed=seed + i)
                                     for i in range(0, len(prompts), batch)])
        verdicts[family] = judge.judge(images)
    return xr.Dataset({key: ((), value) for key, value in accuracies(families, verdicts).items()})


def _row(ds: xr.Dataset) -> dict:
    return {key: ds[key].item() for key in FAMILIES.values()}


def freeu_grid(b_values, s_values, n_val: int, n_test: int, steps: int, path: Path, work: Path,
               progress: bool = True, resume: str = "rerun the same command", model=None) -> dict:
    """The FreeU grid on validation, then the plain model and the chosen cell on test: items of
    the store ``work`` (resumable); the results are written to ``path`` and returned. ``model``:
    toy-unet, already loaded (else loaded when an item needs it)."""
    store = ItemStore(work, identity={"b": list(b_values), "s": list(s_values), "n_val": n_val, "n_test": n_test,
                                      "steps": steps}, resume=resume)
    memo = {} if model is None else {"model": model}

    def toy_unet():
        if not memo:
            memo["model"] = load("toy-unet")
        return memo["model"]

    cells = [cell(b, s) for b, s in itertools.product(b_values, s_values)]
    validation = judged_prompts(n_val, "validation")
    done = store.run([f"validation-{c}" for c in cells], lambda key: judged(
        toy_unet(), validation, steps, SPLITS["validation"]["noise_seed"], _freeu(toy_unet(), key.split("-", 1)[1])),
        progress=progress, desc="FreeU grid (validation)")
    results = {"validation": {c: _row(done[f"validation-{c}"]) for c in cells}, "b": list(b_values),
               "s": list(s_values), "steps": steps, "n_val": n_val, "n_test": n_test,
               "note": "b1 = b2 = b and s1 = s2 = s; b = s = 1 is the plain model"}
    best, tied = select_on_validation(results["validation"])
    results["best_on_validation"], results["tied_on_validation"] = best, tied
    test = judged_prompts(n_test, "test")
    runs = store.run(["test-plain", f"test-{best}"], lambda key: judged(
        toy_unet(), test, steps, SPLITS["test"]["noise_seed"], [] if key == "test-plain" else _freeu(toy_unet(), best)),
        progress=progress, desc="FreeU (test)")
    results["test"] = {"best": best, "plain": _row(runs["test-plain"]), "freeu": _row(runs[f"test-{best}"])}
    write_json_atomically(path, results)
    return results


def _freeu(model, name: str) -> list:
    """The interventions of a grid cell (the plain model's cell is FreeU at the identity, as the grid ran it)."""
    b, s = cell_factors(name)
    return freeu(model, s, s, b, b)


def recordings(what: str, models: list[str], prompts: int, steps: int, path: Path, work: Path,
               progress: bool = True, resume: str = "rerun the same command") -> dict:
    """Spectra or dynamics of every model of ``models``: one item each of the store ``work``
    (resumable); merged into the JSON at ``path`` (other models' entries kept) and returned."""
    run = spectra if what == "spectra" else dynamics
    store = ItemStore(work, identity={"what": what, "prompts": prompts, "steps": steps}, resume=resume)
    texts = recorded_prompts(prompts)
    done = store.run([f"{what}-{name}" for name in models], lambda key: run(key.split("-", 1)[1], texts, steps),
                     progress=progress, desc=what)
    stored = json.loads(path.read_text()) if path.exists() else {}
    for name in models:
        stored[name] = done[f"{what}-{name}"].to_dict()
    write_json_atomically(path, stored)
    return stored


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["spectra", "dynamics", "freeu"])
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--val", type=int, default=30)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--b", nargs="+", type=float, default=[1.0, 1.2, 1.4, 1.6])
    parser.add_argument("--s", nargs="+", type=float, default=[1.0, 0.7, 0.4, 0.2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="bench-out/skips", help="folder of the job's zarr stores")
    parser.add_argument("--out", default=str(results_dir()))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    resume = "python -m workbench.studies.skips.job " + " ".join(sys.argv[1:] if argv is None else argv)
    with torch.no_grad():
        if args.what == "freeu":
            freeu_grid(args.b, args.s, args.val, args.test, args.steps, out / "skips_freeu_grid.json",
                       work / "skips_freeu.zarr", resume=resume)
            return 0
        models = args.models or (["toy-unet", "tiny-sd"] if args.what == "spectra" else ["toy-unet", "toy-mmdit"])
        recordings(args.what, models, args.prompts, args.steps, out / f"skips_{args.what}.json",
                   work / f"skips_{args.what}.zarr", resume=resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
