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
chunk per job chunk for the same reason. The store follows the rules of every job that writes a
store (``workbench.store.jobs``, docs/design.md "Jobs that write stores"): it is created whole in
a temporary folder and renamed into place, with consolidated metadata; a chunk is marked ``done``
only after its data is written and recorded (files, sizes, digest, in ``<store>.job/``), so a job
killed at any moment leaves at worst a chunk with data and no mark, which is recomputed; a chunk
damaged later is found by comparing it with its record.

Example:
    >>> ds = open_features("feats.zarr")                          # doctest: +SKIP
    >>> ds["up_blocks.1.out"].sel(timestep=150).shape             # doctest: +SKIP
    (512, 64)
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import xarray as xr

from ..store.jobs import ChunkRecords, Claims, consolidate, create_atomically, remove_store

FORMAT = "workbench-features/1"


class StoreMismatch(ValueError):
    """A rerun asked for a different job than the one the store holds."""


class DamagedStore(ValueError):
    """Chunks marked done no longer hold what was written (a file deleted or truncated)."""

    def __init__(self, path, damaged: dict[int, str], batch_size: int):
        self.path, self.damaged = Path(path), damaged
        lines = "\n".join(f"  chunk {c} (images {c * batch_size}..{(c + 1) * batch_size - 1}): {why}"
                          for c, why in sorted(damaged.items()))
        super().__init__(
            f"{path} is damaged: {len(damaged)} finished chunk(s) no longer hold what was written:\n{lines}\n"
            "Rerun the extraction that wrote it (`workbench extract ... --verify` with the same options): it "
            "recomputes only these chunks."
        )


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
    that is not a feature store. Concurrent jobs may call this at once: one creates the store, the
    others find it (:func:`workbench.store.jobs.create_atomically`).
    """
    path = Path(path)
    if path.exists() and overwrite:
        busy = Claims(path).live_holders()
        if busy:
            raise ValueError(f"{path} is being written by another job ({busy}); refusing to overwrite it while it runs")
        remove_store(path)
    if path.is_dir() and not any(path.iterdir()):  # an empty folder made for the store
        path.rmdir()
    if path.exists():
        attrs = _open_group_attrs(path)
        if attrs is None or attrs.get("workbench_features") != FORMAT:
            raise ValueError(f"{path} exists and is not a workbench feature store; choose another output path")
        if attrs.get("prepared"):
            check_job(path, json.loads(attrs["job"]), job)
            return False
        remove_store(path)  # an old-style store killed while being created: nothing computed yet
    build = lambda folder: _create(folder, job, plan, source, timesteps, batch_size, dtype, provenance)
    if create_atomically(path, build):
        return True
    check_job(path, json.loads(_open_group_attrs(path)["job"]), job)  # another job created it just now
    return False


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
    """Build the store with zarr directly, in the layout xarray's ``to_zarr`` writes for the
    equivalent Dataset (dims in ``dimension_names``, ``coordinates`` and ``_FillValue`` attributes),
    so ``xarray.open_zarr`` reads it as before. Not through xarray: ``to_zarr`` of a Dataset of
    lazy dask zeros tokenized and pickled the whole graph, about 0.35 s CPU per job, as much as
    a 32-image chunk's writing several times over (benchmarks/extraction.py --profile).

    Built in memory, then written out as files in one pass: on disk, each of the ~20 arrays'
    creation hands several file operations to zarr's I/O thread and back, about 40% more CPU
    time than the same store built in memory and written at once (measured on the 2-core
    machine: 140 against 85 ms for 16 arrays). ``path`` is the temporary folder
    ``create_atomically`` renames into place, so nobody reads the files while they appear."""
    import zarr
    from zarr.storage import MemoryStore

    n, n_t = len(source), len(timesteps)
    attrs = {"workbench_features": FORMAT, "job": json.dumps(job), "plan": json.dumps(plan), **provenance}
    files: dict = {}  # zarr key ("site/zarr.json", "site/c/0/0") -> its bytes (a zarr Buffer)
    store = MemoryStore(store_dict=files)
    root = zarr.open_group(store, mode="w", attributes=attrs)
    per_image = {"coordinates": "image_id"}  # xarray's record of the non-index coordinate on each image variable

    def array(name, dims, data=None, *, chunks, attributes=(), **empty):
        """``data`` is written with the array's creation (one zarr call); without it, ``empty``
        gives shape, dtype and fill value and no chunk is stored."""
        common = dict(chunks=chunks, attributes=dict(attributes), dimension_names=dims)
        if data is not None and data.dtype == object:
            # Strings: zarr's variable-length UTF-8 as xarray writes them (zarr infers fixed-width
            # UTF-32 from the data itself, and takes no dtype beside data).
            root.create_array(name, shape=data.shape, dtype=str, **common)[...] = data
        else:
            root.create_array(name, data=data, **common, **empty)

    nan = {"_FillValue": _NAN_FILL}
    for site, spec in plan.items():  # NaN until written: no chunk is stored before its data is
        array(site, ("image", "timestep", *spec["dims"]), shape=(n, n_t, *spec["shape"]),
              chunks=(batch_size, n_t, *spec["shape"]), dtype=dtype, fill_value=np.nan,
              attributes={"site": site, "layout": spec["layout"], **per_image, **nan})
    array("valid", ("image",), shape=(n,), chunks=(batch_size,), dtype=bool, fill_value=False,
          attributes={"description": "False where the image could not be read (or is not computed yet)", **per_image})
    for name, label in source.labels.items():
        array(name, ("image",), label.codes.astype(np.int16), chunks=(batch_size,),
              attributes={"classes": list(label.classes), **per_image})
    if source.captions is not None:
        array("caption", ("image",), np.asarray(source.captions, dtype=object), chunks=(batch_size,),
              attributes=per_image)
    n_chunks = -(-n // batch_size)
    array("done", ("chunk",), shape=(n_chunks,), chunks=(1,), dtype=bool, fill_value=False,
          attributes={"description": f"chunk i holds images [i*{batch_size}, (i+1)*{batch_size}), written after them"})
    array("image", ("image",), np.arange(n), chunks=(max(n, 1),))
    array("timestep", ("timestep",), np.asarray(timesteps, dtype=np.int64), chunks=(max(n_t, 1),))
    array("image_id", ("image",), np.asarray(source.ids, dtype=object), chunks=(max(n, 1),))
    root.attrs.update({"prepared": True})  # a store holding this attribute is whole
    consolidate(store)  # the job changes no metadata from here on, so this stays true
    for key, data in files.items():
        target = Path(path, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.to_bytes())


# xarray's encoding of a NaN fill value for zarr v3 (``FillValueCoder``: the float64, base64).
_NAN_FILL = base64.standard_b64encode(struct.pack("<d", float("nan"))).decode()


def done_chunks(path) -> np.ndarray:
    """Which chunks are finished, as a bool array (read fresh from disk). A done mark that cannot
    be read (a write of it failed half-way) counts as not done."""
    import zarr

    marks = zarr.open_array(str(Path(path) / "done"), mode="r")
    try:
        return np.asarray(marks[:], dtype=bool)
    except Exception:
        out = np.zeros(marks.shape, dtype=bool)
        for chunk in range(marks.shape[0]):
            try:
                out[chunk] = bool(marks[chunk])
            except Exception:
                pass
        return out


class ChunkArrays:
    """The arrays a job writes chunk by chunk (each site, ``valid``, ``done``), opened once.

    Opening them for every chunk (the group, then each array) costs a zarr round trip per array,
    and each round trip hands the work to zarr's I/O thread and back: several ms of wall time per
    array on a loaded machine. The handles hold only metadata, which a job never changes once the
    store is created; every read and write still goes to disk, so done marks are read fresh."""

    def __init__(self, path, plan: dict):
        import zarr

        root = zarr.open_group(str(path), mode="r+")  # one read of the consolidated metadata
        self.path = Path(path)
        self.arrays = {name: root[name] for name in [*plan, "valid", "done"]}

    def __getitem__(self, name: str):
        return self.arrays[name]


def is_done(path, chunk: int, arrays: ChunkArrays | None = None) -> bool:
    """Whether chunk ``chunk`` is finished (reads its one mark, not the whole array)."""
    import zarr

    try:
        marks = arrays["done"] if arrays is not None else zarr.open_array(str(Path(path) / "done"), mode="r")
        return bool(marks[int(chunk)])
    except Exception:  # a mark whose write failed half-way
        return False


def write_chunk(path, plan: dict, chunk: int, start: int, features: dict[str, np.ndarray], valid: np.ndarray,
                arrays: ChunkArrays | None = None) -> None:
    """Write one chunk's features (site -> ``(images, timesteps, *feature dims)``) and ``valid``
    flags into its region, record what was written, then mark it done. ``arrays``: the store's
    arrays opened once for the whole job (else they are opened here)."""
    stop = start + len(valid)
    # Straight into each variable's zarr array: an xarray region write reopens the whole store
    # lazily through dask to check the region (about 70 ms a chunk, 10% of a 32-image chunk's
    # compute on toy-unet; benchmarks/extraction.py --profile).
    arrays = arrays if arrays is not None else ChunkArrays(path, plan)
    written = {}
    for site, values in features.items():
        array = arrays[site]
        if array.shape[1:] != values.shape[1:]:
            raise ValueError(f"chunk {chunk}: {site} has shape {values.shape[1:]}, the store holds {array.shape[1:]}")
        written[site] = values.astype(array.dtype, copy=False)
    written["valid"] = np.asarray(valid, dtype=bool).astype(arrays["valid"].dtype)
    _write_blocks([(arrays[name], slice(start, stop), values) for name, values in written.items()])
    ChunkRecords(path).write(chunk, [*plan, "valid"], arrays, written=written)
    set_done(path, chunk, True, arrays)


def _write_blocks(writes) -> None:
    """Write ``(array, selection, values)`` triples, all in one hand-over to zarr's I/O loop.

    Each synchronous zarr write hands its work to zarr's event-loop thread and waits for it: two
    context switches and, on a loaded machine, a wait for the scheduler, per array. Gathering the
    chunk's writes (one per site, plus ``valid``) into one coroutine pays that once per chunk:
    measured on the 2-core machine, 12 instead of 20 ms CPU and a third of the context switches
    for 8 arrays (benchmarks/extraction.py, docs/features.md)."""
    import asyncio

    if not all(hasattr(array, "async_array") for array, _, _ in writes):  # older zarr 3 releases: no public async_array
        for array, selection, values in writes:
            array[selection] = values
        return
    from zarr.core.sync import sync

    async def write_all() -> None:
        await asyncio.gather(*(array.async_array.setitem(selection, values) for array, selection, values in writes))

    sync(write_all())


def set_done(path, chunk: int, done: bool, arrays: ChunkArrays | None = None) -> None:
    import zarr

    # The mark goes straight to its own one-element zarr chunk: a region write through xarray
    # would cost as much again as the data's (it reopens and checks the whole store).
    marks = arrays["done"] if arrays is not None else zarr.open_array(str(Path(path) / "done"), mode="r+")
    marks[chunk] = done


def damaged_chunks(path, full: bool = False) -> dict[int, str]:
    """Done chunks that no longer match their record: chunk -> what is wrong. Cheap by default
    (files and sizes); ``full`` re-reads every value (``workbench extract --verify``)."""
    records = ChunkRecords(path)
    done = done_chunks(path)
    variables = [*json.loads(_open_group_attrs(Path(path))["plan"]), "valid"]
    found = {}
    for chunk in np.flatnonzero(done):
        why = records.damage(int(chunk), full=full, variables=variables)
        if why is not None:
            found[int(chunk)] = why
    return found


def unmark(path, chunks) -> None:
    """Mark ``chunks`` not done (damaged: the next run recomputes them)."""
    records = ChunkRecords(path)
    for chunk in chunks:
        set_done(path, int(chunk), False)
        records.forget(int(chunk))


def _open_zarr(path: Path) -> xr.Dataset:
    """Through the consolidated metadata; a store written before stores were consolidated is
    read array by array (without the warning xarray gives for that)."""
    import zarr

    try:
        zarr.open_consolidated(str(path), mode="r")
    except (ValueError, KeyError, FileNotFoundError):
        return xr.open_zarr(path, consolidated=False)
    return xr.open_zarr(path, consolidated=True)


def open_features(path, require_complete: bool = True) -> xr.Dataset:
    """A feature store as a lazy ``xarray.Dataset``.

    A store whose finished chunks were damaged since (a chunk file deleted or truncated) raises
    :class:`DamagedStore` naming the chunks, instead of a codec error when the data is read.

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
    damaged = damaged_chunks(path)
    if damaged:
        raise DamagedStore(path, damaged, int(attrs["batch_size"]))
    ds = _open_zarr(path)
    done = ds["done"].values
    if require_complete and not done.all():
        raise ValueError(
            f"{path} is unfinished: {int(done.sum())} of {done.size} chunks are done; rerun the same extraction "
            "to finish it (finished chunks are kept), or open it with require_complete=False"
        )
    return ds
