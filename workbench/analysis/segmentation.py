"""Attention maps as segmentation, scored against shapes-world masks.

Real shapes-world images (whose object masks are known exactly) are noised to a timestep and
denoised once with their caption, as DAAM and ConceptAttention score maps on real images. For each
object, the map of its name word (shape word, or the quoted glyph) becomes a mask by Otsu's
threshold and is scored by IoU and pixel accuracy, per layer and per timestep:

* ``image->text``: columns of the word's tokens (DAAM for a U-Net's cross-attention);
* ``text->image``: rows of the word's tokens (MM-DiT only: text tokens are queries there);
* ``output``: ConceptAttention-style, the dot product of the word tokens' attention *outputs*
  with each image token's attention output, softmaxed over the caption's words per pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..attention.maps import _resize, to_grid
from ..capture import record
from ..data import token_alignment

VARIANTS = ("image->text", "text->image", "output")


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


def score_mask(heat: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, pixel accuracy) of Otsu(heat) against a boolean mask."""
    predicted = heat > otsu_threshold(heat)
    union = np.logical_or(predicted, truth).sum()
    iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
    return iou, float((predicted == truth).mean())


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


def _layer_maps(rec, layer: str, variant: str, image: int, tokens: list[int], words: list[int]) -> np.ndarray | None:
    """The map (y, x) of ``tokens`` at one layer for one image, or None if not recorded."""
    if variant == "image->text":
        name = f"{layer}.probs.image->text" if f"{layer}.probs.image->text" in rec else f"{layer}.probs"
        if name not in rec:
            return None
        probs = rec[name].isel(sample=image, branch=0, step=0)
        probs = probs.isel(query=(probs.query_kind == "image").values, key=(probs.key_kind == "text").values)
        return to_grid(probs.isel(key=tokens).sum("key"), "query").values
    if variant == "text->image":
        name = f"{layer}.probs.text->image"
        if name not in rec:
            return None
        probs = rec[name].isel(sample=image, branch=0, step=0)
        return to_grid(probs.isel(query=tokens).sum("query"), "key").values
    image_out, text_out = f"{layer}.out.image", f"{layer}.out.text"
    if image_out not in rec or text_out not in rec:
        return None
    pixels = rec[image_out].isel(sample=image, branch=0, step=0)
    text = torch.from_numpy(rec[text_out].isel(sample=image, branch=0, step=0).values[words])
    scores = torch.from_numpy(pixels.values) @ text.T  # (pixels, words)
    share = scores.softmax(dim=-1).numpy()
    columns = [words.index(t) for t in tokens if t in words]
    heat = pixels.isel(channel=0).copy(data=share[:, columns].sum(axis=1))
    return to_grid(heat, "token").values


def segmentation_scores(model, scenes: xr.Dataset, timesteps=(100, 300, 500, 700), *, seed: int = 0,
                        batch: int = 25, variants=VARIANTS) -> xr.Dataset:
    """mIoU and pixel accuracy of each layer's word maps, per timestep: dims (variant, layer, timestep).

    ``scenes`` is a shapes-world Dataset (``workbench.data.generate``). Only variants the model
    has are scored: U-Nets have image->text only (their text tokens never query)."""
    family = model.family
    if family == "sd3":
        sites = ["transformer_blocks.*.attn.probs.image->text", "transformer_blocks.*.attn.probs.text->image",
                 "transformer_blocks.*.attn.out.*"]
    elif family == "unet":
        sites = ["**.attn2.probs"]
        variants = tuple(v for v in variants if v == "image->text")
    else:
        raise ValueError(f"segmentation scoring supports the sd3 and unet families, not {family}")
    captions = [str(c) for c in scenes.caption.values]
    spans = scenes.span.sel(role="name").values  # (image, object, bound)
    tokens = object_tokens(model, captions, spans)
    masks, n_objects = scenes.mask.values, scenes.n_objects.values
    images = torch.from_numpy(scenes.image.values).permute(0, 3, 1, 2).float() / 127.5 - 1
    size = images.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator)
    layers, sums = None, {}
    for start in tqdm(range(0, len(captions), batch), desc=f"segmentation {model.name}", unit="batch"):
        stop = min(start + batch, len(captions))
        conditioning = model.encode(captions[start:stop])
        for ti, t in enumerate(timesteps):
            noisy = model.add_noise(images[start:stop], t, noise[start:stop])
            with record(model, sites, reduce=("head",)) as rec:
                model.predict(noisy, t, conditioning, prompts=captions[start:stop])
            if layers is None:
                layers = sorted({name.rsplit(".probs", 1)[0] for name in rec if ".probs" in name},
                                key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
            text_tokens = model.text_tokens(captions[start:stop])
            for i in range(stop - start):
                words = _word_positions(text_tokens[i])
                for obj in range(int(n_objects[start + i])):
                    obj_tokens = tokens[start + i][obj]
                    if not obj_tokens:
                        continue
                    truth = masks[start + i, obj]
                    for variant in variants:
                        for li, layer in enumerate(layers):
                            heat = _layer_maps(rec, layer, variant, i, obj_tokens, words)
                            if heat is None:
                                continue
                            iou, acc = score_mask(_resize(heat, tuple(size)), truth)
                            key = (variant, li, ti)
                            total = sums.setdefault(key, [0.0, 0.0, 0])
                            total[0] += iou
                            total[1] += acc
                            total[2] += 1
    shape = (len(variants), len(layers), len(timesteps))
    iou, acc, count = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, dtype=int)
    for (variant, li, ti), (s_iou, s_acc, n) in sums.items():
        vi = variants.index(variant)
        iou[vi, li, ti], acc[vi, li, ti], count[vi, li, ti] = s_iou / n, s_acc / n, n
    coords = {"variant": list(variants), "layer": layers, "timestep": list(timesteps)}
    dims = ("variant", "layer", "timestep")
    return xr.Dataset(
        {"miou": (dims, iou), "pixel_accuracy": (dims, acc), "objects": (dims, count)},
        coords=coords,
        attrs={"model": model.name, "images": len(captions), "threshold": "otsu", "seed": seed},
    )


def best_cells(scores: xr.Dataset) -> list[dict]:
    """The best (layer, timestep) per variant by mIoU."""
    out = []
    for variant in scores.variant.values:
        grid = scores.miou.sel(variant=variant)
        if bool(grid.isnull().all()):
            continue
        flat = int(np.nanargmax(grid.values))
        li, ti = np.unravel_index(flat, grid.shape)
        out.append({"variant": str(variant), "layer": str(scores.layer.values[li]),
                    "timestep": int(scores.timestep.values[ti]), "miou": float(grid.values[li, ti]),
                    "pixel_accuracy": float(scores.pixel_accuracy.sel(variant=variant).values[li, ti])})
    return out
