"""Pixel geometry of the shapes world: outlines, glyphs and backgrounds as numpy arrays.

Everything is hard-edged (no anti-aliasing) so that an object's mask is exactly the set of
pixels painted in its colour. A pixel (row i, column j) is inside an outline when its centre
(j + 0.5, i + 0.5) is, in the continuous coordinates the recipe's anchors use.

Example:
    >>> mask = shape_mask("square", centre=(16.0, 16.0), radius=6.0, size=32)
    >>> mask.shape, int(mask.sum())
    ((32, 32), 100)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.data.font import GLYPH_HEIGHT, GLYPH_WIDTH, glyph_bitmap

# Each outline tests pixel-centre offsets (dx, dy) from the anchor against a radius r. All fit in
# the square of half-side r (the footprint layouts keep apart) and fill most of it, so a size word
# means about the same extent for every shape.
OUTLINES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "circle": lambda dx, dy, r: dx**2 + dy**2 <= r**2,
    "square": lambda dx, dy, r: np.maximum(abs(dx), abs(dy)) <= 0.85 * r,
    # Apex up, base down, both 0.9 r from the anchor; the base is 2 r wide.
    "triangle": lambda dx, dy, r: (dy >= -0.9 * r) & (dy <= 0.9 * r) & (abs(dx) <= (dy + 0.9 * r) / 1.8),
    "cross": lambda dx, dy, r: ((abs(dx) <= 0.35 * r) & (abs(dy) <= r)) | ((abs(dy) <= 0.35 * r) & (abs(dx) <= r)),
    "diamond": lambda dx, dy, r: abs(dx) + abs(dy) <= r,
}


def shape_mask(shape: str, centre: tuple[float, float], radius: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of an outline centred at ``centre = (x, y)``."""
    if shape not in OUTLINES:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(OUTLINES)}")
    pixel_centres = np.arange(size) + 0.5
    dx = pixel_centres[None, :] - centre[0]
    dy = pixel_centres[:, None] - centre[1]
    return OUTLINES[shape](dx, dy, radius)


def glyph_scale(radius: float) -> int:
    """Whole-pixel magnification that makes a 7-row glyph about 2 * radius tall (at least 1)."""
    return max(1, int(np.floor(2 * radius / GLYPH_HEIGHT + 0.5)))


def glyph_box(centre: tuple[float, float], radius: float) -> tuple[int, int, int]:
    """Where a glyph is drawn: (left, top) pixel of its scaled bitmap, and the scale."""
    scale = glyph_scale(radius)
    left = int(np.floor(centre[0] - GLYPH_WIDTH * scale / 2 + 0.5))
    top = int(np.floor(centre[1] - GLYPH_HEIGHT * scale / 2 + 0.5))
    return left, top, scale


def glyph_mask(char: str, centre: tuple[float, float], radius: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a bitmap glyph centred at ``centre = (x, y)``, clipped to the image."""
    left, top, scale = glyph_box(centre, radius)
    pattern = np.kron(glyph_bitmap(char), np.ones((scale, scale), dtype=bool))
    mask = np.zeros((size, size), dtype=bool)
    rows = slice(max(top, 0), min(top + pattern.shape[0], size))
    cols = slice(max(left, 0), min(left + pattern.shape[1], size))
    mask[rows, cols] = pattern[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return mask


def footprint(kind: str, centre: tuple[float, float], radius: float) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) an object of `kind` ("shape" or "glyph") is drawn within."""
    if kind == "glyph":
        left, top, scale = glyph_box(centre, radius)
        return (left, top, left + GLYPH_WIDTH * scale, top + GLYPH_HEIGHT * scale)
    return (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius)


def background(tone: tuple[int, int, int], noise: int, uniforms: np.ndarray) -> np.ndarray:
    """A (size, size, 3) uint8 image: ``tone`` plus integer noise in [-noise, noise].

    ``uniforms`` holds one U[0, 1) draw per pixel and channel, shape (size, size, 3); taking the
    draws rather than a generator keeps the random-number consumption fixed and visible to callers.
    """
    offsets = np.floor(uniforms * (2 * noise + 1)).astype(np.int16) - noise
    return np.clip(np.asarray(tone, dtype=np.int16) + offsets, 0, 255).astype(np.uint8)
