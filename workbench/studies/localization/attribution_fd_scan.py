"""Why attribution patching disagrees with what it estimates (issue 23), measured two ways.

``--part fd`` (the default): why the toy-mmdit attribution check needed a wide bound. The
first-order estimate of one block's effect against central, forward and backward finite differences
of the metric at several step sizes, on the pair and run that ``tests/test_attribution.py`` checks
(toy-mmdit, block 3, start 0, 3 steps). Writes ``docs/results/attribution_fd_scan.json``.

``--part path``: why the study's first-order estimate ranks toy-unet's layers backwards (layer 4:
about -0.08 against an actual +29.6). On the first ``--pairs`` qualifying test pairs of the
localization store, with the study's 8 steps:

1. a bug or a step mismatch? the estimate of layer 4 from step 0 against its central finite
   difference at small alpha, through all 8 steps;
2. non-linearity? the metric along the straight path from layer 4's clean K/V (alpha = 0) to the
   source's (alpha = 1), and its derivative at the same points from the gradient; the trapezoid
   mean of the derivative over 2, 3, 5 and all points (integrated gradients) against the actual
   effect, the metric's change at alpha = 1;
3. does integrated gradients fix the ranking? every layer's estimate along the joint path (all
   layers move together, ``attribute(path_points=...)``: the cheap form, one backward pass per
   point for every layer) against each layer's own activation patch, Spearman over the 7 layers.

Writes ``docs/results/attribution_path_<model>.json``.

``--part ranking``: item 3 on all the study's qualifying test pairs (the 44 of the published table),
joint path at 5 points (subsets of 1, 2, 3 and 5). Writes ``docs/results/attribution_ig_<model>.json``.

``python -m workbench.studies.localization.report --update-doc`` writes the
``localization-attribution-path`` block of docs/localization.md from both.

    python -m workbench.studies.localization.attribution_fd_scan [--part fd|path|ranking] [--pairs 12]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ... import load
from ...models.judge import load_judge
from ...results import results_dir
from . import attribution as A
from . import patching as L
from . import sweeps as S

STEPS = 3  # the run tests/test_attribution.py checks

STEP_SIZES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


def finite_difference_scan() -> None:
    torch.set_num_threads(1)
    model, judge = load("toy-mmdit"), load_judge()
    layer, start = 3, 0
    with torch.no_grad():
        pair = A.glyph_pair(model, judge, "A", "3", "blue", "right", 5)
        _, cache = L.cache_text(model, [pair.source], steps=STEPS, seed=pair.seeds, latents=S.noise_for(model, pair.seeds))
    result = A.attribute(model, [pair.target], [pair.source], pair.seeds, pair.metric, steps=STEPS,
                         token_maps=pair.maps, layers=[layer])
    estimate = float(A.layer_effects(result.contributions, start).sel(layer=layer)[0])
    rows = []
    with torch.no_grad():
        at = lambda alpha: A.blended_metric(model, pair, cache, alpha, steps=STEPS, layers=[layer], start=start)  # noqa: E731
        zero = at(0.0)
        for eps in STEP_SIZES:
            plus, minus = at(eps), at(-eps)
            rows.append({"eps": eps, "central": (plus - minus) / (2 * eps), "forward": (plus - zero) / eps,
                         "backward": (zero - minus) / eps})
            print(rows[-1], flush=True)
    saved = {"model": "toy-mmdit", "layer": layer, "start": start, "steps": STEPS, "estimate": estimate, "rows": rows}
    (results_dir() / "attribution_fd_scan.json").write_text(json.dumps(saved, indent=1) + "\n")
    print(f"estimate {estimate:.4f}")



# -- toy-unet: the metric along the path ----------------------------------------------------------
PATH_POINTS = 9  # alpha = 0, 1/8, ..., 1: the trapezoid over 2, 3, 5 and 9 of them are subsets
SUBSETS = (1, 2, 3, 5, 9)  # 1: the clean point alone, i.e. first-order attribution
FD_STEP_SIZES = (1e-2, 1e-3)


def _subset(points: int, grid: int = PATH_POINTS) -> np.ndarray:
    """Indices into a ``grid``-point path of an equally spaced ``points``-point subset (ends included)."""
    if points == 1:
        return np.array([0])
    stride = (grid - 1) // (points - 1)
    if stride * (points - 1) != grid - 1:
        raise ValueError(f"{points} points are not a subset of the {grid}-point grid")
    return np.arange(0, grid, stride)


def _integrated(path: np.ndarray, points: int) -> np.ndarray:
    """Trapezoid mean over ``points`` of the grid: ``path`` (alpha, ...) -> (...)."""
    _, weights = A.path_weights(points)
    return np.tensordot(weights, path[_subset(points, len(path))], axes=(0, 0))


def _study_test_pairs(model_name: str, limit: int | None = None):
    """The model, its study store, the store's steps, and its qualifying test pairs (the first
    ``limit`` of them, or all) with their prompts, seeds and metric: what both scans start from."""
    from .attribution_study import study_pairs
    from .job import open_sweep
    from .report import qualified

    torch.set_num_threads(1)
    model, judge = load(model_name), load_judge()
    store = results_dir() / f"localization_{model_name}.zarr"
    grid = open_sweep(store, "grid")
    keep = np.flatnonzero((qualified(grid) & (grid["split"] == "test")).values)[:limit]
    return model, store, int(grid.attrs["steps"]), keep, study_pairs(model, judge, grid.isel(pair=keep))


def path_scan(model_name: str, pairs: int, layer: int) -> dict:
    started = time.time()
    model, store, steps, keep, glyphs = _study_test_pairs(model_name, pairs)
    run = dict(steps=steps, token_maps=glyphs.maps)
    rows = np.arange(len(keep))

    # 2. layer 4's own path: the metric and its derivative at each point (one attribution of that layer)
    own = A.attribute(model, glyphs.targets, glyphs.sources, glyphs.seeds, glyphs.metric, layers=[layer],
                      path_points=PATH_POINTS, **run)
    derivative = own.path.sel(layer=layer).sum(("head", "step")).values  # (alpha, pair)
    change = own.path_metric - own.path_metric[0]  # (alpha, pair)
    actual = change[-1]
    print(f"own path done, {time.time() - started:.0f} s", flush=True)

    # 1. the first-order estimate against finite differences at small alpha, all 8 steps
    with torch.no_grad():
        _, cache = L.cache_text(model, glyphs.sources, steps=steps, seed=glyphs.seeds,
                                latents=S.noise_for(model, glyphs.seeds))

        def metric_at(alpha, layers):
            latents = A.blended_generate(model, glyphs.targets, cache, glyphs.seeds, layers=layers, alpha=alpha, **run)
            return glyphs.metric.on_images(A.differentiable_images(model, latents), rows).double().numpy()

        fd = [{"eps": eps, "central": ((metric_at(eps, [layer]) - metric_at(-eps, [layer])) / (2 * eps)).tolist()}
              for eps in FD_STEP_SIZES]
        # 3. every layer's own activation patch (alpha = 1), for the ranking
        clean = own.path_metric[0]
        per_layer = np.stack([metric_at(1.0, [text.index]) - clean for text in A.pick_layers(model, None)], 1)
    print(f"finite differences and activation patches done, {time.time() - started:.0f} s", flush=True)
    joint = A.attribute(model, glyphs.targets, glyphs.sources, glyphs.seeds, glyphs.metric,
                        path_points=PATH_POINTS, **run)
    joint_terms = joint.path.sum(("head", "step")).values  # (alpha, pair, layer)
    joint_change = joint.path_metric[-1] - joint.path_metric[0]  # all layers patched at once
    print(f"joint path done, {time.time() - started:.0f} s", flush=True)

    layers = [int(x) for x in joint.contributions["layer"].values]
    actual_means = per_layer.mean(0)
    ranking = []
    for points in SUBSETS:
        estimate = _integrated(joint_terms, points)  # (pair, layer)
        means = estimate.mean(0)
        ranking.append({"points": points, "estimate_means": means.tolist(), "estimates": estimate.tolist(),
                        "top1_agrees_per_pair": int((estimate.argmax(1) == per_layer.argmax(1)).sum()),
                        "spearman": A.spearman(means, actual_means),
                        "top1_attribution": layers[int(np.argmax(means))],
                        "top1_activation": layers[int(np.argmax(actual_means))],
                        "sum_over_layers_mean": float(estimate.sum(1).mean())})
    own_ig = [{"points": points, "estimate": _integrated(derivative, points).tolist(),
               "mean": float(_integrated(derivative, points).mean())} for points in SUBSETS]
    return {
        "model": model_name, "store": f"docs/results/{store.name}", "steps": steps, "layer": layer,
        "layer_module": own.layers[0].module, "start": 0, "split": "test", "pairs": len(keep),
        "pair_index": keep.tolist(), "metric": "judge name logit(B) - logit(A) at the pair's position",
        "alphas": own.path["alpha"].values.tolist(),
        "first_order": derivative[0].tolist(),
        "finite_differences": fd,
        "path_metric_change": change.tolist(),  # (alpha, pair)
        "path_derivative": derivative.tolist(),  # (alpha, pair)
        "actual": actual.tolist(),
        "own_path_integrated": own_ig,
        "layers": layers,
        "activation_per_layer_means": actual_means.tolist(),
        "activation_per_layer": per_layer.tolist(),  # (pair, layer)
        "joint_path_ranking": ranking,
        "joint_all_layers_change_mean": float(joint_change.mean()),
        "wall_s": round(time.time() - started, 1),
    }


# -- toy-unet: integrated gradients on all the study's test pairs ------------------------------------
RANKING_POINTS = 5  # alpha = 0, 1/4, ..., 1: subsets of 1, 2, 3 and 5 points


def ranking_scan(model_name: str) -> dict:
    """Every layer's joint-path estimate at 1, 2, 3 and 5 points against its own activation patch
    (alpha = 1, from step 0), on all the store's qualifying test pairs: the study's pairs."""
    started = time.time()
    model, store, steps, keep, glyphs = _study_test_pairs(model_name)
    run = dict(steps=steps, token_maps=glyphs.maps)
    rows = np.arange(len(keep))
    cpu = time.process_time()
    joint = A.attribute(model, glyphs.targets, glyphs.sources, glyphs.seeds, glyphs.metric,
                        path_points=RANKING_POINTS, batch=(len(keep) + 1) // 2, **run)
    cpu = time.process_time() - cpu
    print(f"joint path done, {time.time() - started:.0f} s", flush=True)
    with torch.no_grad():
        _, cache = L.cache_text(model, glyphs.sources, steps=steps, seed=glyphs.seeds,
                                latents=S.noise_for(model, glyphs.seeds))
        per_layer = []
        for text in joint.layers:
            latents = A.blended_generate(model, glyphs.targets, cache, glyphs.seeds, layers=[text.index], **run)
            per_layer.append(glyphs.metric.on_images(A.differentiable_images(model, latents), rows).double().numpy())
    per_layer = np.stack(per_layer, 1) - joint.clean[:, None]  # (pair, layer)
    terms = joint.path.sum(("head", "step")).values  # (alpha, pair, layer)
    layers = [int(x) for x in joint.contributions["layer"].values]
    actual_means = per_layer.mean(0)
    rows_out = []
    for points in (1, 2, 3, RANKING_POINTS):
        estimate = _integrated(terms, points)
        means = estimate.mean(0)
        rows_out.append({"points": points, "estimate_means": means.tolist(),
                         "spearman": A.spearman(means, actual_means),
                         "top1_attribution": layers[int(np.argmax(means))],
                         "top1_agrees_per_pair": int((estimate.argmax(1) == per_layer.argmax(1)).sum()),
                         "top3_overlap": A.top_k_overlap(means, actual_means, 3)})
    return {"model": model_name, "store": f"docs/results/{store.name}", "steps": steps, "start": 0, "split": "test",
            "pairs": len(keep), "layers": layers, "points": RANKING_POINTS,
            "activation_per_layer_means": actual_means.tolist(),
            "top1_activation": layers[int(np.argmax(actual_means))],
            "rows": rows_out, "attribution_cpu_s": round(cpu, 1),
            "attribution_cpu_s_note": f"all {RANKING_POINTS} points; n points cost about n / {RANKING_POINTS} of it",
            "wall_s": round(time.time() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("fd", "path", "ranking"), default="fd")
    parser.add_argument("--model", default="toy-unet", help="--part path: the model whose store is read")
    parser.add_argument("--layer", type=int, default=4, help="--part path: the layer whose path is scanned")
    parser.add_argument("--pairs", type=int, default=12, help="--part path: the first N qualifying test pairs")
    args = parser.parse_args(argv)
    if args.part == "fd":
        finite_difference_scan()
        return 0
    if args.part == "ranking":
        out = results_dir() / f"attribution_ig_{args.model}.json"
        saved = ranking_scan(args.model)
    else:
        out = results_dir() / f"attribution_path_{args.model}.json"
        saved = path_scan(args.model, args.pairs, args.layer)
    out.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {out}; its doc block: python -m workbench.studies.localization.report --update-doc")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
