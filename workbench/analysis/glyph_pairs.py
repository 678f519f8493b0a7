"""Glyph pairs for the localization study, and how the judge scores a patched image.

A pair is (glyph A -> glyph B) with the same colour, position, caption template and seed: the
target prompt renders A, the source prompt B, from the same noise. Glyph rendering is weak on the
reference models, so pairs are drawn among *qualifying* glyphs: a cell (colour, position, seed) is
screened by generating every glyph there, and only glyphs the judge reads back (right glyph, right
colour, at the right position) form pairs. Cells alternate between validation and test, so no
noise seed is shared across the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage

from ..data import make_scene
from ..data.recipe import default_recipe
from .localization import psnr_outside, ssim_outside


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
