"""The study runners' resumable result cache: each finished piece of work (a dict of arrays) is one
item of a zarr store (``workbench.store.items.ItemStore``: written atomically, claimed, recorded,
then marked done), so a rerun reads what is finished and an interruption loses only the piece in
flight. The SVD study and the localization applications use it for the pieces they find as they go."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..store.items import ItemStore


class Cache:
    """``get(key, compute)``: the arrays of ``key``, read from the store ``path`` when done, else
    computed (``compute() -> {name: array}``) and written. ``identity``: the settings every piece
    depends on (a store made with others is refused); ``resume``: the command that continues.
    ``computed`` / ``loaded``: pieces computed / read by this object."""

    def __init__(self, path, *, identity: dict, resume: str):
        self.store = ItemStore(Path(path), identity=identity, resume=resume)

    @property
    def computed(self) -> int:
        return self.store.computed

    @property
    def loaded(self) -> int:
        return self.store.loaded

    def get(self, key: str, compute) -> dict[str, np.ndarray]:
        ds = self.store.get(key, lambda: _as_dataset(key, compute()))
        return {name: ds[name].values for name in ds.data_vars}


def _as_dataset(key: str, arrays: dict) -> xr.Dataset:
    """Arrays of any shape as one Dataset: each its own dims (``<name>_0``, ``<name>_1``, ...)."""
    if not isinstance(arrays, dict):
        raise TypeError(f"piece {key!r}: compute must return a dict of arrays, not {type(arrays).__name__}")
    data = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype == object:
            raise TypeError(f"piece {key!r}: array {name!r} holds Python objects; give it a numeric or text dtype")
        data[name] = ([f"{name}_{i}" for i in range(value.ndim)], value)
    return xr.Dataset(data)


def jsonable(value):
    """``json.dumps(..., default=jsonable)``: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))
