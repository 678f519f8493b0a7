"""Issue-4 studies on the reference models, at full size: attention segmentation scored on
shapes-world masks (both models, every layer, several timesteps) and attention-reuse editing of
toy-mmdit against the prompt-swap baseline. Writes JSON results and heatmaps under
``docs/results/`` and prints markdown tables for ``docs/attention.md``.

    python benchmarks/attention_studies.py --images 200 --pairs 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import workbench as wb
from workbench.analysis.editing import compare_methods
from workbench.analysis.segmentation import best_cells, segmentation_scores
from workbench.data import generate
from workbench.models.judge import load_judge

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def heatmap(scores: xr.Dataset, path: Path) -> None:
    import plotly.express as px

    variants = [v for v in scores.variant.values if not bool(scores.miou.sel(variant=v).isnull().all())]
    fig = px.imshow(scores.miou.sel(variant=variants).values, facet_col=0, x=[str(t) for t in scores.timestep.values],
                    y=[str(layer) for layer in scores.layer.values], color_continuous_scale="Viridis", zmin=0,
                    zmax=float(np.nanmax(scores.miou.values)), labels=dict(x="timestep", y="layer", color="mIoU"),
                    title=f"{scores.attrs['model']}: attention segmentation mIoU ({scores.attrs['images']} images)",
                    height=320 + 14 * scores.sizes["layer"], width=360 * len(variants))
    for i, v in enumerate(variants):
        fig.layout.annotations[i].text = str(v)
    fig.write_html(path.with_suffix(".html"), include_plotlyjs="cdn")


def markdown_tables() -> str:
    """The tables of docs/attention.md, from the saved results."""
    out = []
    for name in ("toy-mmdit", "toy-unet"):
        scores = xr.Dataset.from_dict(json.loads((RESULTS / f"segmentation_{name}.json").read_text()))
        out.append(f"### {name}: best per map ({scores.attrs['images']} images)\n")
        out.append("| map | layer | timestep | mIoU | pixel acc |\n| --- | --- | --- | --- | --- |")
        out += [f"| {b['variant']} | `{b['layer']}` | {b['timestep']} | {b['miou']:.3f} | {b['pixel_accuracy']:.3f} |"
                for b in best_cells(scores)]
        for variant in scores.variant.values:
            grid = scores.miou.isel(variant=list(scores.variant.values).index(variant))
            out.append(f"\n{name}, {variant}, mIoU per layer and timestep:\n")
            out.append("| layer | " + " | ".join(f"t={int(t)}" for t in scores.timestep.values) + " |")
            out.append("|" + " --- |" * (1 + scores.sizes["timestep"]))
            out += [f"| `{layer}` | " + " | ".join(f"{v:.3f}" for v in grid.values[i]) + " |"
                    for i, layer in enumerate(scores.layer.values)]
        out.append("")
    path = RESULTS / "editing_toy-mmdit.json"
    if path.exists():
        edits = xr.Dataset.from_dict(json.loads(path.read_text())).scores.to_pandas()
        out.append("| method | edit success | object mask IoU | background change |\n| --- | --- | --- | --- |")
        out += [f"| {m} | {r['edit_success']:.2f} | {r['mask_iou']:.3f} | {r['background_change']:.4f} |"
                for m, r in edits.iterrows()]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--timesteps", default="100,300,500,700,900")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reuse-steps", type=int, default=10, help="steps whose attention the edit reuses")
    parser.add_argument("--skip-editing", action="store_true")
    parser.add_argument("--tables", action="store_true", help="only print the markdown tables of the saved results")
    args = parser.parse_args(argv)
    if args.tables:
        print(markdown_tables())
        return
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    scenes = generate(args.images, split="test", seed=0)
    summary = {}
    for name in ("toy-mmdit", "toy-unet"):
        model = wb.load(name)
        start = time.perf_counter()
        scores = segmentation_scores(model, scenes, timesteps=timesteps)
        elapsed = time.perf_counter() - start
        (RESULTS / f"segmentation_{name}.json").write_text(json.dumps(scores.to_dict(), indent=1))
        heatmap(scores, RESULTS / f"segmentation_{name}")
        summary[name] = {"best": best_cells(scores), "seconds": elapsed,
                         "mean_over_layers": {str(v): scores.miou.sel(variant=v).mean("layer").round(3).values.tolist()
                                              for v in scores.variant.values}}
        print(f"\n### {name} ({args.images} images, {elapsed:.0f} s)\n")
        print("| variant | best layer | timestep | mIoU | pixel acc |\n| --- | --- | --- | --- | --- |")
        for row in summary[name]["best"]:
            print(f"| {row['variant']} | {row['layer']} | {row['timestep']} | {row['miou']:.3f} | {row['pixel_accuracy']:.3f} |")
    if not args.skip_editing:
        model, judge = wb.load("toy-mmdit"), load_judge()
        start = time.perf_counter()
        edits = compare_methods(model, judge, n_pairs=args.pairs, steps=args.steps, reuse_steps=args.reuse_steps)
        summary["editing"] = {"seconds": time.perf_counter() - start, "scores": edits.scores.to_pandas().round(4).to_dict()}
        (RESULTS / "editing_toy-mmdit.json").write_text(json.dumps(edits.to_dict(), indent=1))
        print(f"\n### editing toy-mmdit ({args.pairs} pairs)\n")
        print("| method | edit success | object mask IoU | background change |\n| --- | --- | --- | --- |")
        for method, row in edits.scores.to_pandas().iterrows():
            print(f"| {method} | {row['edit_success']:.2f} | {row['mask_iou']:.3f} | {row['background_change']:.4f} |")
    (RESULTS / "attention_summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
