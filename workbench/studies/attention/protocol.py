"""The attention studies' protocol: the edit pairs of the editing study, the position-free
captions, the baselines that use no model (a position prior, whole image, all background), and
the selection of every method's setting on the validation split, reported on the test split.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ...analysis.segmentation import SIGMAS, THRESHOLDS, gaussian_map, mask_scores, threshold_scores
from ...analysis.stats import bootstrap
from ...data import default_recipe, make_scene

#: the two caption kinds segmentation is scored on: with the position words, and without them
CAPTIONS = {"with positions": True, "positions stripped": False}


EDIT_KINDS = ("colour", "shape", "glyph")


NO_EDIT = "no edit"


def edit_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` single-object edit pairs from the shapes world, cycling colour, shape and glyph edits
    and keeping position, size, background and noise. Each pair: source/target captions, the
    target's labels, and ``spec``/``target_spec``/``seed`` to render both scenes exactly
    (``scenes_of``)."""

    recipe = default_recipe()
    vocabulary = {"colour": recipe.vocabulary("colour"), "shape": recipe.vocabulary("shape"),
                  "glyph": recipe.vocabulary("glyph")}
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        change = EDIT_KINDS[i % len(EDIT_KINDS)]
        kind = "glyph" if change == "glyph" else "shape"
        source = make_scene(objects=[{"kind": kind}], seed=(seed, i))
        obj = source.objects[0]
        spec = {kind: obj.name, "colour": obj.colour, "position": obj.position, "size": obj.size,
                "template": obj.template}
        field = "colour" if change == "colour" else kind
        new = str(rng.choice([c for c in vocabulary[field] if c != spec[field]]))
        target_spec = spec | {field: new}
        target = make_scene(objects=[target_spec], seed=(seed, i))
        t = target.objects[0]
        pairs.append({"source": source.caption, "target": target.caption, "change": change, "name": t.name,
                      "shape": t.name, "colour": t.colour, "position": t.position, "spec": spec,
                      "target_spec": target_spec, "seed": [seed, i]})
    return pairs


def scenes_of(pair: dict):
    """(source scene, target scene) of a pair, rendered exactly."""
    return (make_scene(objects=[pair["spec"]], seed=tuple(pair["seed"])),
            make_scene(objects=[pair["target_spec"]], seed=tuple(pair["seed"])))


def strip_positions(scenes: xr.Dataset) -> xr.Dataset:
    """The same scenes with every position phrase ("on the left") cut from the captions and the
    word spans moved to match, so a map cannot be told where its object is."""
    recipe = default_recipe()
    names = list(recipe.positions)
    roles = [str(r) for r in scenes.role.values]
    spans, captions = scenes.span.values.copy(), []
    for i, caption in enumerate(str(c) for c in scenes.caption.values):
        cuts = []
        for j in range(int(scenes.n_objects.values[i])):
            start, end = (int(v) for v in spans[i, j, roles.index("position")])
            if start < 0:
                continue
            phrase = recipe.positions[names[int(scenes.position.values[i, j])]].phrase
            begin = end - len(phrase)
            if caption[begin:end] != phrase:
                raise ValueError(f"caption {caption!r} does not hold the phrase {phrase!r} where its span says")
            cuts.append((begin - 1 if begin > 0 and caption[begin - 1] == " " else begin, end))
        for begin, end in sorted(cuts, reverse=True):
            caption = caption[:begin] + caption[end:]
            moved = spans[i] >= end
            spans[i][moved] -= end - begin
        spans[i, :, roles.index("position")] = -1
        captions.append(caption)
    return scenes.assign(caption=(scenes.caption.dims, np.array(captions, dtype=object)),
                         span=(scenes.span.dims, spans)).assign_attrs(positions="stripped from captions")


def baseline_scores(scenes: xr.Dataset, objects: xr.Dataset, *, position_known: bool = True,
                    sigmas=SIGMAS, thresholds=THRESHOLDS) -> xr.Dataset:
    """Baselines on the objects of ``objects`` (the ``image``/``obj`` coords of
    ``segmentation_scores``): ``prior_iou``/``prior_accuracy`` (object, sigma, threshold) for a
    Gaussian at the object's named anchor (or, with ``position_known=False``, at every anchor);
    ``whole_iou``/``whole_accuracy`` and ``background_iou``/``background_accuracy`` (object)."""
    recipe = default_recipe()
    names = list(recipe.positions)
    size = scenes.sizes["y"]
    scale = size / recipe.image_size
    every = [tuple(c * scale for c in recipe.positions[n].anchor) for n in names]
    prior = np.zeros((objects.sizes["object"], len(sigmas), len(thresholds), 2))
    whole, background = np.zeros((objects.sizes["object"], 2)), np.zeros((objects.sizes["object"], 2))
    for k, (i, j) in enumerate(zip(objects.image.values, objects.obj.values)):
        truth = scenes.mask.values[i, j]
        anchors = [every[int(scenes.position.values[i, j])]] if position_known else every
        for si, sigma in enumerate(sigmas):
            prior[k, si] = threshold_scores(gaussian_map(anchors, sigma, size), truth, thresholds)
        whole[k] = mask_scores(np.ones_like(truth), truth)
        background[k] = mask_scores(np.zeros_like(truth), truth)
    grid = ("object", "sigma", "threshold")
    return xr.Dataset(
        {"prior_iou": (grid, prior[..., 0]), "prior_accuracy": (grid, prior[..., 1]),
         "whole_iou": ("object", whole[:, 0]), "whole_accuracy": ("object", whole[:, 1]),
         "background_iou": ("object", background[:, 0]), "background_accuracy": ("object", background[:, 1])},
        coords={"object": objects.object.values, "sigma": list(sigmas), "threshold": list(thresholds)},
        attrs={"position_known": int(position_known)},
    )


def _pick(val: xr.DataArray) -> dict:
    """The coordinates of the best validation mean (first on ties, in grid order)."""
    means = val.mean("object")
    flat = int(np.nanargmax(means.values))
    index = np.unravel_index(flat, means.shape)
    return {dim: means[dim].values[i].item() for dim, i in zip(means.dims, index)}


def _row(method: str, setting: dict, val_iou, test_iou, test_acc, optimistic: float | None = None) -> dict:
    low, high = bootstrap(test_iou)
    return {"method": method, "setting": ", ".join(f"{k} {v}" for k, v in setting.items()) or "-",
            "val_miou": float(np.mean(val_iou)), "test_miou": float(np.mean(test_iou)), "ci_low": low,
            "ci_high": high, "test_pixel_accuracy": float(np.mean(test_acc)),
            "best_on_test": float(optimistic) if optimistic is not None else float(np.mean(test_iou))}


def select_on_validation(val: xr.Dataset, val_base: xr.Dataset, test: xr.Dataset, test_base: xr.Dataset) -> dict:
    """Every method's setting chosen on validation and scored on test, with a 95% bootstrap
    interval over test objects, and ``best_on_test``: what picking on test would have claimed.

    Returns ``{"rows": [...], "prior_gap": {...}}`` where ``prior_gap`` is the best attention
    method (chosen on validation) minus the position prior on the same test objects, paired."""
    rows, per_object = [], {}
    for variant in test.variant.values:
        for kind, iou, acc in (("", "iou", "pixel_accuracy"), (" aggregate", "aggregate_iou", "aggregate_accuracy")):
            v, t = val[iou].sel(variant=variant), test[iou].sel(variant=variant)
            if bool(t.isnull().all()):
                continue
            chosen = _pick(v)
            name = f"{variant}{kind}"
            rows.append(_row(name, chosen, v.sel(chosen), t.sel(chosen), test[acc].sel(variant=variant).sel(chosen),
                             float(t.mean("object").max())))
            per_object[name] = t.sel(chosen).values
    chosen = _pick(val_base.prior_iou)
    rows.append(_row("position prior", chosen, val_base.prior_iou.sel(chosen), test_base.prior_iou.sel(chosen),
                     test_base.prior_accuracy.sel(chosen), float(test_base.prior_iou.mean("object").max())))
    prior = test_base.prior_iou.sel(chosen).values
    for name, key in (("whole image", "whole"), ("all background", "background")):
        rows.append(_row(name, {}, val_base[f"{key}_iou"], test_base[f"{key}_iou"], test_base[f"{key}_accuracy"]))
    best = max(per_object, key=lambda n: next(r["val_miou"] for r in rows if r["method"] == n))
    gap = per_object[best] - prior
    low, high = bootstrap(gap)
    return {"rows": rows, "prior_gap": {"method": best, "difference": float(gap.mean()), "ci_low": low,
                                        "ci_high": high, "beats_prior": bool(low > 0),
                                        "loses_to_prior": bool(high < 0)}}
