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

This module records the maps and scores them (:func:`segmentation_scores`); the mask scoring is
:mod:`workbench.analysis.segmentation`, the baselines and the selection on validation are
:mod:`workbench.studies.attention.protocol`.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ...analysis.segmentation import THRESHOLDS, threshold_scores
from ...attention.maps import resize, to_grid
from ...capture import all_sites, record
from ...data import token_alignment

VARIANTS = ("image->text", "text->image", "output")


def object_tokens(model, captions: list[str], name_spans: np.ndarray) -> list[list[list[int]]]:
    """Token indices on the model's text axis of each object's name word: [image][object] -> list.

    ``name_spans`` is (image, object, 2) character spans (-1 where absent)."""
    out = []
    for offsets, spans in zip(model.token_offsets(captions), name_spans):
        valid = [tuple(int(v) for v in span) for span in spans if span[0] >= 0]
        out.append(token_alignment(valid, [tuple(o) for o in offsets]))
    return out


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
                        batch: int = 25, variants=VARIANTS, thresholds=THRESHOLDS, progress: bool = True) -> xr.Dataset:
    """IoU and pixel accuracy of every object's word maps (``progress=False``: no progress bar, as
    in a notebook's outputs).

    Variables ``iou`` / ``pixel_accuracy`` have dims (object, variant, layer, timestep, threshold);
    ``aggregate_iou`` / ``aggregate_accuracy`` (object, variant, threshold) score the DAAM-style
    sum over layers and timesteps. NaN where a variant has no such layer. ``scenes`` is a
    shapes-world Dataset (``workbench.data.generate``); only variants the model has are scored
    (a U-Net's text tokens never query, and its text has no attention output). Computed a batch of
    ``batch`` images at a time (:func:`batch_scores`; the study's job keeps each batch as an item
    of its store) and joined by :func:`join_batches`."""
    n = scenes.sizes["sample"]
    parts = [batch_scores(model, scenes, start, min(start + batch, n), timesteps, seed=seed, variants=variants,
                          thresholds=thresholds)
             for start in tqdm(range(0, n, batch), desc=f"segmentation {model.name}", unit="batch",
                               disable=not progress)]
    return join_batches(parts)


def join_batches(parts: list[xr.Dataset]) -> xr.Dataset:
    """The scores of consecutive batches (:func:`batch_scores`) as one Dataset over all objects."""
    joined = xr.concat(parts, "object", data_vars="minimal", coords="minimal", compat="override",
                       combine_attrs="override")
    return joined.assign_attrs(images=sum(part.attrs["images"] for part in parts))


def batch_scores(model, scenes: xr.Dataset, start: int, stop: int, timesteps=(100, 300, 500, 700), *, seed: int = 0,
                 variants=VARIANTS, thresholds=THRESHOLDS) -> xr.Dataset:
    """:func:`segmentation_scores` of the objects of images ``start`` to ``stop`` (their ``object``
    numbers are those of the whole run: the noise and object order do not depend on the batches)."""
    available = map_sites(model)
    variants = tuple(v for v in variants if v in available)
    if not variants:
        raise ValueError(f"{model.name} records no attention between image and text tokens; nothing to score")
    if not 0 <= start < stop <= scenes.sizes["sample"]:
        raise ValueError(f"images {start}..{stop} are not a batch of the {scenes.sizes['sample']} scenes")
    layers = sorted({layer for v in variants for layer in available[v]},
                    key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    record_sites = sorted({available[v][layer] + (".*" if v == "output" else "")
                           for v in variants for layer in available[v]})
    captions = [str(c) for c in scenes.caption.values]
    pairs, tokens = scored_objects(model, scenes)
    ours = [k for k, (i, _) in enumerate(pairs) if start <= i < stop]
    masks = scenes.mask.values
    images = torch.from_numpy(scenes.image.values).permute(0, 3, 1, 2).float() / 127.5 - 1
    size = tuple(images.shape[-2:])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))  # all images: batch-free
    shape = (len(ours), len(variants), len(layers), len(timesteps), len(thresholds), 2)
    scores = np.full(shape, np.nan, dtype=np.float32)
    aggregate = np.full((len(ours), len(variants), len(thresholds), 2), np.nan, dtype=np.float32)
    conditioning = model.encode(captions[start:stop])
    text_tokens = model.text_tokens(captions[start:stop])
    sums: dict[tuple[int, int], np.ndarray] = {}
    for ti, t in enumerate(timesteps):
        noisy = model.add_noise(images[start:stop], t, noise[start:stop])
        with record(model, record_sites, reduce=("head",)) as rec:
            model.predict(noisy, t, conditioning, prompts=captions[start:stop])
        for row, k in enumerate(ours):
            i, j = pairs[k]
            words = _word_positions(text_tokens[i - start])
            for vi, variant in enumerate(variants):
                for li, layer in enumerate(layers):
                    if layer not in available[variant]:
                        continue
                    heat = resize(_heat(rec, variant, available[variant][layer], i - start, tokens[k], words), size)
                    scores[row, vi, li, ti] = threshold_scores(heat, masks[i, j], thresholds)
                    sums[row, vi] = sums.get((row, vi), 0) + heat
    for (row, vi), heat in sums.items():
        i, j = pairs[ours[row]]
        aggregate[row, vi] = threshold_scores(heat, masks[i, j], thresholds)
    cell = ("object", "variant", "layer", "timestep", "threshold")
    whole = ("object", "variant", "threshold")
    return xr.Dataset(
        {"iou": (cell, scores[..., 0]), "pixel_accuracy": (cell, scores[..., 1]),
         "aggregate_iou": (whole, aggregate[..., 0]), "aggregate_accuracy": (whole, aggregate[..., 1])},
        coords={"object": np.array(ours, dtype=int), "image": ("object", np.array([pairs[k][0] for k in ours], dtype=int)),
                "obj": ("object", np.array([pairs[k][1] for k in ours], dtype=int)), "variant": list(variants),
                "layer": layers, "timestep": list(timesteps), "threshold": list(thresholds)},
        attrs={"model": model.name, "images": stop - start, "seed": seed},
    )


def folder_scenes(folder, size: int, caption: str = "a photo of a {}", word: str | None = None) -> xr.Dataset:
    """Real images and their masks from an image folder (``workbench.scoring.MaskFolder``, or
    ``"masks:FOLDER"``), laid out as :func:`segmentation_scores` reads a shapes-world Dataset: one
    object per image, named by the folder's ``words.txt`` (or ``word`` for all), captioned
    ``caption.format(word)``; images resized to ``size`` (the model's image size)."""
    from ...scoring import MaskFolder, get_scorer

    folder = get_scorer(folder if isinstance(folder, MaskFolder) else f"masks:{folder}")
    if "{}" not in caption:
        raise ValueError(f"caption {caption!r} needs a {{}} where the object's word goes")
    if word is None and folder.words is None:
        raise ValueError(f"{folder.folder} has no words.txt (NAME<TAB>word per image): pass word= to name the object")
    words = [word if word is not None else folder.words.get(name) for name in folder.names]
    missing = [name for name, w in zip(folder.names, words) if not w]
    if missing:
        raise ValueError(f"{folder.folder}/words.txt names no word for {missing[:3]} ({len(missing)} in all)")
    captions = [caption.format(w) for w in words]
    start = caption.index("{}")
    spans = np.array([[[[start, start + len(w)]]] for w in words])  # (image, obj, role, 2)
    images = np.round(folder.images(size) * 255).astype(np.uint8)
    return xr.Dataset(
        {"image": (("sample", "y", "x", "rgb"), images),
         "mask": (("sample", "obj", "y", "x"), folder.masks(size)[:, None]),
         "caption": ("sample", np.array(captions)),
         "span": (("sample", "obj", "role", "bound"), spans),
         "n_objects": ("sample", np.ones(len(words), dtype=np.int64))},
        coords={"sample": np.arange(len(words)), "role": ["name"], "file": ("sample", folder.names)},
    )
