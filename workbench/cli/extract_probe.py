"""``workbench extract`` and ``workbench probe``: subcommand builders for the main CLI.

    workbench extract --model toy-unet --dataset shapes --limit 512 --max-objects 1 \\
        --sites "down_blocks.?.out,mid_block.out,up_blocks.?.out" --timesteps 50,150,300 --out feats.zarr
    workbench extract --config job.toml                 # the same from a TOML/JSON file
    workbench extract --config job.toml --cluster local --workers 2   # on a Dask LocalCluster
    workbench extract --config job.toml --verify        # re-read every finished chunk, recompute damaged ones
    workbench probe feats.zarr --label shape --label colour --html grid.html

``workbench.cli.main`` registers them with ``add_extract(sub)`` and ``add_probe(sub)`` (this module
imports nothing from it: ``python -m workbench.cli.main extract ...`` runs them without the console script).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Flags that fill the job's DatasetSpec rather than the job itself.
_DATASET_FLAGS = {
    "split": "split", "limit": "limit", "max_objects": "max_objects", "dataset_seed": "seed",
    "image_column": "image_column", "label_column": "label_columns", "caption_column": "caption_column",
}


def add_extract(sub) -> argparse.ArgumentParser:
    """Add ``extract`` to ``sub`` (an ``add_subparsers()`` result)."""
    p = sub.add_parser(
        "extract",
        help="extract features of a dataset from a model into a resumable zarr store",
        description="Noise every image to each timestep, run the denoiser once per batch and timestep, record "
        "and pool the chosen sites, write them to a zarr store. Rerun the same command to resume; flags "
        "override the --config file. Several runs of the same command on one store share its chunks. "
        "Ctrl-C stops after the current chunk.",
    )
    p.add_argument("--config", help="a TOML or JSON file with the job's options (flags override it)")
    p.add_argument("--model", help="reference model (toy-unet, toy-mmdit), tiny family or local folder")
    p.add_argument("--dataset", help="'shapes', an image folder (one subfolder per class), a shapes zarr store, "
                   "or hf:PATH (a Hugging Face dataset saved with save_to_disk)")
    p.add_argument("--sites", action="append", help="site names or globs, comma-separated or repeated")
    p.add_argument("--timesteps", help="comma-separated, e.g. 50,150,300")
    p.add_argument("--out", help="the zarr store to write (default features.zarr)")
    p.add_argument("--seed", type=int, help="noise seed (default 0)")
    p.add_argument("--draws", type=int, help="noise draws per image and timestep, averaged (default 1; DIFT: 8)")
    p.add_argument("--pooling", choices=("mean", "adaptive", "none"), help="default mean (global average)")
    p.add_argument("--pool-size", type=int, help="k for adaptive k x k pooling (default 2)")
    p.add_argument("--prompt", choices=("empty", "class", "caption"), help="text conditioning (default empty)")
    p.add_argument("--class-template", help="prompt for --prompt class, label fields in braces (default 'a {shape}')")
    p.add_argument("--batch-size", type=int, help="images per batch and per store chunk (default 32)")
    p.add_argument("--dtype", choices=("float32", "float16"), help="stored feature dtype (default float32)")
    p.add_argument("--on-bad-image", choices=("skip", "error"), help="unreadable image: skip it (default) or stop")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store instead of resuming it")
    p.add_argument("--verify", action="store_true", help="re-read every finished chunk and recompute those damaged "
                   "since (a rerun always checks their files and sizes)")
    p.add_argument("--cluster", help="run on Dask: 'local' (a LocalCluster) or a scheduler address")
    p.add_argument("--workers", type=int, default=2, help="workers of a local Dask cluster (default 2)")
    dataset = p.add_argument_group("dataset options")
    dataset.add_argument("--split", help="shapes world / Hugging Face split")
    dataset.add_argument("--limit", type=int, help="use the first N images")
    dataset.add_argument("--max-objects", type=int, help="shapes world: objects per image at most (1: unambiguous labels)")
    dataset.add_argument("--dataset-seed", type=int, help="shapes world generation seed (default 0)")
    dataset.add_argument("--image-column", help="Hugging Face image column (default image)")
    dataset.add_argument("--label-column", action="append", help="Hugging Face label column (repeatable)")
    dataset.add_argument("--caption-column", help="Hugging Face caption column")
    p.set_defaults(func=run_extract)
    return p


def add_probe(sub) -> argparse.ArgumentParser:
    """Add ``probe`` to ``sub``."""
    p = sub.add_parser(
        "probe",
        help="train linear and MLP probes per site x timestep on a feature store; print the accuracy grid",
        description="Split images into train/val/test (fixed seed), train probes on train, choose weight decay on "
        "val, report test accuracy per label x site x timestep x probe kind.",
    )
    p.add_argument("store", help="a feature store written by workbench extract")
    p.add_argument("--label", action="append", help="label to probe (repeatable; default: every label)")
    p.add_argument("--sites", help="comma-separated sites (default: all in the store)")
    p.add_argument("--probes", default="linear,mlp", help="comma-separated: linear, mlp (default both)")
    p.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions (default 0.6,0.2,0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--html", help="write the heatmaps (plotly) to this HTML file")
    p.add_argument("--csv", help="write the grid as a table to this CSV file")
    p.set_defaults(func=run_probe)
    return p


def extract_options(args) -> dict:
    """The job options from parsed flags over the --config file, as a dict for ``build_config``."""
    from workbench.features import load_config

    data = load_config(args.config) if args.config else {}
    dataset = data.pop("dataset", None)
    dataset = {"kind": "shapes"} if dataset is None else dataset
    if isinstance(dataset, str):
        from workbench.features import DatasetSpec

        dataset = DatasetSpec.parse(dataset).__dict__.copy()
    if args.dataset is not None:
        from workbench.features import DatasetSpec

        dataset = DatasetSpec.parse(args.dataset).__dict__.copy()
    for flag, field in _DATASET_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            dataset[field] = value
    data["dataset"] = dataset
    for flag in ("model", "timesteps", "out", "seed", "draws", "pooling", "pool_size", "prompt", "class_template",
                 "batch_size", "dtype", "on_bad_image", "threads"):
        value = getattr(args, flag)
        if value is not None:
            data[flag] = value
    if args.sites:
        data["sites"] = [s.strip() for item in args.sites for s in item.split(",") if s.strip()]
    if args.no_progress:
        data["progress"] = False
    return data


def run_extract(args) -> None:
    from workbench.features import extract, open_features

    options = extract_options(args)
    report = extract(options, cluster=args.cluster, workers=args.workers, overwrite=args.overwrite,
                     verify=args.verify, resume=resume_command(getattr(args, "argv", None)))
    print(report)
    ds = open_features(report.out, require_complete=False)
    invalid = ds["image_id"].values[~ds["valid"].values & _done_images(ds)]
    if len(invalid):
        print(f"{len(invalid)} image(s) in the store could not be read: {', '.join(map(str, invalid[:10]))}"
              + (" ..." if len(invalid) > 10 else ""))


def resume_command(argv: list[str] | None) -> str | None:
    """The command that continues this job: the same one, without --overwrite (which would start
    over) and --verify (done once is enough)."""
    import shlex

    if argv is None:
        return None
    return shlex.join(["workbench", *[a for a in argv if a not in ("--overwrite", "--verify")]])


def _done_images(ds):
    import numpy as np

    batch = int(ds.attrs["batch_size"])
    return np.repeat(ds["done"].values, batch)[: ds.sizes["image"]]


def run_probe(args) -> None:
    import pandas as pd

    from workbench.analysis.probe import heatmap, peaks, probe
    from workbench.features import open_features

    ds = open_features(args.store)
    labels = args.label or [v for v in ds.data_vars if ds[v].dims == ("image",) and "classes" in ds[v].attrs]
    split = [float(x) for x in args.split.split(",")]
    sites = [s.strip() for s in args.sites.split(",")] if args.sites else None
    grid = probe(ds, labels, sites=sites, probes=[p.strip() for p in args.probes.split(",")], split=split,
                 seed=args.seed)
    table = grid["accuracy"].to_dataframe().reset_index()
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 70):
        for (label, kind), part in table.groupby(["label", "probe"], sort=False):
            chance = float(grid["chance"].sel(label=label))
            print(f"\n{label} ({kind} probe; chance {chance:.3f}), test accuracy:")
            print(part.pivot(index="site", columns="timestep", values="accuracy").reindex(grid["site"].values)
                  .round(3).to_string())
        print("\npeaks:")
        print(peaks(grid).round(3).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.html:
        heatmap(grid, title=f"probe accuracy: {Path(args.store).name}").write_html(args.html)
        print(f"wrote {args.html}")

