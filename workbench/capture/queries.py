"""Query subsets: the attention rows of a few image or video queries, never the whole matrix.

``record(model, sites, queries=...)`` keeps, for every recorded probabilities site whose queries
are image or video tokens (``image->image``, ``image->text``, a U-Net's ``attn1``/``attn2``, a video
model's ``video->video``...), only the rows of the chosen query positions. Only those rows are
computed (``q[:, :, rows]`` against every key), so a 75k-token self-attention costs rows x N, not
N x N. The forms, each a position on the site's own token grid (``y``, ``x``; ``frame``, ``y``, ``x``
for video)::

    queries="center"                                   the centre patch (of every frame)
    queries={"y": (0, 8), "x": (4, 12)}                a box, half-open patch ranges
    queries={"frame": 2, "y": (0, 8), "stride": 2}     an axis left out is whole; stride: every k-th y and x
    queries={"stride": 4}                              every 4th patch along y and x
    queries=[0, 17, 42]                                token indices (row-major, frame by frame)
    queries=[(3, 4), (7, 7)]                           grid positions: (y, x), or (frame, y, x) for video

What can be checked without a grid (the form, the keys, empty ranges, repeated indices) is checked
when ``record`` is called; ranges against a site's grid at its first call, naming the site and its grid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..sitemap import GRID_AXES, Geometry, Site

FORMS = ("'center'", "{'y': (y0, y1), 'x': (x0, x1), 'frame': (f0, f1), 'stride': k} (any of these keys)",
         "a list of token indices", "a list of (y, x) or (frame, y, x) grid positions")
_BOX_AXES = ("frame", "y", "x")


def _invalid(spec, why: str) -> ValueError:
    return ValueError(f"queries={spec!r}: {why}. Valid forms: " + "; ".join(FORMS))


@dataclass(frozen=True)
class KeptQueries:
    """The query positions a site kept: ``positions`` among its ``of`` query tokens, chosen by ``spec``
    (a description, for the recording's attrs)."""

    positions: np.ndarray
    of: int
    spec: str


@dataclass(frozen=True)
class QuerySubset:
    """A checked ``queries=`` argument: ``form`` is center, box, indices or positions."""

    form: str
    box: tuple[tuple[str, tuple[int, int]], ...] = ()  # (axis, (start, stop)) of a box
    stride: int = 1  # every k-th patch along y and x (box and center forms)
    points: tuple = ()  # token indices, or grid positions (tuples)
    spec: str = ""

    def positions(self, kind: str, n_tokens: int, geometry: Geometry, site: str) -> np.ndarray:
        """Indices, among the ``n_tokens`` ``kind`` tokens of ``site``, of the kept queries (row-major
        over the grid, frame by frame, for center and box; in the given order otherwise)."""
        grid = geometry.grid_of(kind, n_tokens)
        axes = GRID_AXES[kind]
        where = f"the {' x '.join(map(str, grid))} ({', '.join(axes)}) {kind}-token grid of {site}"
        if self.form == "indices":
            bad = [i for i in self.points if not 0 <= i < n_tokens]
            if bad:
                raise ValueError(f"queries: token indices {bad[:5]} are out of range for {where}: valid are "
                                 f"0..{n_tokens - 1}")
            return np.asarray(self.points, dtype=np.int64)
        if self.form == "positions":
            if any(len(p) != len(axes) for p in self.points):
                raise ValueError(f"queries: positions are ({', '.join(axes)}) on {where}, got {list(self.points)[:3]}")
            bad = [p for p in self.points if not all(0 <= c < n for c, n in zip(p, grid))]
            if bad:
                raise ValueError(f"queries: positions {bad[:5]} lie outside {where}")
            return np.ravel_multi_index(tuple(np.asarray(self.points).T), grid).astype(np.int64)
        ranges = []
        box = dict(self.box)
        if "frame" in box and "frame" not in axes:
            raise ValueError(f"queries: 'frame' is given, but {where} has no frames; leave it out for image models")
        for axis, size in zip(axes, grid):
            step = self.stride if axis in ("y", "x") else 1
            if self.form == "center":
                start, stop = (size // 2, size // 2 + 1) if axis in ("y", "x") else (0, size)
            else:
                start, stop = box.get(axis, (0, size))
            if stop > size:
                raise ValueError(f"queries: {axis}=({start}, {stop}) reaches beyond {where} ({axis} 0..{size - 1})")
            ranges.append(np.arange(start, stop, step))
        return np.ravel_multi_index(np.meshgrid(*ranges, indexing="ij"), grid).reshape(-1).astype(np.int64)


def query_subset(spec) -> QuerySubset | None:
    """Check a ``queries=`` argument (None: every query) and return it as a :class:`QuerySubset`."""
    if spec is None or isinstance(spec, QuerySubset):
        return spec
    if isinstance(spec, str):
        if spec != "center":
            raise _invalid(spec, f"the only named subset is 'center', not {spec!r}")
        return QuerySubset("center", spec="center")
    if isinstance(spec, dict):
        unknown = [key for key in spec if key not in (*_BOX_AXES, "stride")]
        if unknown or not spec:
            raise _invalid(spec, f"unknown keys {unknown}" if unknown else "an empty dict selects nothing")
        stride = spec.get("stride", 1)
        if not _is_int(stride) or stride < 1:
            raise _invalid(spec, f"stride must be a whole number >= 1, got {stride!r}")
        box = tuple((axis, _span(spec, axis, spec[axis])) for axis in _BOX_AXES if axis in spec)
        return QuerySubset("box", box=box, stride=int(stride), spec=_describe(spec))
    if isinstance(spec, tuple):
        raise _invalid(spec, "a tuple is ambiguous (a box or indices?): give a box as a dict "
                             "({'y': (y0, y1), 'x': (x0, x1)}) and indices or positions as a list")
    if isinstance(spec, (torch.Tensor, np.ndarray)):
        spec = spec.tolist()
    if isinstance(spec, Sequence) and spec:
        if all(_is_int(i) for i in spec):
            points, form = tuple(int(i) for i in spec), "indices"
        elif all(isinstance(p, (tuple, list)) and p and all(_is_int(c) for c in p) for p in spec):
            points, form = tuple(tuple(int(c) for c in p) for p in spec), "positions"
        else:
            raise _invalid(spec, "a list holds token indices (ints) or grid positions (tuples of ints), not a mix")
        repeated = sorted(p for p, n in Counter(points).items() if n > 1)
        if repeated:
            raise _invalid(spec, f"{repeated[:5]} given more than once")
        return QuerySubset(form, points=points, spec=f"{form} {_short(points)}")
    raise _invalid(spec, "an empty list selects nothing" if isinstance(spec, Sequence) else
                   f"a {type(spec).__name__} is none of them")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _span(spec, axis: str, value) -> tuple[int, int]:
    """A box axis: an int (one patch) or a half-open (start, stop) pair, non-empty, from 0 on."""
    if _is_int(value):
        value = (int(value), int(value) + 1)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value)):
        raise _invalid(spec, f"{axis} must be a patch index or a (start, stop) pair, got {value!r}")
    start, stop = int(value[0]), int(value[1])
    if start < 0 or stop <= start:
        raise _invalid(spec, f"{axis}=({start}, {stop}) is empty or negative: give 0 <= start < stop")
    return start, stop


def _describe(spec: dict) -> str:
    return ", ".join(f"{key}={spec[key]}" for key in (*_BOX_AXES, "stride") if key in spec)


def _short(points: tuple) -> str:
    return str(list(points)) if len(points) <= 8 else f"{list(points[:8])[:-1]} ... ({len(points)} in all)"


def sites_taking(subset: QuerySubset, sites: list[Site]) -> set[str]:
    """The recorded sites a query subset applies to: probabilities whose queries are all image or
    video tokens. A whole joint matrix ([image | text] queries) is refused (record its blocks), and
    so is a subset that applies to none of ``sites``."""
    probs = [s for s in sites if getattr(s.tap, "role", None) == "probs"]
    joint = [s for s in probs if s.query_layout is not None and len(s.query_layout.segments) > 1]
    if joint:
        site, visual = joint[0], joint[0].query_layout.visual
        raise ValueError(f"queries={subset.spec!r} keeps some {visual} queries, but {site.name} has joint "
                         f"[{' | '.join(site.query_layout.segments)}] queries: record its blocks instead "
                         f"({site.name}.{visual}->{visual}, {site.name}.{visual}->text), whose queries are one kind")
    taking = {s.name for s in probs if s.query_layout is not None and s.query_layout.segments[0] in GRID_AXES}
    if not taking:
        raise ValueError(f"queries={subset.spec!r} keeps rows of attention probabilities whose queries are image or "
                         "video tokens, and none of the recorded sites has such queries: record e.g. "
                         "'**.probs.image->image', '**.attn1.probs' or '**.probs.video->video'")
    return taking
