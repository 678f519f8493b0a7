"""The one interface every reader of images shares, and the reader wrapping a user's callable."""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np


def normalise(label) -> str:
    """Labels compare case-blind and ignoring everything but letters and digits: readers differ in
    spacing and punctuation ("HOUSE 42" / "house42"), and a study asks about the word, not its spelling."""
    return re.sub(r"[^0-9A-Z]", "", str(label).upper())


def check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) floats in [0, 1] (as Model.generate returns them); "
                         f"got shape {images.shape}")
    return images.astype(np.float32, copy=False)


class Reader:
    """Reads images back into labels. Subclasses define ``read``; ``agrees`` compares normalised labels."""

    name = "reader"

    def read(self, images: np.ndarray, where: Sequence | None = None) -> np.ndarray:
        """One label (str) per image. ``where``: per image, where to look (the judge's anchor);
        readers that look at the whole image refuse it."""
        raise NotImplementedError

    def agrees(self, images: np.ndarray, expected: Sequence, where: Sequence | None = None) -> np.ndarray:
        """(N,) bool: whether each image reads as its ``expected`` label."""
        images, expected = check_images(images), list(expected)
        if len(expected) != len(images):
            raise ValueError(f"{len(expected)} expected labels for {len(images)} images")
        got = self.read(images, where)
        return np.array([self.matches(g, e) for g, e in zip(got, expected)], dtype=bool)

    def matches(self, got: str, expected) -> bool:
        """Whether one reading ``got`` (from ``read``) is the ``expected`` label."""
        return normalise(got) == normalise(expected)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class CallableReader(Reader):
    """A user's reader: ``fn(images) -> one label per image`` (str, bool or int; e.g. an attribute
    classifier saying "hat" / "no hat"). Its answers are checked, so a wrong shape fails here,
    not as a confusing score later."""

    def __init__(self, fn: Callable[[np.ndarray], Sequence], name: str | None = None):
        if not callable(fn):
            raise TypeError(f"CallableReader needs a callable fn(images) -> labels, not {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def read(self, images: np.ndarray, where: Sequence | None = None) -> np.ndarray:
        if where is not None:
            raise ValueError(f"the callable reader {self.name!r} reads whole images; where= is for the judge")
        images = check_images(images)
        labels = self.fn(images)
        try:
            labels = list(labels)
        except TypeError:
            raise TypeError(f"scorer {self.name!r} returned {type(labels).__name__}; it must return one label "
                            "per image (a list or array)") from None
        if len(labels) != len(images):
            raise ValueError(f"scorer {self.name!r} returned {len(labels)} labels for {len(images)} images; "
                             "it must return one per image")
        bad = [x for x in labels if not isinstance(x, (str, bool, int, np.bool_, np.integer, np.str_))]
        if bad:
            raise TypeError(f"scorer {self.name!r} returned {type(bad[0]).__name__} labels; labels are str, "
                            "bool or int")
        return np.array([str(x) for x in labels], dtype=object)
