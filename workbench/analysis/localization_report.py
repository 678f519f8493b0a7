"""The localization study's tables, from the store ``workbench localize`` writes (pure functions).

Every figure is on *qualifying* pairs only (the judge reads the unpatched target as glyph A and
the source as glyph B), selected on the validation split and reported on the test split.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from .localization import greedy_head_set, smallest_layer_set

METRICS = ("success", "colour_kept", "rest_kept", "psnr", "ssim")


def qualified(ds: xr.Dataset) -> xr.DataArray:
    """Pairs whose unpatched target and source render their glyphs as the judge reads them."""
    return (ds["target_read"] == ds["target_glyph"]) & (ds["source_read"] == ds["source_glyph"])


def split(ds: xr.Dataset, name: str) -> xr.Dataset:
    """The qualifying pairs of one split (``validation`` or ``test``)."""
    return ds.sel(pair=(ds["split"] == name) & qualified(ds))


def _single_layer(ds: xr.Dataset) -> xr.DataArray:
    return (ds["variant_heads"] == "") & (ds["variant_layers"].str.count(r"\+") == 0)


def heatmap(grid: xr.Dataset, metric: str = "success", part: str = "test") -> xr.DataArray:
    """(layer, start) mean of ``metric`` for single-layer patches, all heads."""
    ds = split(grid, part)
    single = ds.sel(variant=_single_layer(ds))
    values = single[metric].mean("pair")
    frame = pd.DataFrame({"layer": single["variant_layers"].astype(int).values,
                          "start": single["variant_start"].values, metric: values.values})
    table = frame.pivot(index="layer", columns="start", values=metric)
    return xr.DataArray(table.values, dims=("layer", "start"),
                        coords={"layer": table.index.values, "start": table.columns.values}, name=metric)


def variant_table(ds: xr.Dataset, part: str = "test") -> pd.DataFrame:
    """Per variant: the five metrics (means; PSNR as median, it is infinite for untouched images)."""
    sub = split(ds, part)
    rows = {}
    for metric in METRICS:
        values = sub[metric]
        rows[metric] = values.median("pair") if metric == "psnr" else values.mean("pair")
    frame = pd.DataFrame({k: v.values for k, v in rows.items()}, index=sub["variant"].values)
    frame.insert(0, "start", sub["variant_start"].values)
    frame.insert(0, "heads", sub["variant_heads"].values)
    frame.insert(0, "layers", sub["variant_layers"].values)
    frame["pairs"] = sub.sizes["pair"]
    return frame


def swap_table(grid: xr.Dataset, part: str = "test") -> pd.DataFrame:
    """The baseline "prompt swap from step k" (k = 0: the full prompt swap)."""
    sub = split(grid, part)
    frame = pd.DataFrame({m: (sub[f"swap_{m}"].median("pair") if m == "psnr" else sub[f"swap_{m}"].mean("pair")).values
                          for m in METRICS}, index=[f"prompt swap from step {k}" for k in sub["swap_start"].values])
    frame["pairs"] = sub.sizes["pair"]
    return frame


def summary(grid: xr.Dataset, focus: xr.Dataset, keep: float = 0.9) -> dict:
    """The study's answers: best layer and start (validation), per-head map, greedy head set
    keeping ``keep`` of the full-layer success, smallest layer set reaching ``keep`` of the full
    prompt swap, parameter shares; every success reported on test pairs."""
    chosen = json.loads(focus.attrs["chosen"])
    layer, start = chosen["best_layer"], chosen["best_start"]
    shares = grid["layer_share"].values
    val_grid, test_grid = split(grid, "validation"), split(grid, "test")
    val_focus, test_focus = split(focus, "validation"), split(focus, "test")

    def success(ds, label):
        return float(ds["success"].sel(variant=label).mean("pair"))

    full_label = f"L{layer}@{start}"
    n_heads = max(int(h) for hs in focus["variant_heads"].values if hs for h in hs.split("+")) + 1
    head_sets = {tuple(range(n_heads)): success(val_grid, full_label)}
    for label, heads, layers in zip(focus["variant"].values, focus["variant_heads"].values, focus["variant_layers"].values):
        if heads and layers == str(layer):
            head_sets[tuple(int(h) for h in heads.split("+"))] = success(val_focus, label)
    heads, val_head_success = greedy_head_set(head_sets, n_heads, keep * head_sets[tuple(range(n_heads))])
    head_label = full_label if len(heads) == n_heads else f"L{layer}h{'+'.join(map(str, heads))}@{start}"
    head_test = success(test_grid if len(heads) == n_heads else test_focus, head_label)

    layer_sets = {}
    for ds_val, ds in ((val_grid, grid), (val_focus, focus)):
        for label, hs, layers, s in zip(ds["variant"].values, ds["variant_heads"].values, ds["variant_layers"].values,
                                        ds["variant_start"].values):
            if not hs and s == 0:
                layer_sets[tuple(int(x) for x in layers.split("+"))] = (success(ds_val, label), label)
    swap_val = float(val_grid["swap_success"].sel(swap_start=0).mean("pair"))
    found = smallest_layer_set({k: v[0] for k, v in layer_sets.items()}, keep * swap_val)
    layer_set = None
    if found is not None:
        layers, val_success = found
        label = layer_sets[tuple(layers)][1]
        test_ds = test_grid if label in test_grid["variant"].values else test_focus
        layer_set = {"layers": layers, "modules": [str(grid["layer_module"].values[i]) for i in layers],
                     "validation_success": val_success, "test_success": success(test_ds, label),
                     "parameter_share": float(shares[layers].sum())}
    heat = heatmap(grid, part="test")
    return {
        "model": grid.attrs.get("model", ""),
        "steps": int(grid.attrs.get("steps", 0)),
        "pairs": int(grid.sizes["pair"]),
        "qualifying_pairs": {"validation": int(val_grid.sizes["pair"]), "test": int(test_grid.sizes["pair"])},
        "best_layer": layer, "best_layer_module": str(grid["layer_module"].values[layer]), "best_start": start,
        "best_validation_success": chosen["validation_success"], "best_test_success": success(test_grid, full_label),
        "best_layer_parameter_share": float(shares[layer]),
        "head_success_test": {int(h): success(test_focus, f"L{layer}h{h}@{start}") for h in range(n_heads)},
        "head_set": heads, "head_set_validation_success": val_head_success, "head_set_test_success": head_test,
        "head_set_parameter_share": float(shares[layer]) * len(heads) / n_heads,
        "full_prompt_swap_test_success": float(test_grid["swap_success"].sel(swap_start=0).mean("pair")),
        "layer_set": layer_set,
        "all_layers_parameter_share": float(shares.sum()),
        "heatmap_test": {int(l): {int(s): float(heat.sel(layer=l, start=s)) for s in heat["start"].values}
                         for l in heat["layer"].values},
    }


def results_dir():
    """Where shipped study results live: ``$WORKBENCH_RESULTS`` or ``docs/results`` of the checkout."""
    import os
    from pathlib import Path

    if os.environ.get("WORKBENCH_RESULTS"):
        return Path(os.environ["WORKBENCH_RESULTS"])
    return Path(__file__).resolve().parents[2] / "docs" / "results"


def export(store, name: str, folder=None) -> dict:
    """Ship a sweep's scores (no images) as ``localization_<name>.zarr`` and its summary as
    ``localization_<name>.json`` in the results folder; returns the summary."""
    from pathlib import Path

    folder = Path(folder) if folder is not None else results_dir()
    grid = xr.open_zarr(store, group="grid", consolidated=True).load()
    focus = xr.open_zarr(store, group="focus", consolidated=True).load()
    target = folder / f"localization_{name}.zarr"
    for group, ds in (("grid", grid), ("focus", focus)):
        small = ds.drop_vars([v for v in ds.data_vars if "image" in v])
        for variable in list(small.variables):
            small[variable].encoding = {}  # one chunk per variable: a handful of files to ship
        small.to_zarr(target, group=group, mode="w" if group == "grid" else "a", consolidated=True, zarr_format=2)
    result = summary(grid, focus)
    (folder / f"localization_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def open_results(name: str, folder=None) -> tuple[xr.Dataset, xr.Dataset, dict]:
    """The shipped grid, focus and summary of one model."""
    from pathlib import Path

    folder = Path(folder) if folder is not None else results_dir()
    store = folder / f"localization_{name}.zarr"
    grid = xr.open_zarr(store, group="grid", consolidated=True).load()
    focus = xr.open_zarr(store, group="focus", consolidated=True).load()
    return grid, focus, json.loads((folder / f"localization_{name}.json").read_text())
