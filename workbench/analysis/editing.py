"""Prompt-based editing of an MM-DiT by reusing attention from the source run (after Shin et al. 2025).

The source prompt runs first and its chosen attention pieces are recorded; the target prompt then
runs from the same noise with those pieces patched in for the first steps, so the layout follows
the source while the text follows the target. Methods compared:

* ``prompt-swap``: the baseline, target prompt from the same seed, nothing reused;
* ``image->image``: the image->image block of every joint attention (where image tokens look);
* ``image q,k``: the image tokens' queries and keys (the same map, reused before the fused kernel
  as Shin et al. do: cheaper, and the text blocks adapt to the new prompt);
* ``image->image + text->image``: also the text->image rows.

Scores, on pairs whose ground truth is known: the judge sees the target attribute at the
object's position (edit success); the object's foreground mask is kept (IoU with the source's);
pixels outside both objects stay put (mean absolute change).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ..capture import patch, record
from ..data import make_scene

METHODS = {
    "prompt-swap": (),
    "image->image": ("transformer_blocks.*.attn.probs.image->image",),
    "image q,k": ("transformer_blocks.*.attn.q.image", "transformer_blocks.*.attn.k.image"),
    "image->image + text->image": ("transformer_blocks.*.attn.probs.image->image",
                                   "transformer_blocks.*.attn.probs.text->image"),
}


def edit_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` single-object edit pairs from the shapes world: half change the colour, half the shape,
    keeping position and size. Each pair: source/target captions and the target's labels."""
    from ..data import default_recipe

    recipe = default_recipe()
    shapes, colours = recipe.vocabulary("shape"), recipe.vocabulary("colour")
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        source = make_scene(objects=[{"kind": "shape"}], seed=(seed, i))
        obj = source.objects[0]
        change = "colour" if i % 2 == 0 else "shape"
        choices = [c for c in (colours if change == "colour" else shapes) if c != getattr(obj, "colour" if change == "colour" else "name")]
        new = str(rng.choice(choices))
        spec = {"kind": "shape", "shape": obj.name, "colour": obj.colour, "position": obj.position, "size": obj.size,
                "template": obj.template}
        spec["colour" if change == "colour" else "shape"] = new
        target = make_scene(objects=[spec], seed=(seed, i))
        t = target.objects[0]
        pairs.append({"source": source.caption, "target": target.caption, "change": change,
                      "shape": t.name, "colour": t.colour, "position": t.position})
    return pairs


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


def score_edits(judge, pairs: list[dict], sources: np.ndarray, edits: np.ndarray) -> dict:
    """Edit success, object-mask IoU and background change of one method's edits."""
    verdict = judge.judge(edits)
    success = [verdict["name"][p["position"]][i] == p["shape"] and verdict["colour"][p["position"]][i] == p["colour"]
               for i, p in enumerate(pairs)]
    fg_s, fg_e = foreground(sources), foreground(edits)
    union = np.logical_or(fg_s, fg_e)
    iou = np.logical_and(fg_s, fg_e).sum((1, 2)) / np.maximum(union.sum((1, 2)), 1)
    outside = ~union
    change = np.abs(edits - sources).mean(-1)
    background = (change * outside).sum((1, 2)) / np.maximum(outside.sum((1, 2)), 1)
    return {"edit_success": float(np.mean(success)), "mask_iou": float(iou.mean()),
            "background_change": float(background.mean())}


def compare_methods(model, judge, n_pairs: int = 100, methods=tuple(METHODS), **options) -> xr.Dataset:
    """Every method on the same ``n_pairs`` pairs: dims (method, score)."""
    pairs = edit_pairs(n_pairs, seed=options.get("seed", 0))
    rows = []
    for method in tqdm(list(methods), desc="editing methods", unit="method"):
        sources, edits = run_edits(model, pairs, method, **options)
        scores = score_edits(judge, pairs, sources, edits)
        rows.append([scores[k] for k in ("edit_success", "mask_iou", "background_change")])
    return xr.DataArray(np.array(rows), dims=("method", "score"),
                        coords={"method": list(methods), "score": ["edit_success", "mask_iou", "background_change"]},
                        attrs={"pairs": n_pairs, "model": model.name}).to_dataset(name="scores")
