"""Attribution patching against activation patching, side by side in one run, on the study's pairs.

    python -m workbench.studies.localization.attribution_study --model toy-unet [--store docs/results/localization_toy-unet.zarr]
                                                              [--out docs/results/attribution_toy-unet.json] [--pairs N]

On the qualifying pairs of the localization store (``workbench localize``; validation and test
splits as there, same steps and start steps), in one process, single-threaded torch:

1. **attribution** (``workbench.studies.localization.attribution.attribute``): per pair one source run (text K/V
   cached), one target run with autograd on and one backward pass of the glyph metric (the
   judge's logit for B minus A at the pair's position on the final image) -> first-order effects of
   every text layer x head x start step;
2. **activation patching, recomputed** with the sweep engine on the same pairs: every text layer x
   start step of the store's grid (all heads), and every single head of every layer from the best
   start; scored by the judge (edit success) and by the same metric; the store's own success for
   the grid variants is compared with the recomputed one;
3. **head pairs** in the best layer (chosen on validation in the store), swept with the engine.

Agreement is reported on test pairs; anything chosen is chosen on validation pairs. Writes
``docs/results/attribution_<model>.json``. A toy-unet run takes ~10-20 min on the shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from ... import load
from ...models.judge import load_judge
from ...results import results_dir
from . import attribution as A
from . import protocol as gp
from .job import open_sweep
from .patching import prompt_token_maps
from .protocol import greedy_head_set
from .report import qualified
from .sweeps import Variant, sweep

ROOT = Path(__file__).resolve().parents[3]  # the source checkout: the JSON names its store relative to it


def _mean(x, rows):
    return [float(v) for v in np.asarray(x)[rows].mean(0)]


def _agreement(estimate, actual, k=3) -> dict:
    """Spearman and top-k overlap of two per-item score vectors (means over pairs)."""
    n = len(estimate)
    out = {"items": n, "spearman": A.spearman(estimate, actual) if n >= 3 else None}
    if n > k:
        out.update({f"top{k}_overlap": A.top_k_overlap(estimate, actual, k), f"top{k}_chance": round(k * k / n, 2),
                    f"top{k}_attribution": A.top_k(estimate, k), f"top{k}_activation": A.top_k(actual, k)})
    out["top1_agrees"] = int(np.argmax(estimate)) == int(np.argmax(actual))
    return out


@dataclass
class StudyPairs:
    """The store's pairs as runs: captions, seeds, target -> source token maps, the glyph metric."""

    targets: list[str]
    sources: list[str]
    seeds: list[int]
    maps: np.ndarray
    metric: A.GlyphMetric
    target_scenes: list
    source_scenes: list


def study_pairs(model, judge, pairs) -> StudyPairs:
    """Rebuild the runs of the store's ``pairs`` (a selection of the grid's pair axis)."""
    cell = [gp.Cell(str(c), str(p), int(s)) for c, p, s in
            zip(pairs["colour"].values, pairs["position"].values, pairs["seed"].values)]
    targets = [gp.glyph_scene(str(g), c) for g, c in zip(pairs["target_glyph"].values, cell)]
    sources = [gp.glyph_scene(str(g), c) for g, c in zip(pairs["source_glyph"].values, cell)]
    t_caps, s_caps = [t.caption for t in targets], [s.caption for s in sources]
    maps = prompt_token_maps(model, t_caps, s_caps, [t.spans[0] for t in targets], [s.spans[0] for s in sources])
    metric = A.GlyphMetric(judge, [c.position for c in cell], [str(g) for g in pairs["target_glyph"].values],
                           [str(g) for g in pairs["source_glyph"].values])
    return StudyPairs(t_caps, s_caps, [c.seed for c in cell], maps, metric, targets, sources)


def run(model_name: str, store: Path, limit: int | None = None, batch: int = 25, sweep_batch: int = 128) -> dict:
    torch.set_num_threads(1)
    model, judge = load(model_name), load_judge()
    grid, focus = open_sweep(store, "grid"), open_sweep(store, "focus")
    steps = int(grid.attrs["steps"])
    chosen = json.loads(focus.attrs["chosen"])
    best_layer, best_start = int(chosen["best_layer"]), int(chosen["best_start"])
    single = (grid["variant_heads"] == "") & (grid["variant_layers"].str.count(r"\+") == 0)
    starts = sorted({int(s) for s in grid["variant_start"].values[single.values]})
    keep = np.flatnonzero(qualified(grid).values)
    if limit:
        keep = keep[:limit]
    pairs = grid.isel(pair=keep)
    split = pairs["split"].values
    val, test = np.flatnonzero(split == "validation"), np.flatnonzero(split == "test")
    glyphs = study_pairs(model, judge, pairs)
    t_caps, s_caps, seeds, maps, metric = glyphs.targets, glyphs.sources, glyphs.seeds, glyphs.maps, glyphs.metric
    masks = gp.glyph_masks(glyphs.target_scenes, glyphs.source_scenes)

    # 1. attribution: one source run, one target run with autograd, one backward pass per pair
    cpu0 = time.process_time()
    attr = A.attribute(model, t_caps, s_caps, seeds, metric, steps=steps, token_maps=maps, batch=batch)
    attr_cpu = time.process_time() - cpu0
    contrib = attr.contributions
    layers = [int(x) for x in contrib["layer"].values]
    heads = {layer: A.heads_of(contrib, layer) for layer in layers}

    # 2. activation patching with the engine, same pairs: layer x start grid, then every head
    layer_variants = [Variant((layer,), s) for layer in layers for s in starts]
    head_variants = [Variant((layer,), best_start, heads=(h,)) for layer in layers for h in range(heads[layer])]
    pair_variants = [Variant((best_layer,), best_start, heads=p) for p in combinations(range(heads[best_layer]), 2)]
    runs = {}
    for name, variants in (("layers", layer_variants), ("heads", head_variants), ("head_pairs", pair_variants)):
        cpu0 = time.process_time()
        result = sweep(model, t_caps, s_caps, seeds, variants, steps=steps, token_maps=maps, batch=sweep_batch)
        cpu = time.process_time() - cpu0
        scores = gp.score(judge, result.images, result.target, pairs, masks)
        gap = A.glyph_logit_gap(metric, result.images) - A.glyph_logit_gap(metric, result.target)[:, None]
        runs[name] = dict(variants=variants, result=result, scores=scores, gap=gap, cpu=cpu)
    clean_images = runs["layers"]["result"].target
    clean_gap_images = A.glyph_logit_gap(metric, clean_images)

    # the recomputed grid against the store's
    labels = [v.label for v in layer_variants]
    stored = pairs["success"].sel(variant=labels).values
    recomputed = runs["layers"]["scores"]["success"].values
    read_equal = float((pairs["read"].sel(variant=labels).values == runs["layers"]["scores"]["read"].values).mean())

    # estimates aligned with each run's variants
    def estimates(variants):
        return np.stack([A.variant_effect(contrib, v).values for v in variants], 1)  # (pair, variant)

    report = {"model": model_name, "store": str(store.relative_to(ROOT) if store.is_relative_to(ROOT) else store),
              "steps": steps, "starts": starts, "pairs": {"validation": len(val), "test": len(test)},
              "machine": platform.processor() or platform.machine(), "threads": 1,
              "metric": "judge name logit(B) - logit(A) at the pair's position on the final image",
              "best_layer": best_layer, "best_start": best_start,
              "layer_modules": [str(m) for m in contrib["layer_module"].values], "heads": heads,
              "store_check": {"grid_success_equal": float((stored == recomputed).mean()),
                              "grid_read_equal": read_equal},
              "clean_metric_check": float(np.abs(clean_gap_images - attr.clean).max())}

    # cost, side by side
    act = {name: dict(runs[name]["result"].cost.as_dict(), process_cpu_s=round(runs[name]["cpu"], 3),
                      variants=len(runs[name]["variants"])) for name in runs}
    attr_cost = dict(attr.cost.as_dict(), process_cpu_s=round(attr_cpu, 3), backward_passes=attr.backward_passes,
                     estimates_per_pair=int(sum(heads.values()) * steps + len(layers) * steps))
    both = act["layers"]["process_cpu_s"] + act["heads"]["process_cpu_s"]
    report["cost"] = {
        "attribution": attr_cost, "activation": act,
        "cpu_ratio_layers": round(act["layers"]["process_cpu_s"] / attr_cpu, 2),
        "cpu_ratio_layers_and_heads": round(both / attr_cpu, 2),
        "calls_ratio_layers_and_heads": round((act["layers"]["calls"] + act["heads"]["calls"]) / attr.cost.calls, 2),
        "rows_ratio_layers_and_heads": round((act["layers"]["rows"] + act["heads"]["rows"]) / attr.cost.rows, 2),
    }

    # agreement: per start step over layers, over all (layer, start) cells, over heads
    layer_est, layer_gap = estimates(layer_variants), runs["layers"]["gap"]
    layer_success = runs["layers"]["scores"]["success"].values.astype(float)
    agreement = {}
    for part, rows in (("validation", val), ("test", test)):
        entry = {}
        for s in starts:
            cols = [i for i, v in enumerate(layer_variants) if v.start == s]
            est, gap, suc = (_mean(x[:, cols], rows) for x in (layer_est, layer_gap, layer_success))
            entry[f"layers_from_{s}"] = {"attribution": est, "activation_gap": gap, "activation_success": suc,
                                         "vs_gap": _agreement(est, gap), "vs_success": _agreement(est, suc)}
        est, gap, suc = (_mean(x, rows) for x in (layer_est, layer_gap, layer_success))
        entry["layer_x_start"] = {"vs_gap": _agreement(est, gap), "vs_success": _agreement(est, suc)}
        h_est = estimates(head_variants)
        h_gap, h_suc = runs["heads"]["gap"], runs["heads"]["scores"]["success"].values.astype(float)
        est, gap, suc = (_mean(x, rows) for x in (h_est, h_gap, h_suc))
        entry["all_heads"] = {"labels": [v.label for v in head_variants], "attribution": est,
                              "activation_gap": gap, "activation_success": suc,
                              "vs_gap": _agreement(est, gap), "vs_success": _agreement(est, suc)}
        cols = [i for i, v in enumerate(head_variants) if v.layers[0] == best_layer]
        entry["best_layer_heads"] = {"attribution": [est[i] for i in cols], "activation_gap": [gap[i] for i in cols],
                                     "activation_success": [suc[i] for i in cols],
                                     "vs_gap": _agreement([est[i] for i in cols], [gap[i] for i in cols]),
                                     "vs_success": _agreement([est[i] for i in cols], [suc[i] for i in cols])}
        # per pair: how well the first-order estimate predicts each actual effect (layers, best start)
        cols = [i for i, v in enumerate(layer_variants) if v.start == best_start]
        x, y = layer_est[np.ix_(rows, cols)].ravel(), layer_gap[np.ix_(rows, cols)].ravel()
        entry["per_pair_layers"] = {"pearson": float(np.corrcoef(x, y)[0, 1]), "spearman": A.spearman(x, y),
                                    "sign_agrees": float(np.mean(np.sign(x) == np.sign(y))),
                                    "median_abs_estimate": float(np.median(np.abs(x))),
                                    "median_abs_actual": float(np.median(np.abs(y)))}
        agreement[part] = entry
    report["agreement"] = agreement

    # selection on validation, reported on test: the best layer by attribution vs by activation
    cols = [i for i, v in enumerate(layer_variants) if v.start == best_start]
    pick_attr = layers[int(np.argmax(_mean(layer_est[:, cols], val)))]
    pick_act = layers[int(np.argmax(_mean(layer_success[:, cols], val)))]
    test_success = dict(zip(layers, _mean(layer_success[:, cols], test)))
    report["selection"] = {"attribution_best_layer_validation": pick_attr,
                           "activation_best_layer_validation": pick_act,
                           "attribution_pick_test_success": test_success[pick_attr],
                           "activation_pick_test_success": test_success[pick_act],
                           "attribution_top3_validation": [layers[i] for i in A.top_k(_mean(layer_est[:, cols], val))]}

    # 3. head pairs in the best layer (engine sweep), with the store's singles and leave-one-out sets
    hp = runs["head_pairs"]
    pair_labels = [v.label for v in pair_variants]
    hp_est = estimates(pair_variants)
    table = {}
    for i, v in enumerate(pair_variants):
        table[v.label] = {"heads": list(v.heads),
                          **{f"{m}_{part}": float(hp["scores"][m].values[rows, i].mean())
                             for m in ("success", "colour_kept", "rest_kept") for part, rows in
                             (("validation", val), ("test", test))},
                          "psnr_median_test": float(np.median(hp["scores"]["psnr"].values[test, i])),
                          "gap_test": float(hp["gap"][test, i].mean()),
                          "attribution_test": float(hp_est[test, i].mean())}
    # the greedy head set keeping 90% of the full layer, with pairs now measured (validation), on test
    full = f"L{best_layer}@{best_start}"
    full_val = float(pairs["success"].sel(variant=full).values[val].mean())
    full_test = float(pairs["success"].sel(variant=full).values[test].mean())
    success_val, success_test = {}, {}
    fpairs = focus.isel(pair=keep)
    for label, hs in zip(fpairs["variant"].values, fpairs["variant_heads"].values):
        if hs and str(label).startswith(f"L{best_layer}h") and str(label).endswith(f"@{best_start}"):
            key = tuple(int(h) for h in str(hs).split("+"))
            success_val[key] = float(fpairs["success"].sel(variant=label).values[val].mean())
            success_test[key] = float(fpairs["success"].sel(variant=label).values[test].mean())
    for i, v in enumerate(pair_variants):
        success_val[v.heads] = float(hp["scores"]["success"].values[val, i].mean())
        success_test[v.heads] = float(hp["scores"]["success"].values[test, i].mean())
    success_val[tuple(range(heads[best_layer]))] = full_val
    success_test[tuple(range(heads[best_layer]))] = full_test
    head_set, set_val = greedy_head_set(success_val, heads[best_layer], 0.9 * full_val)
    best_pair = max(pair_variants, key=lambda v: (success_val[v.heads], -sum(v.heads)))
    report["head_pairs"] = {"layer": best_layer, "start": best_start, "variants": table, "labels": pair_labels,
                            "full_layer_success": {"validation": full_val, "test": full_test},
                            "best_pair_validation": list(best_pair.heads),
                            "best_pair_test_success": success_test[best_pair.heads],
                            "greedy_head_set": head_set, "greedy_validation_success": set_val,
                            "greedy_test_success": success_test.get(tuple(head_set)),
                            "vs_gap_test": _agreement(hp_est[test].mean(0), hp["gap"][test].mean(0), k=1)
                            if len(pair_variants) >= 3 else None}
    return report


def _finite(x):
    """NaN (a rank correlation against constant scores) as null: the JSON stays standard."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--pairs", type=int, default=None, help="only the first N qualifying pairs (a quick run)")
    parser.add_argument("--batch", type=int, default=25, help="pairs per attribution forward/backward")
    args = parser.parse_args(argv)
    store = Path(args.store) if args.store else results_dir() / f"localization_{args.model}.zarr"
    out = Path(args.out) if args.out else results_dir() / f"attribution_{args.model}.json"
    report = run(args.model, store, args.pairs, args.batch)
    out.write_text(json.dumps(_finite(report), indent=1))
    print(json.dumps({k: report[k] for k in ("cost", "selection")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
