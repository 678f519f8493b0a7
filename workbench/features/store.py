"""The feature store: one zarr group described by xarray, preallocated, filled chunk by chunk.

Layout (``n`` images, ``T`` timesteps, ``B`` images per batch = per chunk)::

    <site name>  (image, timestep, *feature dims)  float32/16, chunks (B, T, all); NaN until written
    valid        (image,)   bool   False where the image could not be read (or is not written yet)
    <label>      (image,)   int16  codes into attrs["classes"], -1 where the label does not apply
    caption      (image,)   str    when the dataset has captions
    done         (chunk,)   bool   chunk i holds images [i*B, (i+1)*B); written after its data
    coords: image (0..n-1), timestep, image_id (sample index or file path)

Feature dims are ``channel`` (+ ``py``, ``px`` after adaptive pooling, ``y``, ``x`` without pooling);
where two sites' dims differ in size, both are named with their size (``channel_64``), as
``Recording.dataset`` does. Attributes hold the job (``job``: the config and the resolved
sites, model and dataset fingerprints, as JSON; compared on every rerun) and human-readable
provenance (model, sites, timesteps, seed, pooling, versions).

Why this shape: a chunk is the unit of work, of writing and of resuming. Chunks are aligned to
zarr chunks, so workers writing different chunks never touch the same file; ``done`` has one zarr
chunk per job chunk for the same reason. ``done`` is written only after the chunk's data, so a
job killed at any moment leaves at worst a chunk with data and no mark, which is recomputed.
The store is created in full before any chunk runs and marked ``prepared`` last, so a store
killed while being created is recognisable and recreated.

Example:
    >>> ds = open_features("feats.zarr")                          # doctest: +SKIP
    >>> ds["up_blocks.1.out"].sel(timestep=150).shape             # doctest: +SKIP
    (512, 64)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

FORMAT = "workbench-features/1"


class StoreMismatch(ValueError):
    """A rerun asked for a different job than the one the store holds."""


def _open_group_attrs(path: Path) -> dict | None:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a zarr group at all
        return None


def prepare(path, job: dict, plan: dict, source, timesteps: list[int], batch_size: int, dtype: str,
            provenance: dict, overwrite: bool = False) -> bool:
    """Create the store for ``job`` (True), or check that the existing one holds it (False).

    Raises :class:`StoreMismatch` when the store holds another job, and refuses to touch a path
    that is not a feature store.
    """
    path = Path(path)
    if path.exists() and overwrite:
        shutil.rmtree(path)
    if path.is_dir() and not any(path.iterdir()):  # an empty folder made for the store
        path.rmdir()
    if path.exists():
        attrs = _open_group_attrs(path)
        if attrs is None or attrs.get("workbench_features") != FORMAT:
            raise ValueError(f"{path} exists and is not a workbench feature store; choose another output path")
        if attrs.get("prepared"):
            check_job(path, json.loads(attrs["job"]), job)
            return False
        shutil.rmtree(path)  # killed while being created: nothing computed yet, start over
    _create(path, job, plan, source, timesteps, batch_size, dtype, provenance)
    return True


def check_job(path, stored: dict, requested: dict) -> None:
    requested = json.loads(json.dumps(requested))  # tuples -> lists, as stored
    diffs = _differences(stored, requested)
    if diffs:
        lines = "\n".join(f"  {key}: store has {_short(a)}, this job asks {_short(b)}" for key, a, b in diffs)
        raise StoreMismatch(
            f"{path} holds features of a different job; refusing to mix them:\n{lines}\n"
            "Write to another output path, or pass overwrite=True (--overwrite) to replace the store."
        )


def _differences(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _create(path: Path, job, plan, source, timesteps, batch_size, dtype, provenance) -> None:
    n, n_t = len(source), len(timesteps)
    variables, encoding = {}, {}
    for site, spec in plan.items():
        shape = (n, n_t, *spec["shape"])
        chunks = (batch_size, n_t, *spec["shape"])
        variables[site] = (("image", "timestep", *spec["dims"]), da.zeros(shape, chunks=chunks, dtype=dtype),
                           {"site": site, "layout": spec["layout"]})
        encoding[site] = {"chunks": chunks, "_FillValue": np.nan}
    variables["valid"] = ("image", da.zeros(n, chunks=batch_size, dtype=bool),
                          {"description": "False where the image could not be read (or is not computed yet)"})
    encoding["valid"] = {"chunks": (batch_size,)}
    for name, label in source.labels.items():
        variables[name] = ("image", label.codes.astype(np.int16), {"classes": list(label.classes)})
        encoding[name] = {"chunks": (batch_size,)}
    if source.captions is not None:
        variables["caption"] = ("image", np.asarray(source.captions, dtype=object))
        encoding["caption"] = {"chunks": (batch_size,)}
    n_chunks = -(-n // batch_size)
    variables["done"] = ("chunk", np.zeros(n_chunks, dtype=bool),
                         {"description": f"chunk i holds images [i*{batch_size}, (i+1)*{batch_size}), written after them"})
    encoding["done"] = {"chunks": (1,)}
    coords = {
        "image": np.arange(n),
        "timestep": np.asarray(timesteps, dtype=np.int64),
        "image_id": ("image", np.asarray(source.ids, dtype=object)),
    }
    attrs = {"workbench_features": FORMAT, "job": json.dumps(job), "plan": json.dumps(plan), **provenance}
    ds = xr.Dataset(variables, coords=coords, attrs=attrs)
    ds.to_zarr(path, mode="w", compute=False, consolidated=False, encoding=encoding)
    _set_attr(path, prepared=True)  # last: a store without it was killed while being created


def _set_attr(path: Path, **values) -> None:
    import zarr

    zarr.open_group(str(path), mode="r+").attrs.update(values)


def done_chunks(path) -> np.ndarray:
    """Which chunks are finished, as a bool array (read fresh from disk)."""
    import zarr

    return np.asarray(zarr.open_array(str(Path(path) / "done"), mode="r")[:], dtype=bool)


def write_chunk(path, plan: dict, chunk: int, start: int, features: dict[str, np.ndarray], valid: np.ndarray) -> None:
    """Write one chunk's features (site -> ``(images, timesteps, *feature dims)``) and ``valid``
    flags into its region, then mark it done."""
    stop = start + len(valid)
    region = xr.Dataset(
        {site: (("image", "timestep", *plan[site]["dims"]), values) for site, values in features.items()}
        | {"valid": ("image", np.asarray(valid, dtype=bool))}
    )
    region.to_zarr(path, region={"image": slice(start, stop)}, mode="r+", consolidated=False)
    import zarr

    # The mark goes straight to its own one-element zarr chunk: a region write through xarray
    # would cost as much again as the data's (it reopens and checks the whole store).
    zarr.open_array(str(Path(path) / "done"), mode="r+")[chunk] = True


def open_features(path, require_complete: bool = True) -> xr.Dataset:
    """A feature store as a lazy ``xarray.Dataset``.

    An unfinished store (a job still running or killed) raises unless ``require_complete=False``;
    then only images of finished chunks have ``valid`` True.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no feature store at {path}")
    attrs = _open_group_attrs(path)
    if attrs is None or attrs.get("workbench_features") != FORMAT:
        raise ValueError(f"{path} is not a workbench feature store (written by `workbench extract`)")
    if not attrs.get("prepared"):
        raise ValueError(f"{path} was never fully created (the job was killed at its start); rerun the extraction")
    ds = xr.open_zarr(path, consolidated=False)
    done = ds["done"].values
    if require_complete and not done.all():
        raise ValueError(
            f"{path} is unfinished: {int(done.sum())} of {done.size} chunks are done; rerun the same extraction "
            "to finish it (finished chunks are kept), or open it with require_complete=False"
        )
    return ds
