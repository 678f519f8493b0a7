"""The localization study's report: its tables from the store ``workbench localize`` writes (pure
functions), the shipped results (:func:`export`, :func:`open_results`), and the tables of
docs/localization.md.

Every figure is on *qualifying* pairs only (the judge reads the unpatched target as glyph A and
the source as glyph B), selected on the validation split and reported on the test split.

The doc tables come from the shipped results (no model runs):

* the study section, from ``workbench localize`` (``localization_<model>.zarr`` and ``.json``,
  written by :func:`export`);
* attribution patching and its head pairs, from ``python -m workbench.studies.localization.attribution_study``
  (``attribution_<model>.json``);
* the applications (editing against attention reuse, prevention of banned glyphs), from
  ``python -m workbench.studies.localization.applications`` (``text_applications_<model>.json``).

Nothing in those tables is typed in. The results folder is ``docs/results`` or
``$WORKBENCH_RESULTS``; a model whose files are missing is left out of a table.

    python -m workbench.studies.localization.report              # print the tables
    python -m workbench.studies.localization.report --update-doc  # write them into docs/localization.md
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from ...analysis.stats import wilson
from ...results import results_dir
from ..docs import report_main
from .protocol import greedy_head_set, smallest_layer_set

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


MODELS = ("toy-unet", "toy-mmdit")
UNIT = {"toy-unet": "layer", "toy-mmdit": "block"}  # what a text layer is called in each model
NEGATIVE_FORMS = {"glyph": '`"K"`', "object": '`the letter "K"`', "prompt": "the whole prompt"}


def _load(kind: str) -> dict:
    """``<kind>_<model>.json`` of every model that has one."""
    found = {}
    for name in MODELS:
        path = results_dir() / f"{kind}_{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _num(x, digits: int = 2) -> str:
    """A correlation or ratio; undefined (a constant side) as n/a; no "-0.00"."""
    if x is None:
        return "n/a"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, cells in rows:
        line = f"| {label} | " + " | ".join(cells) + " |"
        while "|  |" in line:  # an empty cell is written "| |"
            line = line.replace("|  |", "| |")
        out.append(line)
    return "\n".join(out)


def _share(x: float) -> str:
    return f"{100 * x:.2f}%"


def summary_table(results: dict) -> str:
    """The study's answers side by side, one column per model."""
    rows = {
        "pairs (qualifying val / test)": lambda s, g: (f"{s['pairs']} ({s['qualifying_pairs']['validation']} / "
                                                       f"{s['qualifying_pairs']['test']})"),
        "text layers": lambda s, g: str(len(g["layer_module"])),
        "best layer (validation)": lambda s, g: f"{s['best_layer']}: `{s['best_layer_module']}`",
        "best start step": lambda s, g: str(s["best_start"]),
        "best layer edit success (val / test)": lambda s, g: (f"{s['best_validation_success']:.3f} / "
                                                              f"{s['best_test_success']:.3f}"),
        "best layer parameter share": lambda s, g: _share(s["best_layer_parameter_share"]),
        "single heads, edit success (test)": lambda s, g: ", ".join(
            f"h{h}: {v:.3f}" for h, v in s["head_success_test"].items()),
        "greedy head set keeping >= 90% of the layer": lambda s, g: (
            f"{s['head_set']} (test {s['head_set_test_success']:.3f}, share {_share(s['head_set_parameter_share'])})"),
        "full prompt swap edit success (test)": lambda s, g: f"{s['full_prompt_swap_test_success']:.3f}",
        "smallest layer set >= 90% of it": lambda s, g: (
            "none of the measured sets" if s["layer_set"] is None else
            f"{s['layer_set']['layers']} (val {s['layer_set']['validation_success']:.3f}, test "
            f"{s['layer_set']['test_success']:.3f}, share {_share(s['layer_set']['parameter_share'])})"),
        "all text layers' share": lambda s, g: _share(s["all_layers_parameter_share"]),
    }
    names = [m for m in MODELS if m in results]
    return _table(["", *names], [(label, [cell(results[m][2], results[m][0]) for m in names])
                                 for label, cell in rows.items()])


def heatmap_table(name: str, summary: dict) -> str:
    heat = summary["heatmap_test"]
    starts = sorted({int(s) for row in heat.values() for s in row})
    rows = [(f"layer {layer}", [f"{row[str(s)]:.3f}" for s in starts])  # JSON keys are strings
            for layer, row in sorted(heat.items(), key=lambda kv: int(kv[0]))]
    return (f"### {name}: edit success per layer x start step (test, {summary['qualifying_pairs']['test']} pairs)\n\n"
            + _table([name, *(f"from step {s}" for s in starts)], rows))


def baselines_table(name: str, grid, focus, summary: dict) -> str:
    """The best layer and all layers from every start, contiguous layer ranges from step 0, and
    the prompt swap from each start, on test pairs."""
    frame = pd.concat([variant_table(grid), variant_table(focus)])
    frame = frame[frame["heads"] == ""]
    every = "+".join(str(i) for i in range(len(grid["layer_module"])))
    best = str(summary["best_layer"])
    chosen = frame[(frame["layers"] == best) | (frame["layers"] == every)
                   | ((frame["layers"].str.contains(r"\+")) & (frame["start"] == 0))]
    chosen = chosen[~chosen.index.duplicated()]
    chosen = chosen.assign(_all=chosen["layers"] == every, _single=chosen["layers"] == best)
    chosen = chosen.sort_values(["_single", "_all", "layers", "start"], ascending=[False, False, True, True])
    metrics = ["success", "colour_kept", "rest_kept", "psnr", "ssim"]
    rows = [(f"K/V patch L{row['layers']}@{row['start']}", [f"{row[m]:.3f}" for m in metrics])
            for _, row in chosen.iterrows()]
    rows += [(label, [f"{row[m]:.3f}" for m in metrics]) for label, row in swap_table(grid).iterrows()]
    return (f"### {name}: editing against baselines (test)\n\n"
            "K/V patch `L<layers>@<start>`; PSNR is the median, dB, outside the glyphs.\n\n"
            + _table([name, *metrics], rows))


# --- attribution patching (attribution_<model>.json) -------------------------------------------


def _top1(name: str, comparison: dict) -> str:
    unit = UNIT.get(name, "layer")
    a, b = comparison["top3_attribution"][0], comparison["top3_activation"][0]
    return f"top-1 agrees ({unit} {a})" if a == b else f"top-1 differs ({unit} {a} vs {b})"


def _argmax(values: list) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _attribution_rows(name: str, report: dict, summary: dict | None) -> dict[str, str]:
    """One model's column of the attribution table: row label -> cell. A figure the report
    does not hold drops its row (KeyError), it is never filled in."""
    test, val = report["agreement"]["test"], report["agreement"]["validation"]
    unit = UNIT.get(name, "layer")
    first, later = report["starts"][0], report["starts"][1:]
    cells = {}

    def row(label, cell):
        try:
            cells[label] = cell()
        except (KeyError, IndexError, TypeError):
            pass

    def layers(part, start):
        return part[f"layers_from_{start}"]

    row(f"Spearman, layers from step {first}: vs same metric / vs edit success", lambda: (
        f"**{_num(layers(test, first)['vs_gap']['spearman'])}** / {_num(layers(test, first)['vs_success']['spearman'])}"
        f" (validation {_num(layers(val, first)['vs_gap']['spearman'])} / "
        f"{_num(layers(val, first)['vs_success']['spearman'])})"))
    row(f"top-3 overlap, layers from step {first} (chance)", lambda: (
        f"{layers(test, first)['vs_gap']['top3_overlap']} of {len(layers(test, first)['vs_gap']['top3_attribution'])}"
        f" ({layers(test, first)['vs_gap']['top3_chance']:.2f}); {_top1(name, layers(test, first)['vs_gap'])}"))
    row("Spearman, layers from step " + " / ".join(str(s) for s in later),
        lambda: " / ".join(_num(layers(test, s)["vs_gap"]["spearman"]) for s in later))
    row("Spearman, all layer x start cells", lambda: (
        f"{_num(test['layer_x_start']['vs_gap']['spearman'])} ({test['layer_x_start']['vs_gap']['items']} cells; "
        f"validation {_num(val['layer_x_start']['vs_gap']['spearman'])})"))

    def heads_cell():
        heads, heads_val = test["best_layer_heads"], val["best_layer_heads"]
        a, b = _argmax(heads["attribution"]), _argmax(heads["activation_gap"])
        top = f"top-1 agrees (head {a})" if a == b else f"top-1 differs (head {a} vs {b})"
        return (f"{_num(heads['vs_gap']['spearman'])} ({heads['vs_gap']['items']} heads; validation "
                f"{_num(heads_val['vs_gap']['spearman'])}); {top}")

    row("Spearman, heads of the best layer", heads_cell)
    row("Spearman, all heads; top-3 overlap (chance)", lambda: (
        f"{_num(test['all_heads']['vs_gap']['spearman'])} ({test['all_heads']['vs_gap']['items']} heads); "
        f"{test['all_heads']['vs_gap']['top3_overlap']} ({test['all_heads']['vs_gap']['top3_chance']:.2f})"))
    row("per pair and layer: Pearson / Spearman, estimate vs actual; signs agree", lambda: (
        f"{_num(test['per_pair_layers']['pearson'])} / {_num(test['per_pair_layers']['spearman'])}; "
        f"{test['per_pair_layers']['sign_agrees']:.0%}"))

    def selection_cell():
        sel = report["selection"]
        a, b = sel["attribution_best_layer_validation"], sel["activation_best_layer_validation"]
        text = (f"{unit} {a}: {sel['attribution_pick_test_success']:.3f} / "
                f"{unit} {b}: {sel['activation_pick_test_success']:.3f}")
        if (summary is not None and b == summary["best_layer"]
                and f"{summary['best_test_success']:.3f}" != f"{sel['activation_pick_test_success']:.3f}"):
            text += f" (recomputed; the store reads {summary['best_test_success']:.3f})"
        return text

    row("best layer chosen on validation by attribution / by activation: its test success", selection_cell)
    cost = report["cost"]
    attr, act = cost["attribution"], cost["activation"]
    row("cost: attribution (calls + backward passes, CPU s)",
        lambda: f"{attr['calls']} + {attr['backward_passes']}, {attr['cpu_s']:.1f} s")
    row(f"activation, layers x {len(report['starts'])} starts (calls, CPU s)", lambda: (
        f"{act['layers']['calls']}, {act['layers']['cpu_s']:.1f} s (**{cost['cpu_ratio_layers']:.1f}x**)"))
    row(f"activation, + every head from step {first}", lambda: (
        f"{act['layers']['calls'] + act['heads']['calls']}, {act['layers']['cpu_s'] + act['heads']['cpu_s']:.1f} s "
        f"(**{cost['cpu_ratio_layers_and_heads']:.1f}x**; calls {cost['calls_ratio_layers_and_heads']:.1f}x, "
        f"rows {cost['rows_ratio_layers_and_heads']:.1f}x)"))
    return cells


def attribution_table(reports: dict, summaries: dict) -> str:
    names = list(reports)
    columns = {name: _attribution_rows(name, reports[name], summaries.get(name)) for name in names}
    labels = [label for label in dict.fromkeys(k for c in columns.values() for k in c)
              if all(label in columns[name] for name in names)]
    header = ["test pairs"]
    for name in names:
        report = reports[name]
        heads = sorted(set(report["heads"].values()))
        header.append(f"{name} ({report['pairs']['test']}; {len(report['layer_modules'])} {UNIT.get(name, 'layer')}s"
                      f" x {'/'.join(str(h) for h in heads)} heads)")
    return _table(header, [(label, [columns[name][label] for name in names]) for label in labels])


def head_pairs_table(reports: dict, stores: dict) -> str:
    """Every head pair of the best layer (test), and the whole layer: its store success and PSNR,
    its recomputed logit-gap change."""
    names = [n for n in reports if "head_pairs" in reports[n]]
    found = {}
    for name in names:
        pairs = reports[name]["head_pairs"]
        for variant in pairs["variants"].values():
            found.setdefault(tuple(variant["heads"]), {})[name] = variant
    header = ["heads"]
    for name in names:
        pairs = reports[name]["head_pairs"]
        header += [f"{name} {UNIT.get(name, 'layer')} {pairs['layer']}: success", "logit-gap change", "PSNR"]
    rows = []
    for heads in sorted(found):
        cells = []
        for name in names:
            v = found[heads].get(name)
            cells += ([f"{v['success_test']:.3f}", f"{v['gap_test']:.2f}", f"{v['psnr_median_test']:.1f}"]
                      if v else ["", "", ""])
        rows.append(("+".join(str(h) for h in heads), cells))
    whole = []
    for name in names:
        pairs = reports[name]["head_pairs"]
        layer, start = pairs["layer"], pairs["start"]
        gap = reports[name]["agreement"]["test"][f"layers_from_{start}"]["activation_gap"][layer]
        psnr = ""
        if name in stores:
            frame = variant_table(stores[name][0])
            match = frame[(frame["layers"] == str(layer)) & (frame["start"] == start) & (frame["heads"] == "")]
            psnr = f"{match['psnr'].iloc[0]:.1f}" if len(match) else ""
        whole += [f"{pairs['full_layer_success']['test']:.3f}", f"{gap:.2f}", psnr]
    rows.append(("whole layer", whole))
    return _table(header, rows)


# --- applications (text_applications_<model>.json) -----------------------------------------------


def _rate_interval(row: dict, key: str) -> str:
    """The Wilson interval of the rate ``row[key]`` over ``row["n"]`` items. Rates are counts over
    n, so the interval follows from the saved rate exactly; results saved before issue 23 hold a
    percentile bootstrap in ``<key>_ci``, which is zero-width at 0 and 1."""
    low, high = wilson(int(round(row[key] * row["n"])), int(row["n"]))
    return f"[{low:.2f}, {high:.2f}]"


def _layers(layers) -> str:
    return "+".join(str(i) for i in layers)


def editing_table(apps: dict, summaries: dict) -> str:
    """Test pairs: the prompt swap, K/V patches of the study (the best single layer, the layer set
    prevention chose, all layers) and every attention-reuse method at its validation-chosen r."""
    names = list(apps)
    rows_of = {name: apps[name]["editing"]["study_rows_test"] for name in names}

    def study(row: dict) -> list[str]:
        return [f"{row['success']:.3f}", f"{row['colour_kept']:.2f} / {row['rest_kept']:.2f}",
                f"{row['psnr']:.1f} / {row['ssim']:.3f}"]

    rows = []
    for label in ("prompt swap from step 0", "prompt swap from step 2"):
        if all(label in rows_of[n] for n in names):
            rows.append((label, sum((study(rows_of[n][label]) for n in names), [])))
    if all(n in summaries for n in names):
        starts = {summaries[n]["best_start"] for n in names}
        same = len(starts) == 1
        cells = []
        for n in names:
            best, start = summaries[n]["best_layer"], summaries[n]["best_start"]
            c = study(rows_of[n][f"K/V patch L{best}@{start}"])
            c[0] += f" (L{best})" if same else f" (L{best}@{start})"
            cells += c
        rows.append(("K/V patch, best single layer" + (f" @{starts.pop()}" if same else ""), cells))
    chosen = {n: _layers(apps[n]["prevention"]["layer_set"]) for n in names}
    every = {n: _layers(apps[n]["prevention"]["all_layers"]) for n in names}
    if all(f"K/V patch L{chosen[n]}@0" in rows_of[n] for n in names):
        rows.append(("K/V patch " + " / ".join(f"L{chosen[n]}@0" for n in names),
                     sum((study(rows_of[n][f"K/V patch L{chosen[n]}@0"]) for n in names), [])))
    if all(f"K/V patch L{every[n]}@0" in rows_of[n] for n in names):
        rows.append(("K/V patch all text layers @0",
                     sum((study(rows_of[n][f"K/V patch L{every[n]}@0"]) for n in names), [])))
    methods = list(dict.fromkeys(m for n in names for m in apps[n]["editing"]["methods"]))
    for i, method in enumerate(methods):
        cells, steps = [], []
        for n in names:
            entry = apps[n]["editing"]["methods"].get(method)
            if entry is None:
                cells += ["n/a", "", ""]
                continue
            r = entry["chosen_reuse_steps"]
            steps.append(str(r))
            t = entry["settings"][str(r)]["test"]
            cells += [f"{t['success']:.3f} {_rate_interval(t, 'success')}",
                      f"{t['colour_kept']:.2f} / {t['rest_kept']:.2f}", f"{t['psnr']:.1f} / {t['ssim']:.3f}"]
        rows.append((f"reuse {method} (r {'chosen:' if i == 0 else '='} {' / '.join(steps)})", cells))
    header = ["test pairs"]
    for n in names:
        header += [f"{n} success [95% CI]", "colour / rest kept", "PSNR / SSIM"]
    return _table(header, rows)


def prevention_table(apps: dict) -> str:
    """Test prompts: banned rate, PSNR median (both with their 95% intervals), colour / rest kept."""
    names = list(apps)
    prevention = {n: apps[n]["prevention"] for n in names}

    def method(n: str, kind: str) -> str:
        methods = prevention[n]["methods"]
        if kind == "chosen":
            return next(k for k in methods if k.endswith("(validation-chosen)"))
        if kind == "all":
            return next(k for k in methods if k.startswith("K/V patch all text layers"))
        if kind == "negative":
            return prevention[n]["negative_prompt_method"]
        return "none (unpatched)"

    def cells(n: str, kind: str, bold: bool = False) -> list[str]:
        t = prevention[n]["methods"][method(n, kind)]["test"]
        rate = f"**{t['banned']:.3f}**" if bold else f"{t['banned']:.3f}"
        if kind == "none":
            return [rate, "-", "-"]
        return [f"{rate} {_rate_interval(t, 'banned')}",
                f"{t['psnr_median']:.1f} [{t['psnr_median_ci'][0]:.1f}, {t['psnr_median_ci'][1]:.1f}]",
                f"{t['colour_kept']:.2f} / {t['rest_kept']:.2f}"]

    forms = [prevention[n]["negative_form_chosen"] for n in names]
    negative = (NEGATIVE_FORMS.get(forms[0], forms[0]) if len(set(forms)) == 1
                else " / ".join(f"{NEGATIVE_FORMS.get(f, f)}" for f in forms))
    rows = [("unpatched", sum((cells(n, "none") for n in names), [])),
            ("K/V patch, validation-chosen (" + " / ".join(f"L{_layers(prevention[n]['layer_set'])}" for n in names)
             + ")", sum((cells(n, "chosen", bold=True) for n in names), [])),
            ("K/V patch, all text layers", sum((cells(n, "all") for n in names), [])),
            (f"negative prompt ({negative})", sum((cells(n, "negative") for n in names), []))]
    header = ["test prompts"]
    for n in names:
        header += [f"{n} banned rate [95% CI]", "PSNR median [CI]", "colour / rest kept"]
    return _table(header, rows)


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def attribution_path_table(saved: dict) -> str:
    """The metric along one layer's patch path and what each estimate makes of it
    (``attribution_path_<model>.json`` of ``attribution_fd_scan --part path``)."""
    alphas = saved["alphas"]
    change = np.asarray(saved["path_metric_change"])  # (alpha, pair)
    derivative = np.asarray(saved["path_derivative"])
    first = np.asarray(saved["first_order"])
    fd = {row["eps"]: np.asarray(row["central"]) for row in saved["finite_differences"]}
    n, layer = saved["pairs"], saved["layer"]
    # where each pair's metric switches: the grid point at which it first reaches half its final change
    half = [alphas[int(np.argmax(column >= column[-1] / 2))] for column in change.T]
    switch = ", ".join(f"{a:g}" for a in sorted(half))
    ratio = f"{np.median(first / change[-1]):.1%}"
    out = [f"{n} test pairs, {saved['steps']} steps, layer {layer} (`{saved['layer_module']}`) from step 0; "
           "means over the pairs (metric: the judge's logit gap B - A).", "",
           "| | " + " | ".join(f"{a:g}" for a in alphas) + " |", "|---|" + "---|" * len(alphas),
           "| metric change from alpha = 0 | " + " | ".join(_signed(v) for v in change.mean(1)) + " |",
           "| its derivative (gradient . (KV_B - KV_A)) | " + " | ".join(_signed(v) for v in derivative.mean(1)) + " |",
           "", f"Per pair, the first alpha where the change passes half its final value: {switch}; the derivative "
           f"at alpha = 0 is {ratio} of the change at alpha = 1 (median over pairs).",
           "", "| estimate of layer " + f"{layer}'s effect | mean over pairs | largest gap to the finite difference |",
           "|---|---|---|"]
    for eps, values in fd.items():
        out.append(f"| central finite difference at alpha = +-{eps:g} (derivative at 0) | {_signed(values.mean())} | "
                   f"{np.abs(values - first).max():.3f} |")
    for row in saved["own_path_integrated"]:
        name = "first order (gradient at alpha = 0)" if row["points"] == 1 else             f"integrated gradients, {row['points']} points (trapezoid)"
        out.append(f"| {name} | {_signed(row['mean'])} | |")
    out.append(f"| actual: the metric's change at alpha = 1 (the activation patch) | {_signed(np.mean(saved['actual']))} | |")
    out += ["", "Every layer, the joint path (all layers move together; `attribute(path_points=n)`), against each "
            "layer's own activation patch on the same pairs:", "",
            "| points | " + " | ".join(f"layer {j}" for j in saved["layers"]) +
            " | Spearman vs activation | top layer | per pair: top layer agrees [95% CI] | sum over layers |",
            "|---|" + "---|" * (len(saved["layers"]) + 4)]
    for row in saved["joint_path_ranking"]:
        name = "1 (first order)" if row["points"] == 1 else str(row["points"])
        rho = "n/a" if row["spearman"] is None else f"{row['spearman']:+.2f}"
        agree = row["top1_agrees_per_pair"]
        low, high = wilson(agree, n)
        out.append(f"| {name} | " + " | ".join(_signed(v) for v in row["estimate_means"]) +
                   f" | {rho} | {row['top1_attribution']} | {agree} of {n} [{low:.2f}, {high:.2f}] | "
                   f"{_signed(row['sum_over_layers_mean'])} |")
    out.append("| activation patch, each layer alone | " +
               " | ".join(_signed(v) for v in saved["activation_per_layer_means"]) +
               f" | | {saved['joint_path_ranking'][0]['top1_activation']} | | all layers at once: "
               f"{_signed(saved['joint_all_layers_change_mean'])} |")
    return "\n".join(out)


def attribution_ig_table(saved: dict) -> str:
    """Integrated gradients on all the study's test pairs (``attribution_ig_<model>.json`` of
    ``attribution_fd_scan --part ranking``): each layer's estimate against its activation patch."""
    n, layers = saved["pairs"], saved["layers"]
    out = [f"The same on all {n} qualifying test pairs of the study (joint path, from step 0; attribution "
           f"{saved['attribution_cpu_s']:.0f} CPU s for all {saved['points']} points):", "",
           "| points | " + " | ".join(f"layer {j}" for j in layers) +
           " | Spearman vs activation | top-3 overlap | top layer | per pair: top layer agrees [95% CI] |",
           "|---|" + "---|" * (len(layers) + 4)]
    for row in saved["rows"]:
        name = "1 (first order)" if row["points"] == 1 else str(row["points"])
        rho = "n/a" if row["spearman"] is None else f"{row['spearman']:+.2f}"
        low, high = wilson(row["top1_agrees_per_pair"], n)
        out.append(f"| {name} | " + " | ".join(_signed(v) for v in row["estimate_means"]) +
                   f" | {rho} | {row['top3_overlap']} of 3 | {row['top1_attribution']} | "
                   f"{row['top1_agrees_per_pair']} of {n} [{low:.2f}, {high:.2f}] |")
    out.append("| activation patch, each layer alone | " +
               " | ".join(_signed(v) for v in saved["activation_per_layer_means"]) +
               f" | | | {saved['top1_activation']} | |")
    return "\n".join(out)


# --- all blocks ----------------------------------------------------------------------------------


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text: the blocks of docs/localization.md whose results are saved."""
    stores = {}
    for name in MODELS:
        try:
            stores[name] = open_results(name)
        except FileNotFoundError:
            continue
    parts = ["### Localization (selected on validation, reported on test)\n", summary_table(stores)]
    for name, (grid, focus, summary) in stores.items():
        parts += ["", heatmap_table(name, summary)]
    for name, (grid, focus, summary) in stores.items():
        parts += ["", baselines_table(name, grid, focus, summary)]
    out = {"localization-study": "\n".join(parts)}
    summaries = {name: summary for name, (_, _, summary) in stores.items()}  # the JSON open_results read
    reports = _load("attribution")
    if reports:
        out["localization-attribution"] = attribution_table(reports, summaries)
        out["localization-head-pairs"] = head_pairs_table(reports, stores)
    paths = _load("attribution_path")
    igs = _load("attribution_ig")
    if "toy-unet" in paths:
        text = attribution_path_table(paths["toy-unet"])
        if "toy-unet" in igs:
            text += "\n\n" + attribution_ig_table(igs["toy-unet"])
        out["localization-attribution-path"] = text
    apps = _load("text_applications")
    if apps:
        out["localization-editing"] = editing_table(apps, summaries)
        out["localization-prevention"] = prevention_table(apps)
    return {("localization.md", key): text for key, text in out.items()}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
