"""A store of *items*: jobs whose unit of work is a whole labelled result (an ``xarray.Dataset``),
one zarr group per item, under the rules of every job that writes a store (``jobs.py``).

A study's work splits into items of different shapes: a batch of images scored over a grid of
layers and timesteps, one editing method on a batch of pairs, one model's skip spectra, one cell
of a FreeU grid. Preallocating one array for all of them would need the shapes up front; here each
item is a zarr group of its own (``<store>/<key>``), so two items never share a file, and:

1. **Create atomically.** An item's group is written to a temporary folder beside its place and
   renamed into it (:func:`~workbench.store.jobs.create_atomically`), consolidated: it is there
   whole or not at all, and opens with plain ``xarray.open_zarr``. The store's root group is
   created the same way; its identity (the settings that determine the results) is kept beside it
   and a job with another identity is refused, each difference named.
2. **One writer per item**: items are the chunks of a :class:`~workbench.store.jobs.StoreJob`
   (claimed, heartbeats, take-over of dead claims; Ctrl-C stops after the item in flight).
3. **Data, then its record, then the done mark.** After the rename, the item's files and sizes are
   recorded (``<store>.job/items/<key>.json``), then it is marked done (``<key>.done``). A job
   killed in between leaves an unmarked item, which the next run removes and computes again.
4. **Damage is found**: a rerun compares every done item's files with its record; a damaged item
   is unmarked and computed again alone.

    >>> store = ItemStore("study.zarr", identity={"model": "toy-unet"}, resume="rerun it")  # doctest: +SKIP
    >>> results = store.run(["a", "b"], compute)        # compute(key) -> xr.Dataset    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import xarray as xr

from .claims import job_dir
from .jobs import StoreJob, check_identity, consolidate, create_atomically, write_json_atomically

log = logging.getLogger("workbench.jobs")


class ItemStore:
    """The items of one store: which are done, computing the missing ones, reading them back.

    ``identity``: what determines the store's contents (a JSON-able dict); a store made with
    another identity is refused. ``resume``: the command that continues the job, printed when it
    stops early. ``computed`` / ``loaded`` count the items this object computed and read."""

    def __init__(self, path, *, identity: dict, resume: str):
        self.path, self.resume = Path(path), resume
        self.job = job_dir(self.path)
        self.marks = self.job / "items"
        self.computed = self.loaded = 0
        self._create(identity)

    # -- the store ------------------------------------------------------------------------------
    def _create(self, identity: dict) -> None:
        import zarr

        if not self.path.exists():
            def build(folder: Path) -> None:
                zarr.open_group(str(folder), mode="w", zarr_format=2)
                consolidate(folder)

            create_atomically(self.path, build)
        self.marks.mkdir(parents=True, exist_ok=True)
        check_identity(self.path, identity, "use another store, or rerun with the same settings to resume")

    def _check_key(self, key: str) -> None:
        if not key or "/" in key or key.startswith(".") or key != key.strip():
            raise ValueError(f"item key {key!r} must be a non-empty name without '/' that does not start with '.'")

    def done(self, key: str) -> bool:
        return (self.marks / f"{key}.done").exists()

    def damage(self, key: str) -> str | None:
        """Why a done item no longer matches its record (None: it does, or it has no record)."""
        try:
            record = json.loads((self.marks / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        for relative, size in record["files"].items():
            path = self.path / key / relative
            if not path.exists():
                return f"{key}/{relative} is missing"
            if path.stat().st_size != size:
                return f"{key}/{relative} has {path.stat().st_size} bytes, {size} were written"
        return None

    def open(self, key: str) -> xr.Dataset:
        """A done item, loaded into memory."""
        if not self.done(key):
            raise KeyError(f"item {key!r} of {self.path} is not done; done: {', '.join(self.keys()) or 'none'}")
        with xr.open_zarr(self.path / key, consolidated=True) as ds:
            ds = ds.load()
        # zarr lists variables alphabetically and reads text as numpy's StringDType: put back the
        # order and the object dtype they were written with, so a result reads back as it was made
        order = json.loads((self.marks / f"{key}.json").read_text())
        return xr.Dataset({name: _plain(ds[name].variable) for name in order["data_vars"]},
                          coords={name: _plain(ds[name].variable) for name in order["coords"]}, attrs=ds.attrs)

    def keys(self) -> list[str]:
        """The done items, sorted."""
        return sorted(p.name[: -len(".done")] for p in self.marks.glob("*.done"))

    # -- computing ------------------------------------------------------------------------------
    def run(self, keys: Sequence[str], compute: Callable[[str], xr.Dataset], *, progress: bool = True,
            desc: str = "") -> dict[str, xr.Dataset]:
        """Compute every item of ``keys`` that is not done (``compute(key) -> Dataset``), with a
        progress bar, and return all of them, read back from the store (in ``keys`` order)."""
        from tqdm.auto import tqdm

        keys = list(keys)
        for key in keys:
            self._check_key(key)
            why = self.damage(key) if self.done(key) else None
            if why:  # a done item whose files changed is computed again, alone
                log.warning("%s: item %s is damaged (%s); computing it again", self.path, key, why)
                (self.marks / f"{key}.done").unlink(missing_ok=True)
        chunks = {_chunk_id(key): key for key in keys}
        todo = [c for c, key in chunks.items() if not self.done(key)]
        bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc or self.path.name, unit="item",
                   disable=not progress)
        # (counted over the store: the items of earlier calls, e.g. an earlier split, are kept too)
        with StoreJob(self.path, resume=self.resume, total=len(set(self.keys()) | set(keys)),
                      describe=lambda chunk: f"item {chunks[chunk]!r}", done_count=lambda: len(self.keys())) as job:
            def work(chunk: int) -> None:
                key = chunks[chunk]
                result = compute(key)
                if not job.may_write(chunk):  # taken over by another job (this one looked dead): leave it
                    return
                self._write(key, result)
                self.computed += 1
                bar.update(1)

            try:
                job.run(todo, work, lambda chunk: self.done(chunks[chunk]))
            finally:
                bar.close()
        out = {key: self.open(key) for key in keys}
        self.loaded += len(keys) - len(todo)
        return out

    def get(self, key: str, compute: Callable[[], xr.Dataset]) -> xr.Dataset:
        """One item: read back when done, else computed now (for runners that find their items as
        they go)."""
        return self.run([key], lambda _: compute(), progress=False)[key]

    def _write(self, key: str, result: xr.Dataset) -> None:
        """Data (a group renamed into place), then its record, then the done mark."""
        if not isinstance(result, xr.Dataset):
            raise TypeError(f"item {key!r}: compute must return an xarray.Dataset, not {type(result).__name__}")
        place = self.path / key
        if place.exists():  # written by a run that stopped before marking it done
            shutil.rmtree(place)
        # one zarr chunk per variable: an item is written and read whole
        encoding = {name: {"chunks": var.shape} for name, var in result.variables.items() if var.ndim}

        def build(folder: Path) -> None:
            result.to_zarr(folder, mode="w", consolidated=True, zarr_format=2, encoding=encoding)

        create_atomically(place, build)
        files = {str(p.relative_to(place)): p.stat().st_size for p in sorted(place.rglob("*")) if p.is_file()}
        write_json_atomically(self.marks / f"{key}.json", {"files": files, "data_vars": list(result.data_vars),
                                                           "coords": list(result.coords)})
        (self.marks / f"{key}.done").touch()


def _plain(variable: xr.Variable) -> xr.Variable:
    return variable.astype(object) if variable.dtype.kind == "T" else variable


def _chunk_id(key: str) -> int:
    """A stable claim number for an item key (claims are numbered)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)
