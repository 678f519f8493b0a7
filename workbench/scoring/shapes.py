"""The shapes-world judge as a reader, for the reference models."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .readers import Reader, check_images


class JudgeReader(Reader):
    """Reads the shape or glyph name at each image's anchor (``where``: one position per image,
    e.g. "left"); "none" where the judge sees no object. ``judge`` keeps the full verdicts (colours,
    every anchor) for the shapes studies that score more than the name."""

    name = "judge"

    def __init__(self, judge=None):
        from ..models.judge import load_judge

        self.judge = judge if judge is not None else load_judge()

    def read(self, images: np.ndarray, where: Sequence | None = None) -> np.ndarray:
        images = check_images(images)
        if where is None or len(where) != len(images):
            raise ValueError(f"the judge reads at a scene anchor: give where= one position per image "
                             f"({len(images)} images), e.g. 'left'")
        verdict = self.judge.judge(images)
        unknown = sorted(set(map(str, where)) - set(verdict["name"]))
        if unknown:
            raise ValueError(f"unknown position(s) {unknown}; the judge reads at {sorted(verdict['name'])}")
        return np.array([verdict["name"][str(p)][i] for i, p in enumerate(where)], dtype=object)
