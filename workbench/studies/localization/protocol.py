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

import re
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


# -- text pairs from a prompt file, scored by any reader ------------------------------------------
# The same study on any model: a pair is (text A -> text B) in the same prompt template, from the
# same seed; success is the scorer reading B in the patched image. The shapes world's extra checks
# (colour and the rest of the scene kept) need the judge; here the image outside the text is
# compared whole (PSNR / SSIM against the unpatched target), since where a model draws its text is
# not known.
TEXT_COLUMNS = ("target_text", "source_text", "template", "seed", "split", "cell")
READ_WIDTH = 64  # characters of a reading kept in the store (fixed-width strings, as zarr v2 stores them)
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class TextPrompt:
    """A prompt with one quoted text: ``template`` holds ``{}`` where the text goes."""

    template: str
    text: str

    @property
    def prompt(self) -> str:
        return self.template.replace("{}", self.text)

    @property
    def span(self) -> dict[str, tuple[int, int]]:
        """The text's characters in the prompt, as the role ``text`` (aligned token by token)."""
        start = self.template.index("{}")
        return {"text": (start, start + len(self.text))}


def read_prompts(lines) -> list[TextPrompt]:
    """Prompts of a prompt file: one per line, each with exactly one double-quoted text (the text
    the study swaps: ``a shop sign that says "BAKERY"``); blank lines and ``#`` comments skipped.
    Lines that share a template (the line with its text taken out) form pairs."""
    prompts = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = list(_QUOTED.finditer(line))
        if len(found) != 1 or "{}" in line:
            raise ValueError(f"prompt line {number} ({line!r}) must hold exactly one double-quoted text, "
                             'e.g. a shop sign that says "BAKERY"')
        match = found[0]
        prompts.append(TextPrompt(line[:match.start(1)] + "{}" + line[match.end(1):], match.group(1)))
    by_template: dict[str, set[str]] = {}
    for p in prompts:
        by_template.setdefault(p.template, set()).add(p.text)
    if not any(len(texts) > 1 for texts in by_template.values()):
        raise ValueError(f"no two prompts share a template ({len(prompts)} prompts): a pair swaps the quoted text "
                         "of one prompt for another's, so give each template at least two texts")
    return prompts


def text_cells(prompts: list[TextPrompt], n: int, seed: int = 0) -> list[tuple[str, list[str], int]]:
    """``n`` cells (template, its texts, noise seed), templates taken in turn (those with two
    texts or more); seeds as the glyph cells' (1000 + i, never shared across cells)."""
    by_template: dict[str, list[str]] = {}
    for p in prompts:
        texts = by_template.setdefault(p.template, [])
        if p.text not in texts:
            texts.append(p.text)
    usable = [(t, texts) for t, texts in by_template.items() if len(texts) > 1]
    return [(usable[i % len(usable)][0], usable[i % len(usable)][1], 1000 + i + seed) for i in range(n)]


def text_scores(reader, images: np.ndarray, target_images: np.ndarray, expected: np.ndarray) -> xr.Dataset:
    """Scores of ``images`` (pair, variant, y, x, rgb): ``success``: ``reader`` reads each pair's
    source text; ``read``: what it read; ``psnr`` / ``ssim``: against the unpatched target, whole image."""
    n_pair, n_var = images.shape[:2]
    read = reader.read(images.reshape(n_pair * n_var, *images.shape[2:]))
    success = np.array([reader.matches(got, want) for got, want in zip(read, np.repeat(expected, n_var))])
    reference = np.broadcast_to(target_images[:, None], images.shape)
    nowhere = np.zeros(images.shape[:-1], bool)
    dims = ("pair", "variant")
    return xr.Dataset({
        "success": (dims, success.reshape(n_pair, n_var)),
        "read": (dims, np.array([str(r)[:READ_WIDTH] for r in read], dtype=f"U{READ_WIDTH}").reshape(n_pair, n_var)),
        "psnr": (dims, psnr_outside(images, reference, nowhere).astype(np.float32)),
        "ssim": (dims, ssim_outside(images, reference, nowhere).astype(np.float32)),
    })
