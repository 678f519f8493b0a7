"""Two conventions every reader of recordings shares: how token axes split, and dim naming.

**Token layout.** A site's token axis is described by a :class:`~workbench.hooks.TokenLayout`
(segments in order, e.g. ``("text", "image")`` for FLUX). :func:`token_spans` splits an axis of a
given length into ``{kind: (start, stop)}``; :func:`token_kind` says what a site's token axis holds;
:func:`token_coords` labels each token with its kind, grid position ((y, x) for image tokens,
(frame, y, x) for video tokens) and text token.

**Dim naming.** A site's array uses plain dim names (``channel``, ``query``, ``y``). When arrays
of several sites share one Dataset, a dim that has several sizes among them cannot keep one name:
it gets its size as a suffix (``channel`` -> ``channel_16``), coordinates included.
:func:`sized_dims` names them, :func:`with_sized_dims` renames an array, :func:`plain_dims` undoes it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import xarray as xr

from ..attention.maps import rename_axes
from ..sitemap import GRID_AXES, Geometry, TokenLayout

# ---------------------------------------------------------------------------------------------
# token layout
# ---------------------------------------------------------------------------------------------


def token_spans(layout: TokenLayout, length: int, text_len: int) -> dict[str, tuple[int, int]]:
    """``{kind: (start, stop)}`` of an axis of ``length`` tokens; ``text_len`` is the text part of a
    joint axis (ignored for a single-kind axis, which is all one kind)."""
    if len(layout.segments) == 1:
        return {layout.segments[0]: (0, length)}
    return {kind: (start, stop) for kind, start, stop in layout.split(length, text_len)}


def token_kind(layout: TokenLayout | None) -> str:
    """What a token axis holds: ``"image"``, ``"video"``, ``"text"`` or ``"joint"`` (no layout: text)."""
    if layout is None:
        return "text"
    return layout.segments[0] if len(layout.segments) == 1 else "joint"


def token_coords(axis: str, layout: TokenLayout, length: int, geometry: Geometry,
                 text_tokens: list[list[str]] | None, n_samples: int,
                 text_encoders: list[tuple[str, int]] | None = None) -> dict:
    """Coordinates of a token axis: ``{axis}_kind``, the grid position of image/video tokens
    (``{axis}_y``/``{axis}_x``, plus ``{axis}_frame`` on an axis with video tokens; -1 for text),
    ``{axis}_token`` (the text token per sample, when known) and, where several text encoders'
    tokens share the axis, ``{axis}_encoder`` (which encoder made each text token; "" elsewhere)."""
    text_len = geometry.text_len if len(layout.segments) > 1 else 0
    grid_axes = GRID_AXES.get(layout.visual, ("y", "x"))
    kinds, text_pos = [], []
    position = {name: [] for name in grid_axes}
    for kind, (start, stop) in token_spans(layout, length, text_len).items():
        n = stop - start
        kinds += [kind] * n
        if kind in GRID_AXES:
            # token order is row-major over the grid: frame by frame, row by row
            for name, index in zip(grid_axes, np.indices(geometry.grid_of(kind, n)).reshape(len(grid_axes), -1)):
                position[name] += list(index)
            text_pos += [-1] * n
        else:
            for name in grid_axes:
                position[name] += [-1] * n
            text_pos += list(range(n))
    coords = {f"{axis}_kind": (axis, np.array(kinds))}
    for name in grid_axes:
        coords[f"{axis}_{name}"] = (axis, np.array(position[name], dtype=np.int64))
    if "text" in kinds and text_tokens is not None and len(text_tokens) == n_samples:
        if all(len(t) >= max(text_pos) + 1 for t in text_tokens):
            labelled = [[tokens[p] if 0 <= p < len(tokens) else "" for p in text_pos] for tokens in text_tokens]
            coords[f"{axis}_token"] = (("sample", axis), np.array(labelled, dtype=object).astype(str))
    if "text" in kinds and text_encoders:
        made_by = [name for name, n in text_encoders for _ in range(n)]
        if len(made_by) == max(text_pos) + 1:  # the declared stretches tile this text axis
            coords[f"{axis}_encoder"] = (axis, np.array([made_by[p] if p >= 0 else "" for p in text_pos]))
    return coords


# ---------------------------------------------------------------------------------------------
# dim naming
# ---------------------------------------------------------------------------------------------

_SIZED_DIM = re.compile(r"^(?P<base>[a-z]+)_(?P<size>\d+)$")


def clashing_dims(shapes: Iterable[Mapping[str, int]]) -> set[str]:
    """Dims that have more than one size among ``shapes`` (each a ``{dim: size}`` mapping)."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for shape in shapes:
        for dim, size in shape.items():
            sizes[dim].add(size)
    return {dim for dim, seen in sizes.items() if len(seen) > 1}


def sized_dims(dims: Iterable[str], shape: Iterable[int], clashing: set[str]) -> list[str]:
    """``dims`` with the clashing ones renamed ``{dim}_{size}``."""
    return [f"{d}_{s}" if d in clashing else d for d, s in zip(dims, shape)]


def with_sized_dims(array: xr.DataArray, clashing: set[str]) -> xr.DataArray:
    """Rename the ``clashing`` dims of ``array`` to ``{dim}_{size}``, with their ``{dim}_*`` coordinates."""
    return rename_axes(array, {dim: f"{dim}_{array.sizes[dim]}" for dim in clashing & set(array.dims)})


def plain_dims(array: xr.DataArray) -> xr.DataArray:
    """Undo :func:`with_sized_dims` (``query_397`` -> ``query``, ``query_397_kind`` -> ``query_kind``)."""
    renames = {}
    for dim in array.dims:
        match = _SIZED_DIM.match(str(dim))
        if not match or int(match["size"]) != array.sizes[dim]:
            continue
        base = match["base"]
        renames[dim] = base
        for coord in array.coords:
            if str(coord).startswith(f"{dim}_"):
                renames[coord] = base + str(coord)[len(str(dim)):]
    return array.rename(renames) if renames else array
