"""Prompt-based editing of an MM-DiT by reusing attention from the source run (after Shin et al. 2025).

The source prompt runs first and its chosen attention pieces are recorded; the target prompt then
runs from the same noise with those pieces patched in for the first steps, so the layout follows
the source while the text follows the target. Methods compared:

* ``prompt-swap``: the baseline, target prompt from the same seed, nothing reused;
* ``image->image``: the image->image block of every joint attention (where image tokens look);
* ``image q,k``: the image tokens' queries and keys (the same map, reused before the fused kernel
  as Shin et al. do: cheaper, and the text blocks adapt to the new prompt);
* ``image->image + text->image``: also the text->image rows.

Scores, against ground truth: the shapes world renders the intended edited scene exactly (the
same layout, background and noise with one attribute changed), so each edit is scored by

* ``edit_success``: the judge reads the target shape/glyph and colour at the object's position
  (``name_right`` and ``colour_right`` split it);
* ``target_iou``: the edited image's foreground against the *target* scene's object mask (a
  shape edit that keeps the old outline scores low);
* ``background_psnr``: PSNR (dB, images in [0, 1]) of the edit against the source over the pixels
  outside both objects and outside the target mask.

``no edit`` (the source image returned unchanged) is scored beside the methods: it keeps the
background perfectly, and on colour edits its mask is already the target's. Scores are split by
edit kind (colour, shape, glyph) with 95% intervals over pairs: Wilson for the 0/1 scores, the
percentile bootstrap for IoU and PSNR; paired differences of 0/1 scores use Newcombe's paired interval.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ...analysis.metrics import psnr
from ...analysis.stats import bootstrap, interval, is_binary, paired_difference
from ...capture import patch, record
from .protocol import EDIT_KINDS, NO_EDIT, edit_pairs, scenes_of

METHODS = {
    "prompt-swap": (),
    "image->image": ("transformer_blocks.*.attn.probs.image->image",),
    "image q,k": ("transformer_blocks.*.attn.q.image", "transformer_blocks.*.attn.k.image"),
    "image->image + text->image": ("transformer_blocks.*.attn.probs.image->image",
                                   "transformer_blocks.*.attn.probs.text->image"),
}
SCORES = ("edit_success", "name_right", "colour_right", "target_iou", "background_psnr")
RATES = ("edit_success", "name_right", "colour_right")  # 0/1 per pair


def foreground(images: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """Pixels far from the background colour (the median of the border pixels): (N, H, W) bool."""
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None, :]
    return np.abs(images - background).max(axis=-1) > threshold


def run_edits(model, pairs: list[dict], method: str, *, steps: int = 20, reuse_steps: int = 10, seed: int = 0,
              batch: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(source images, edited images) for ``pairs`` with one method, reusing the first ``reuse_steps``."""
    if method not in METHODS:
        raise KeyError(f"unknown editing method {method!r}; choose from {', '.join(METHODS)}")
    sources, edits = [], []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        sites = METHODS[method]
        with record(model, list(sites), steps=list(range(reuse_steps))) if sites else _nothing() as rec:
            sources.append(model.generate([p["source"] for p in chunk], steps=steps, seed=seed + start))
        interventions = [patch(site, rec, steps=list(range(reuse_steps))) for site in sites]
        with record(model, [], interventions=interventions):
            edits.append(model.generate([p["target"] for p in chunk], steps=steps, seed=seed + start))
    return np.concatenate(sources), np.concatenate(edits)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def per_pair_scores(judge, pairs: list[dict], sources: np.ndarray, edits: np.ndarray) -> dict[str, np.ndarray]:
    """Each pair's scores (see the module doc), as arrays of length ``len(pairs)``."""
    verdict = judge.judge(edits)
    name_right = np.array([verdict["name"][p["position"]][i] == p["name"] for i, p in enumerate(pairs)])
    colour_right = np.array([verdict["colour"][p["position"]][i] == p["colour"] for i, p in enumerate(pairs)])
    target_masks = np.stack([scenes_of(p)[1].masks[0] for p in pairs])
    fg_s, fg_e = foreground(sources), foreground(edits)
    union = np.logical_or(fg_e, target_masks).sum((1, 2))
    iou = np.logical_and(fg_e, target_masks).sum((1, 2)) / np.maximum(union, 1)
    outside = ~(fg_s | fg_e | target_masks)
    return {"edit_success": (name_right & colour_right).astype(float), "name_right": name_right.astype(float),
            "colour_right": colour_right.astype(float), "target_iou": iou,
            "background_psnr": psnr(edits, sources, outside, cap=60.0)}


def score_edits(judge, pairs: list[dict], sources: np.ndarray, edits: np.ndarray) -> dict:
    """Mean scores of one method's edits over all pairs."""
    return {k: float(v.mean()) for k, v in per_pair_scores(judge, pairs, sources, edits).items()}


def summarise(per_pair: dict[str, dict[str, np.ndarray]], pairs: list[dict], n_boot: int = 2000) -> xr.Dataset:
    """Means and 95% intervals (:func:`~workbench.analysis.stats.interval`) per method, edit kind (and ``all``) and score:
    variables ``mean``, ``ci_low``, ``ci_high`` with dims (method, kind, score), and ``n`` pairs per kind."""
    kinds = [*EDIT_KINDS, "all"]
    changes = np.array([p["change"] for p in pairs])
    shape = (len(per_pair), len(kinds), len(SCORES))
    mean, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for mi, scores in enumerate(per_pair.values()):
        for ki, kind in enumerate(kinds):
            rows = changes == kind if kind != "all" else np.ones(len(pairs), bool)
            if not rows.any():
                continue
            for si, score in enumerate(SCORES):
                values = scores[score][rows]
                mean[mi, ki, si] = values.mean()
                low[mi, ki, si], high[mi, ki, si] = interval(values, n_boot=n_boot)
    dims = ("method", "kind", "score")
    counts = [int((changes == k).sum()) if k != "all" else len(pairs) for k in kinds]
    return xr.Dataset({"mean": (dims, mean), "ci_low": (dims, low), "ci_high": (dims, high), "n": ("kind", counts)},
                      coords={"method": list(per_pair), "kind": kinds, "score": list(SCORES)})


def paired_differences(per_pair: dict[str, dict[str, np.ndarray]], base: dict[str, np.ndarray]) -> dict:
    """Each method minus ``base`` over all pairs (dims method, score): the mean difference and its
    95% interval, Newcombe's paired interval for 0/1 scores, the bootstrap of the per-pair
    differences otherwise."""
    shape = (len(per_pair), len(SCORES))
    mean, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for mi, scores in enumerate(per_pair.values()):
        for si, score in enumerate(SCORES):
            a, b = np.asarray(scores[score], dtype=float), np.asarray(base[score], dtype=float)
            mean[mi, si] = float((a - b).mean())
            both_binary = is_binary(a) and is_binary(b)
            low[mi, si], high[mi, si] = paired_difference(a, b) if both_binary else bootstrap(a - b)
    dims = ("method", "score")
    return {"difference": (dims, mean), "difference_low": (dims, low), "difference_high": (dims, high)}


def compare_methods(model, judge, n_pairs: int = 150, methods=tuple(METHODS), edits=None, **options) -> xr.Dataset:
    """Every method on the same ``n_pairs`` pairs, with ``no edit`` beside them (see ``summarise``);
    ``difference`` holds each method minus prompt-swap per pair (paired), with its interval.
    ``edits(method, pairs) -> (sources, edited)``: where the images come from (default: run them
    now with :func:`run_edits`; the study's job reads them from its store)."""
    pairs = edit_pairs(n_pairs, seed=options.get("seed", 0))
    produce = edits or (lambda method, pairs: run_edits(model, pairs, method, **options))
    per_pair, sources = {}, None
    for method in tqdm(list(methods), desc="editing methods", unit="method"):
        sources, edited = produce(method, pairs)
        per_pair[method] = per_pair_scores(judge, pairs, sources, edited)
    per_pair[NO_EDIT] = per_pair_scores(judge, pairs, sources, sources)
    summary = summarise(per_pair, pairs)
    if "prompt-swap" in per_pair:
        base = per_pair["prompt-swap"]
        summary = summary.assign(**paired_differences(per_pair, base))
        summary.attrs["difference_interval"] = ("Newcombe's paired interval for the 0/1 scores, the bootstrap of the "
                                                "per-pair differences for IoU and PSNR")
    return summary.assign_attrs(pairs=n_pairs, model=model.name, **{k: v for k, v in options.items()
                                                                   if isinstance(v, (int, float, str))})
