"""The attention studies' report: the tables of docs/attention.md and the segmentation heatmaps,
from the saved results (``segmentation_<model>.json``, ``editing_toy-mmdit.json``, written by
:mod:`workbench.studies.attention.job`; ``peers_daam.json``, written by :mod:`.daam`). No model runs here.

    python -m workbench.studies.attention.report               # print the tables
    python -m workbench.studies.attention.report --update-doc  # write them into docs/attention.md
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ...results import results_dir
from ..docs import report_main
from ...analysis.stats import wilson
from .editing import RATES

MODELS = ("toy-mmdit", "toy-unet")


def heatmap(cells: xr.Dataset, thresholds: dict[str, str], path, title: str) -> None:
    """Test mIoU per layer and timestep, per variant at the threshold chosen on validation."""
    from pathlib import Path

    import plotly.express as px

    variants = list(thresholds)
    grid = np.stack([cells.iou.sel(variant=v, threshold=thresholds[v]).values for v in variants])
    fig = px.imshow(grid, facet_col=0, x=[str(t) for t in cells.timestep.values],
                    y=[str(layer) for layer in cells.layer.values], color_continuous_scale="Viridis", zmin=0,
                    zmax=float(np.nanmax(grid)), labels=dict(x="timestep", y="layer", color="test mIoU"), title=title,
                    height=320 + 14 * cells.sizes["layer"], width=360 * len(variants))
    for i, v in enumerate(variants):
        fig.layout.annotations[i].text = f"{v} (threshold {thresholds[v]})"
    fig.write_html(path, include_plotlyjs="cdn", div_id=Path(path).stem)


def _fmt(row: dict) -> str:
    return (f"| {row['method']} | {row['setting']} | {row['val_miou']:.3f} | **{row['test_miou']:.3f}** "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] | {row['best_on_test']:.3f} | {row['test_pixel_accuracy']:.3f} |")


def segmentation_tables() -> str:
    out = []
    for name in MODELS:
        path = results_dir() / f"segmentation_{name}.json"
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        for caption_kind, result in saved["results"].items():
            sel, objects = result["selection"], result["objects"]
            out.append(f"#### {name}, captions {caption_kind} ({saved['images_per_split']} val + "
                       f"{saved['images_per_split']} test images; {objects['val']} / {objects['test']} objects)\n")
            out.append("| method | setting (chosen on val) | val mIoU | test mIoU [95% CI] | best cell on test "
                       "(optimistic) | test pixel acc |\n| --- | --- | --- | --- | --- | --- |")
            out += [_fmt(row) for row in sel["rows"]]
            gap = sel["prior_gap"]
            verdict = ("beats" if gap["beats_prior"] else "loses to" if gap["loses_to_prior"] else
                       "is not distinguishable from")
            out.append(f"\nBest attention map (chosen on val: {gap['method']}) minus the position prior, paired over "
                       f"test objects: {gap['difference']:+.3f} [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]: "
                       f"attention **{verdict}** the prior.\n")
    return "\n".join(out)


def grid_tables(name: str, caption_kind: str = "with positions") -> str:
    """Test mIoU per layer and timestep at each variant's validation-chosen threshold."""
    saved = json.loads((results_dir() / f"segmentation_{name}.json").read_text())["results"][caption_kind]
    cells = xr.Dataset.from_dict(saved["cells"]["test"])
    out = []
    for row in saved["selection"]["rows"]:
        if row["method"] not in cells.variant.values:
            continue
        threshold = row["setting"].rsplit("threshold ", 1)[1]
        grid = cells.iou.sel(variant=row["method"], threshold=threshold)
        out.append(f"\n{name}, {row['method']}, test mIoU per layer and timestep (threshold {threshold}):\n")
        out.append("| layer | " + " | ".join(f"t={int(t)}" for t in cells.timestep.values) + " |")
        out.append("|" + " --- |" * (1 + cells.sizes["timestep"]))
        out += [f"| `{layer}` | " + " | ".join(f"{v:.3f}" for v in grid.values[i]) + " |"
                for i, layer in enumerate(cells.layer.values)]
    return "\n".join(out)


def editing_tables() -> str:
    path = results_dir() / "editing_toy-mmdit.json"
    if not path.exists():
        return ""
    ds = xr.Dataset.from_dict(json.loads(path.read_text()))
    out = [f"{ds.attrs['pairs']} pairs; n per kind: " + ", ".join(
        f"{k} {int(n)}" for k, n in zip(ds.kind.values, ds.n.values)) + "\n"]
    for kind in ds.kind.values:
        out.append(f"\n**{kind} edits**\n")
        out.append("| method | edit success | shape/glyph right | colour right | IoU vs target mask "
                   "| background PSNR (dB) |\n| --- | --- | --- | --- | --- | --- |")
        for method in ds.method.values:
            cells = []
            for score in ds.score.values:
                m, lo, hi = (float(ds[v].sel({"method": method, "kind": kind, "score": score})) for v in ("mean", "ci_low", "ci_high"))
                if score in RATES:  # a rate is a count over n pairs: its Wilson interval follows exactly
                    n = int(ds.n.sel(kind=kind))
                    lo, hi = wilson(int(round(m * n)), n)
                digits = 1 if score == "background_psnr" else 2 if score != "target_iou" else 3
                cells.append(f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
    if "difference" in ds:
        how = ds.attrs.get("difference_interval", "percentile bootstrap of the per-pair differences (saved before "
                                                  "issue 23: rerun for Newcombe's paired interval on edit success)")
        out.append(f"\n**Each method minus prompt-swap, paired over all pairs** (95% CI: {how})\n")
        out.append("| method | edit success | IoU vs target mask | background PSNR (dB) |\n| --- | --- | --- | --- |")
        for method in ds.method.values:
            if method == "prompt-swap":
                continue
            cells = []
            for score, digits in (("edit_success", 2), ("target_iou", 3), ("background_psnr", 1)):
                where = {"method": method, "score": score, **({"kind": "all"} if "kind" in ds["difference"].dims else {})}
                m, lo, hi = (float(ds[v].sel(where)) for v in ("difference", "difference_low", "difference_high"))
                cells.append(f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def daam_table() -> str:
    """How far DAAM's word maps are from the default ones: Pearson correlation per word, over prompts."""
    result = json.loads((results_dir() / "peers_daam.json").read_text())
    q = result["pearson_quartiles"]
    return ("| model | prompts | words | Pearson median | quartiles | min |\n| --- | --- | --- | --- | --- | --- |\n"
            f"| {result['model']} | {result['prompts']} | {result['words']} | {result['pearson_median']:.3f} | "
            f"[{q[0]:.3f}, {q[1]:.3f}] | {result['pearson_min']:.3f} |")


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text."""
    return {("attention.md", "segmentation"): segmentation_tables(),
            ("attention.md", "segmentation-grids"): "\n".join(grid_tables(n) for n in MODELS),
            ("attention.md", "editing"): editing_tables(), ("attention.md", "peers-daam"): daam_table()}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
