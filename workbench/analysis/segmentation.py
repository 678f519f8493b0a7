"""Attention maps as segmentation, scored against shapes-world masks and against baselines
that use no model.

Real shapes-world images (whose object masks are known exactly) are noised to a timestep and
denoised once with their caption, as DAAM and ConceptAttention score maps on real images. For each
object, the map of its name word (shape word, or the quoted glyph) becomes a mask by a threshold
(Otsu's, or a fixed fraction of the map's range) and is scored by IoU and pixel accuracy:

* ``image->text``: columns of the word's tokens (DAAM for a U-Net's cross-attention);
* ``text->image``: rows of the word's tokens (joint attention only: text tokens are queries there);
* ``output``: ConceptAttention-style, the dot product of the word tokens' attention *outputs*
  with each image token's attention output, softmaxed over the caption's words per pixel.

Per layer and timestep, and as a DAAM-style aggregate (heads, layers and timesteps summed after
upsampling each map to the image). Baselines scored the same way on the same objects:

* ``position prior``: a Gaussian at the anchor the caption names. Captions name every object's
  position, so this needs no model; with position-free captions (``strip_positions``) the prior
  only knows where objects can be, a Gaussian at every anchor;
* ``whole image`` (every pixel is the object) and ``all background`` (no pixel is).

Every setting (layer, timestep, threshold, prior width) is chosen on a validation split and
reported on a test split (``select_on_validation``): choosing among many cells on the images the
figure is reported on inflates it.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..attention.maps import resize, to_grid
from ..capture import all_sites, record
from ..data import default_recipe, token_alignment
from .stats import bootstrap

VARIANTS = ("image->text", "text->image", "output")
#: "otsu", or a fraction of the map's range (min-max normalised) above which a pixel is the object
THRESHOLDS = ("otsu", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")
#: widths (pixels at the image size) of the position prior's Gaussian
SIGMAS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0)


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The threshold maximising the between-class variance of ``values``."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.cumsum()
    total = weight[-1]
    mean_below = np.cumsum(hist * centres) / np.maximum(weight, 1)
    mean_above = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between))])


def binarise(heat: np.ndarray, threshold: str) -> np.ndarray:
    """The mask of ``heat`` at one of ``THRESHOLDS``; a flat map selects nothing."""
    if threshold == "otsu":
        return heat > otsu_threshold(heat)
    low, high = float(heat.min()), float(heat.max())
    if high <= low:
        return np.zeros(heat.shape, dtype=bool)
    return (heat - low) / (high - low) > float(threshold)


def mask_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, pixel accuracy) of a boolean mask against the true one."""
    union = np.logical_or(predicted, truth).sum()
    iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
    return iou, float((predicted == truth).mean())


def score_mask(heat: np.ndarray, truth: np.ndarray, threshold: str = "otsu") -> tuple[float, float]:
    """(IoU, pixel accuracy) of ``heat`` thresholded at ``threshold`` against a boolean mask."""
    return mask_scores(binarise(heat, threshold), truth)


def _all_thresholds(heat: np.ndarray, truth: np.ndarray, thresholds) -> np.ndarray:
    return np.array([score_mask(heat, truth, t) for t in thresholds])  # (threshold, 2)


def object_tokens(model, captions: list[str], name_spans: np.ndarray) -> list[list[list[int]]]:
    """Token indices on the model's text axis of each object's name word: [image][object] -> list.

    ``name_spans`` is (image, object, 2) character spans (-1 where absent)."""
    out = []
    for offsets, spans in zip(model.token_offsets(captions), name_spans):
        valid = [tuple(int(v) for v in span) for span in spans if span[0] >= 0]
        out.append(token_alignment(valid, [tuple(o) for o in offsets]))
    return out


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


def _word_positions(tokens: list[str]) -> list[int]:
    """Text positions that hold words (not start/end/padding tokens)."""
    return [i for i, t in enumerate(tokens) if not t.startswith("<|")]


def map_sites(model) -> dict[str, dict[str, str]]:
    """{variant: {layer: site}} the model can record, read off its site map (not its family):
    probability blocks from image queries to text keys (a joint block, or a cross-attention whose
    keys are all text), from text queries to image keys, and attention modules with separate
    image and text outputs (for the output-space variant, as ``"<layer>.out"``)."""
    sites = all_sites(model.denoiser)
    names = {s.name for s in sites}
    out: dict[str, dict[str, str]] = {v: {} for v in VARIANTS}
    for site in sites:
        tap = site.tap
        if getattr(tap, "role", None) != "probs":
            continue
        query = site.query_layout.segments if site.query_layout else ()
        key = site.key_layout.segments if site.key_layout else ()
        if query == ("image",) and key == ("text",):
            out["image->text"][site.module] = site.name
        elif query == ("text",) and key == ("image",):
            out["text->image"][site.module] = site.name
        if f"{site.module}.out.image" in names and f"{site.module}.out.text" in names:
            out["output"][site.module] = f"{site.module}.out"
    return {v: layers for v, layers in out.items() if layers}


def _heat(rec, variant: str, site: str, image: int, tokens: list[int], words: list[int]) -> np.ndarray:
    """The map (y, x) of ``tokens`` at one site for one image."""
    if variant == "image->text":
        probs = rec[site].isel(sample=image, branch=0, step=0)
        return to_grid(probs.isel(key=tokens).sum("key"), "query").values
    if variant == "text->image":
        probs = rec[site].isel(sample=image, branch=0, step=0)
        return to_grid(probs.isel(query=tokens).sum("query"), "key").values
    pixels = rec[f"{site}.image"].isel(sample=image, branch=0, step=0)
    text = torch.from_numpy(rec[f"{site}.text"].isel(sample=image, branch=0, step=0).values[words])
    share = (torch.from_numpy(pixels.values) @ text.T).softmax(dim=-1).numpy()  # (pixels, words)
    columns = [words.index(t) for t in tokens if t in words]
    heat = pixels.isel(channel=0).copy(data=share[:, columns].sum(axis=1))
    return to_grid(heat, "token").values


def scored_objects(model, scenes: xr.Dataset) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """The (image, object) pairs whose name word the text encoder sees, with its tokens: objects
    named beyond the encoder's token limit cannot be scored."""
    captions = [str(c) for c in scenes.caption.values]
    tokens = object_tokens(model, captions, scenes.span.sel(role="name").values)
    pairs, object_tokens_ = [], []
    for i, per_image in enumerate(tokens):
        for j in range(int(scenes.n_objects.values[i])):
            if per_image[j]:
                pairs.append((i, j))
                object_tokens_.append(per_image[j])
    return pairs, object_tokens_


def segmentation_scores(model, scenes: xr.Dataset, timesteps=(100, 300, 500, 700), *, seed: int = 0,
                        batch: int = 25, variants=VARIANTS, thresholds=THRESHOLDS) -> xr.Dataset:
    """IoU and pixel accuracy of every object's word maps.

    Variables ``iou`` / ``pixel_accuracy`` have dims (object, variant, layer, timestep, threshold);
    ``aggregate_iou`` / ``aggregate_accuracy`` (object, variant, threshold) score the DAAM-style
    sum over layers and timesteps. NaN where a variant has no such layer. ``scenes`` is a
    shapes-world Dataset (``workbench.data.generate``); only variants the model has are scored
    (a U-Net's text tokens never query, and its text has no attention output)."""
    available = map_sites(model)
    variants = tuple(v for v in variants if v in available)
    if not variants:
        raise ValueError(f"{model.name} records no attention between image and text tokens; nothing to score")
    layers = sorted({layer for v in variants for layer in available[v]},
                    key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    record_sites = sorted({available[v][layer] + (".*" if v == "output" else "")
                           for v in variants for layer in available[v]})
    captions = [str(c) for c in scenes.caption.values]
    pairs, tokens = scored_objects(model, scenes)
    masks = scenes.mask.values
    images = torch.from_numpy(scenes.image.values).permute(0, 3, 1, 2).float() / 127.5 - 1
    size = tuple(images.shape[-2:])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    shape = (len(pairs), len(variants), len(layers), len(timesteps), len(thresholds), 2)
    scores = np.full(shape, np.nan, dtype=np.float32)
    aggregate = np.full((len(pairs), len(variants), len(thresholds), 2), np.nan, dtype=np.float32)
    by_image: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(pairs):
        by_image.setdefault(i, []).append(k)
    for start in tqdm(range(0, len(captions), batch), desc=f"segmentation {model.name}", unit="batch"):
        stop = min(start + batch, len(captions))
        conditioning = model.encode(captions[start:stop])
        text_tokens = model.text_tokens(captions[start:stop])
        sums: dict[tuple[int, int], np.ndarray] = {}
        for ti, t in enumerate(timesteps):
            noisy = model.add_noise(images[start:stop], t, noise[start:stop])
            with record(model, record_sites, reduce=("head",)) as rec:
                model.predict(noisy, t, conditioning, prompts=captions[start:stop])
            for i in range(start, stop):
                words = _word_positions(text_tokens[i - start])
                for k in by_image.get(i, []):
                    truth = masks[i, pairs[k][1]]
                    for vi, variant in enumerate(variants):
                        for li, layer in enumerate(layers):
                            if layer not in available[variant]:
                                continue
                            heat = resize(_heat(rec, variant, available[variant][layer], i - start, tokens[k], words),
                                           size)
                            scores[k, vi, li, ti] = _all_thresholds(heat, truth, thresholds)
                            sums[k, vi] = sums.get((k, vi), 0) + heat
        for (k, vi), heat in sums.items():
            aggregate[k, vi] = _all_thresholds(heat, masks[pairs[k][0], pairs[k][1]], thresholds)
    cell = ("object", "variant", "layer", "timestep", "threshold")
    whole = ("object", "variant", "threshold")
    return xr.Dataset(
        {"iou": (cell, scores[..., 0]), "pixel_accuracy": (cell, scores[..., 1]),
         "aggregate_iou": (whole, aggregate[..., 0]), "aggregate_accuracy": (whole, aggregate[..., 1])},
        coords={"object": np.arange(len(pairs)), "image": ("object", [p[0] for p in pairs]),
                "obj": ("object", [p[1] for p in pairs]), "variant": list(variants), "layer": layers,
                "timestep": list(timesteps), "threshold": list(thresholds)},
        attrs={"model": model.name, "images": len(captions), "seed": seed},
    )


def gaussian_map(anchors: list[tuple[float, float]], sigma: float, size: int) -> np.ndarray:
    """(size, size) sum of isotropic Gaussians of width ``sigma`` at pixel-centre anchors (x, y)."""
    centres = np.arange(size) + 0.5
    heat = np.zeros((size, size))
    for x, y in anchors:
        heat += np.exp(-((centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2) / (2 * sigma**2))
    return heat


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
            prior[k, si] = _all_thresholds(gaussian_map(anchors, sigma, size), truth, thresholds)
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


def cell_means(scores: xr.Dataset) -> xr.Dataset:
    """Mean scores over objects per cell: what the saved results and heatmaps hold."""
    return scores.mean("object").assign_attrs(scores.attrs, objects=scores.sizes["object"])
