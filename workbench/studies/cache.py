"""The study runners' resumable result cache: one .npz per finished piece of work (the SVD study
and the localization applications use it; a study that writes a store uses ``StoreJob``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class Cache:
    """One .npz per finished chunk, written atomically (temp file, then rename): a re-run skips
    finished chunks and an interruption loses only the chunk in flight. (A minimal resumable
    writer for the study scripts; `workbench.store.jobs` is the general one for stores.)"""

    def __init__(self, folder: Path):
        self.folder = folder
        self.loaded = self.computed = 0  # chunks found finished / computed by this run
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str, compute):
        path = self.folder / f"{key}.npz"
        if path.exists():
            self.loaded += 1
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        result = compute()
        self.computed += 1
        tmp = self.folder / f".{key}.tmp.npz"
        np.savez(tmp, **result)
        os.replace(tmp, path)
        return result


def jsonable(value):
    """``json.dumps(..., default=jsonable)``: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))
