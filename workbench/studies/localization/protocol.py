"""The localization study's protocol: glyph pairs, how the judge scores a patched image, and the
selection rules applied on the validation pairs (greedy head set, smallest layer set).

A pair is (glyph A -> glyph B) with the same colour, position, caption template and seed: the
target prompt renders A, the source prompt B, from the same noise. Glyph rendering is weak on the
reference models, so pairs are drawn among *qualifying* glyphs: a cell (colour, position, seed) is
screened by generating every glyph there, and only glyphs the judge reads back (right glyph, right
colour, at the right position) form pairs. Cells alternate between validation and test, so no
noise seed is shared across the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import xarray as xr
from scipy import ndimage

from ...analysis.metrics import psnr_outside, ssim_outside
from ...data import make_scene
from ...data.recipe import default_recipe


@dataclass(frozen=True)
class Cell:
    colour: str
    position: str
    seed: int


def glyph_scene(glyph: str, cell: Cell):
    return make_scene([dict(glyph=glyph, colour=cell.colour, position=cell.position, template=0)], seed=cell.seed)


def cells(n: int, seed: int = 0) -> list[Cell]:
    """``n`` distinct (colour, position, seed) cells drawn reproducibly."""
    recipe = default_recipe()
    rng = np.random.default_rng(seed)
    colours, positions = list(recipe.colours), list(recipe.positions)
    return [Cell(colours[rng.integers(len(colours))], positions[rng.integers(len(positions))], 1000 + i)
            for i in range(n)]


def reads(judge, images: np.ndarray, positions: list[str]) -> dict[str, np.ndarray]:
    """The judge's reading at each image's own position: ``name``, ``colour``, and ``others``:
    the names it reads at every other position, joined (what "the rest of the scene" is)."""
    verdict = judge.judge(np.asarray(images, dtype=np.float32))
    all_positions = list(verdict["name"])
    name = np.array([verdict["name"][p][i] for i, p in enumerate(positions)])
    colour = np.array([verdict["colour"][p][i] for i, p in enumerate(positions)])
    others = np.array(["|".join(verdict["name"][q][i] for q in all_positions if q != p) for i, p in enumerate(positions)])
    return {"name": name, "colour": colour, "others": others}


def glyph_masks(targets: list, sources: list, grow: int = 2) -> np.ndarray:
    """(pair, y, x): where either glyph of a pair is drawn, grown by ``grow`` px (the model's
    glyph is not pixel-exact): what "outside the glyph" excludes."""
    masks = np.stack([a.masks.any(0) | b.masks.any(0) for a, b in zip(targets, sources)])
    return np.stack([ndimage.binary_dilation(m, iterations=grow) for m in masks]) if grow else masks


def score(judge, images: np.ndarray, target_images: np.ndarray, pairs: xr.Dataset, masks: np.ndarray) -> xr.Dataset:
    """Scores of ``images`` (pair, variant, y, x, rgb) against each pair's unpatched target.

    ``success``: the judge reads glyph B at the pair's position; ``colour_kept``: it reads the
    pair's colour there; ``rest_kept``: every other position reads as in the unpatched target;
    ``psnr`` / ``ssim``: against the unpatched target, outside the grown glyph masks."""
    n_pair, n_var = images.shape[:2]
    flat = images.reshape(n_pair * n_var, *images.shape[2:])
    positions = [str(p) for p in np.repeat(pairs["position"].values, n_var)]
    got = reads(judge, flat, positions)
    base = reads(judge, target_images, [str(p) for p in pairs["position"].values])
    shape = (n_pair, n_var)
    success = got["name"].reshape(shape) == pairs["source_glyph"].values[:, None]
    colour_kept = got["colour"].reshape(shape) == pairs["colour"].values[:, None]
    rest_kept = got["others"].reshape(shape) == base["others"][:, None]
    reference = np.broadcast_to(target_images[:, None], images.shape)
    mask = np.broadcast_to(masks[:, None], shape + masks.shape[1:])
    dims = ("pair", "variant")
    return xr.Dataset({
        "success": (dims, success),
        "colour_kept": (dims, colour_kept),
        "rest_kept": (dims, rest_kept),
        "read": (dims, got["name"].reshape(shape).astype("U4")),
        "psnr": (dims, psnr_outside(images, reference, mask).astype(np.float32)),
        "ssim": (dims, ssim_outside(images, reference, mask).astype(np.float32)),
    })


# -- selection on validation ---------------------------------------------------------------------
def greedy_head_set(success: Mapping[tuple[int, ...], float], heads: int, target: float) -> tuple[list[int], float]:
    """The head set found greedily whose edit success reaches ``target``, and its success.

    ``success`` maps sorted head tuples to edit success (a sweep's table; sets it lacks are not
    tried). Start from no heads and add, each round, the head that raises success most (ties: the
    lower index), until ``target`` is reached or no larger set was measured."""
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < heads:
        trials = {h: success[tuple(sorted(chosen + [h]))] for h in range(heads)
                  if h not in chosen and tuple(sorted(chosen + [h])) in success}
        if not trials:  # jump to the smallest measured superset (e.g. leave-one-out sets)
            supersets = [k for k in success if set(chosen) < set(k)]
            if not supersets:
                break
            jump = min(supersets, key=lambda k: (len(k), -success[k], k))
            chosen, best = list(jump), success[jump]
        else:
            head = max(trials, key=lambda h: (trials[h], -h))
            chosen, best = sorted(chosen + [head]), trials[head]
        if best >= target:
            break
    return chosen, best


def smallest_layer_set(success: Mapping[tuple[int, ...], float], target: float) -> tuple[list[int], float] | None:
    """Among measured layer sets (``success``: sorted layer tuple -> edit success), the smallest
    reaching ``target`` (ties: the higher success), with its success; None if none does."""
    reaching = [(len(k), -v, k) for k, v in success.items() if v >= target]
    if not reaching:
        return None
    _, neg, layers = min(reaching)
    return list(layers), -neg
