"""Jobs that write stores: the rules every one of them follows, implemented once.

A store-writing job (``workbench extract``; a sweep job such as ``workbench localize``) splits its
work into *chunks*: regions of a preallocated zarr store that one process computes and writes on
its own. The rules (``docs/design.md``, "Jobs that write stores") and where each one lives here:

1. **Create atomically** (:func:`create_atomically`): the store is built in a temporary folder beside
   its path and renamed into place, so readers and concurrent jobs see no store or a whole one.
   Its metadata is consolidated before the rename (:func:`consolidate`) and a job changes no
   metadata afterwards (only chunk data and done marks), so the store opens with plain
   ``xarray.open_zarr`` without warnings at every moment.
2. **One writer per chunk** (:class:`~workbench.store.claims.Claims`): a process claims a chunk before computing it by
   creating a claim file with ``O_CREAT | O_EXCL`` (atomic on local disks and NFS) that names its
   host and pid, and touches it while it works (the heartbeat). A claim whose owner is gone (same
   host: the pid is dead; any host: no heartbeat for ``stale_after`` seconds) is taken over by
   creating the claim's next generation, again exclusively, so two processes never both take it.
   After claiming, the chunk's done mark is read again: a chunk finished meanwhile is left alone.
3. **Data, then its record, then the done mark**: a chunk is marked done only after its data is
   written and recorded (:class:`ChunkRecords`: its files, their sizes, a digest of its values,
   read back from disk or taken from the blocks just written). A job killed or failing at any
   moment leaves at worst an unmarked chunk, which the next run recomputes.
4. **Stop cleanly** (:class:`StoreJob`): Ctrl-C ends the job after the current chunk (a second
   Ctrl-C at once); a failed write (a full disk) ends it with the store, what failed and the
   command that resumes. Claims are released either way and finished chunks stay done.
5. **Damage is found and repaired chunk by chunk**: a rerun compares every done chunk's files with
   its record (cheap: sizes), a verify run also re-reads its values (digest); a damaged chunk is
   unmarked and recomputed alone, and readers name the damaged chunk instead of failing deep in a codec.

The job's own bookkeeping (claims, chunk records) lives beside the store in ``<store>.job/``, not
inside it: zarr warns about any file in a store that is not part of the zarr hierarchy.

Example (the shape of a job; ``workbench.features.job.extract`` is the real one):
    >>> with StoreJob("out.zarr", resume="workbench extract --config job.toml") as job:   # doctest: +SKIP
    ...     results = job.run(todo, work=compute_and_write, is_done=lambda c: done(c)[c])
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .claims import HEARTBEAT, HOST, STALE_AFTER, Claims, job_dir, pid_alive, remove_store

log = logging.getLogger("workbench.jobs")


# -- 1. creating ----------------------------------------------------------------------------------
def create_atomically(path, build: Callable[[Path], None]) -> bool:
    """Run ``build(folder)`` on a temporary folder beside ``path``, then rename it to ``path``.

    Returns False (and discards the build) when another process created ``path`` first; the
    caller then opens that store and checks it holds the same job.
    """
    path = Path(path)
    _remove_abandoned_builds(path)
    temporary = path.with_name(f".{path.name}.creating-{HOST}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        build(temporary)
        try:
            os.rename(temporary, path)  # atomic; fails if another process's store is already there
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY) and path.exists():
                return False
            raise
        return True
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _remove_abandoned_builds(path: Path) -> None:
    """Temporary builds left by dead processes on this host (a job killed while creating)."""
    for folder in path.parent.glob(f".{path.name}.creating-{HOST}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def consolidate(path) -> None:
    """Write the consolidated metadata of a store (a folder, or any zarr store), so that
    ``xarray.open_zarr`` reads it in one go and does not warn. (zarr warns that consolidated
    metadata is not in the zarr v3 spec yet; xarray and zarr-python read it, which is what these
    stores are for.)"""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path) if isinstance(path, (str, os.PathLike)) else path)


def check_identity(store, identity: dict, remedy: str, file: str = "identity.json") -> None:
    """Rule 1's identity: keep ``identity`` (what determines the store's contents, JSON-able) beside
    the store on first use, ``<store>.job/<file>``; a later job with another identity is refused with
    each difference named and ``remedy`` (what to do instead)."""
    identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
    path = job_dir(store) / file
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_json_atomically(path, identity)
    before = json.loads(path.read_text())
    if before != identity:
        differences = [f"{key}: {before.get(key, '(absent)')!r} in the store, {identity.get(key, '(absent)')!r} now"
                       for key in sorted(set(before) | set(identity)) if before.get(key) != identity.get(key)]
        raise ValueError(f"{store} was started with other settings ({'; '.join(differences)}): {remedy}")


# -- 3. chunk records -----------------------------------------------------------------------------
class ChunkRecords:
    """Per done chunk: the zarr files that hold it (with sizes) and a digest of its values, read
    back from disk after writing. ``<store>.job/chunks/<chunk>.json``, written atomically. ``part``:
    for a store whose groups are chunked apart (``workbench localize``: ``grid`` and ``focus``), the
    group these chunks belong to (records in ``<store>.job/chunks/<part>/``)."""

    def __init__(self, store, part: str = ""):
        self.store = Path(store)
        self.dir = job_dir(store) / "chunks" / part if part else job_dir(store) / "chunks"

    def write(self, chunk: int, variables: Sequence[str], arrays=None, written: dict | None = None) -> None:
        """Record chunk ``chunk`` of ``variables`` (chunked along their first dim) as it is on disk.
        ``arrays``: the store's open zarr arrays by name (a job that writes many chunks opens them
        once); else they are opened here, once for both the file list and the digest.
        ``written``: name -> the block just written, in the array's dtype: the digest is taken from
        it instead of reading every block back (a zarr round trip per variable and chunk; the
        feature store's job writes one per site). A later check (``damage(full=True)``) reads the
        disk and compares, so a write that stored other values is still found."""
        self.dir.mkdir(parents=True, exist_ok=True)
        variables = list(variables)
        opened = _arrays(self.store, variables) if arrays is None else [arrays[name] for name in variables]
        files = {}
        for relative in _chunk_files(variables, opened, chunk):
            try:
                files[relative] = (self.store / relative).stat().st_size
            except FileNotFoundError:  # zarr writes no file for a chunk of fill values (e.g. all-NaN)
                pass
        digest = _chunk_digest(variables, opened, chunk) if written is None else _digest_of(variables, written)
        record = {"files": files, "digest": digest, "variables": variables}
        write_json_atomically(self.dir / f"{chunk}.json", record)

    def read(self, chunk: int) -> dict | None:
        try:
            return json.loads((self.dir / f"{chunk}.json").read_text())
        except (OSError, ValueError):
            return None

    def forget(self, chunk: int) -> None:
        (self.dir / f"{chunk}.json").unlink(missing_ok=True)

    def damage(self, chunk: int, full: bool = False, variables: Sequence[str] = ()) -> str | None:
        """Why chunk ``chunk`` no longer matches its record (None: it does, or nothing tells).

        Cheap check: each recorded file exists with its recorded size. ``full``: also re-read the
        values and compare their digest (finds a file damaged in place). A chunk without a record
        (written before records existed) can only be checked by ``full``, for data that no longer
        decodes, given its ``variables``."""
        record = self.read(chunk)
        if record is None:
            return _undecodable(self.store, variables, chunk) if full and variables else None
        for relative, size in record["files"].items():
            path = self.store / relative
            if not path.exists():
                return f"{relative} is missing"
            if path.stat().st_size != size:
                return f"{relative} has {path.stat().st_size} bytes, {size} were written"
        if full:
            try:
                digest = chunk_digest(self.store, record["variables"], chunk)
            except Exception as err:  # a codec error on a damaged file
                return f"its data cannot be decoded ({type(err).__name__}: {err})"
            if digest != record["digest"]:
                return "its values differ from those written"
        return None


def _undecodable(store, variables: Sequence[str], chunk: int) -> str | None:
    try:
        chunk_digest(store, variables, chunk)
    except Exception as err:
        return f"its data cannot be decoded ({type(err).__name__}: {err})"
    return None


def _arrays(store, variables: Iterable[str]) -> list:
    """The zarr arrays ``variables`` of ``store``, opened through the group (one metadata read
    when the store is consolidated)."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    return [group[name] for name in variables]


def chunk_files(store, variables: Iterable[str], chunk: int) -> list[str]:
    """The files (relative to the store) of chunk ``chunk`` along the first dim of each variable."""
    variables = list(variables)
    return _chunk_files(variables, _arrays(store, variables), chunk)


def _chunk_files(variables: list[str], arrays: list, chunk: int) -> list[str]:
    return [f"{name}/{array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))}"
            for name, array in zip(variables, arrays)]


def chunk_digest(store, variables: Iterable[str], chunk: int) -> str:
    """sha1 of chunk ``chunk`` (along the first dim) of each variable, as read from disk."""
    variables = list(variables)
    return _chunk_digest(variables, _arrays(store, variables), chunk)


def _chunk_digest(variables: list[str], arrays: list, chunk: int) -> str:
    """:func:`chunk_digest` through arrays already open (every block is still read from disk)."""
    return _digest_of(variables, {name: array.get_block_selection((chunk,) + (0,) * (array.ndim - 1))
                                  for name, array in zip(variables, arrays)})


def _digest_of(variables: list[str], blocks: dict) -> str:
    """sha1 over each variable's name and block bytes, in ``variables`` order."""
    digest = hashlib.sha1()
    for name in variables:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(blocks[name]).tobytes())
    return digest.hexdigest()


def write_json_atomically(path: Path, data, indent: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename: never half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=indent))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# -- 4. stopping ----------------------------------------------------------------------------------
class JobStopped(Exception):
    """The job ended before its store was complete. Finished chunks are kept; ``resume`` is how to
    continue. ``done`` / ``total``: chunks done in the store when it stopped."""

    def __init__(self, message: str, *, store, done: int, total: int, resume: str):
        super().__init__(message)
        self.store, self.done, self.total, self.resume = str(store), done, total, resume


class JobInterrupted(JobStopped):
    """Stopped by Ctrl-C (SIGINT)."""


class JobFailed(JobStopped):
    """Stopped because writing failed (a full disk, a lost mount, no permission)."""


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) only asks the job to stop after its current chunk; a
    second raises ``KeyboardInterrupt`` at once. Only the main thread can catch signals; elsewhere
    (a worker thread) Ctrl-C keeps its usual meaning."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after the current chunk (press Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


_SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StoreJob:
    """Runs a job's chunks under the rules above. ``resume``: the command (or call) that continues
    the job, printed whenever it stops early.

    ``run(chunks, work, is_done)`` computes every chunk of ``chunks`` that no other process is
    computing, then waits for those that others hold, and returns what ``work`` returned for the
    chunks this process computed. ``work(chunk)`` must write the chunk's data, its record, then its
    done mark, in that order. ``describe(chunk)`` names a chunk in messages (e.g. its images).
    """

    def __init__(self, store, *, resume: str, total: int, done_count: Callable[[], int] | None = None,
                 describe: Callable[[int], str] = lambda chunk: f"chunk {chunk}", stale_after: float = STALE_AFTER,
                 heartbeat: float = HEARTBEAT, poll: float = 0.5):
        self.store, self.resume, self.total, self.describe, self.poll = Path(store), resume, total, describe, poll
        self.done_count = done_count or (lambda: -1)
        self.claims = Claims(store, stale_after=stale_after, heartbeat=heartbeat)
        self.stop = StopOnInterrupt()

    def __enter__(self) -> "StoreJob":
        self.stop.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.claims.close()
        self.stop.__exit__(*exc)

    def run(self, chunks: Sequence[int], work: Callable[[int], object], is_done: Callable[[int], bool],
            on_result: Callable[[object], None] | None = None) -> list:
        results, pending, told = [], [int(c) for c in chunks], set()
        current = None
        try:
            while pending:
                waiting = []
                for chunk in pending:
                    self._check_stop()
                    if is_done(chunk):  # finished by another job on this store
                        continue
                    if not self.claims.try_claim(chunk):
                        waiting.append(chunk)
                        continue
                    current = chunk
                    try:
                        if not is_done(chunk):  # it may have been finished between the check and the claim
                            result = work(chunk)
                            results.append(result)
                            if on_result is not None:
                                on_result(result)
                    finally:
                        self.claims.release(chunk)
                    current = None  # (kept on an exception: the messages name the chunk)
                if waiting and waiting == pending:  # nothing left that we could take: wait for the others
                    fresh = [c for c in waiting if c not in told]
                    if fresh:
                        holders = {c: self.claims.holder(c) for c in fresh}
                        log.warning("waiting for %s, being computed by another job on %s (%s)",
                                    _chunk_list(fresh), self.store,
                                    ", ".join(sorted({str(h) for h in holders.values() if h is not None})))
                        told.update(fresh)
                    self._sleep(self.poll)
                pending = waiting
            self.claims.clear_dead(is_done)
        except OSError as err:
            raise self.failed(err, current) from err
        except KeyboardInterrupt as err:
            raise self.interrupted(current) from err
        return results

    def may_write(self, chunk: int) -> bool:
        """For ``work``: whether this process still holds ``chunk`` (call before writing it)."""
        return self.claims.still_mine(chunk)

    def claim_all(self, chunks: Sequence[int], is_done: Callable[[int], bool]) -> list[int]:
        """Claim every chunk of ``chunks`` that is neither done nor held (for a driver that hands
        its chunks to workers, e.g. Dask); release each with ``claims.release`` when written."""
        mine = []
        for chunk in chunks:
            if is_done(chunk) or not self.claims.try_claim(chunk):
                continue
            if is_done(chunk):  # finished between the check and the claim
                self.claims.release(chunk)
            else:
                mine.append(chunk)
        return mine

    def _check_stop(self) -> None:
        if self.stop.requested:
            raise KeyboardInterrupt

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_stop()
            time.sleep(min(0.05, seconds))

    def _state(self) -> str:
        done = self.done_count()
        return f"{done} of {self.total} chunks are done and kept" if done >= 0 else "finished chunks are kept"

    def interrupted(self, chunk: int | None = None) -> JobInterrupted:
        """The error that ends the job on Ctrl-C."""
        message = (f"{self.store}: interrupted (Ctrl-C); {self._state()}"
                   + (f"; {self.describe(chunk)} was not finished" if chunk is not None else "")
                   + f".\nResume with:\n  {self.resume}")
        return JobInterrupted(message, store=self.store, done=self.done_count(), total=self.total, resume=self.resume)

    def failed(self, err: OSError, chunk: int | None = None) -> JobFailed:
        """The error that ends the job when writing fails."""
        full = err.errno in _SPACE_ERRORS
        verb = "writing" if full else "computing or writing"
        what = f"{verb} {self.describe(chunk)}" if chunk is not None else "writing the store"
        where = f" ({err.filename})" if err.filename else ""
        cause = "the disk is full" if full else "an I/O error"
        remedy = "Free space on that disk, then resume with" if full else "Fix the cause, then resume with"
        message = (f"{self.store}: {cause}: {what} failed with {err.strerror or err}{where}. {self._state()}; "
                   f"the failed chunk is not marked done and will be recomputed.\n{remedy}:\n  {self.resume}")
        return JobFailed(message, store=self.store, done=self.done_count(), total=self.total, resume=self.resume)


def _chunk_list(chunks: list[int]) -> str:
    return ("chunk " if len(chunks) == 1 else "chunks ") + ", ".join(map(str, chunks[:10])) + \
        (" ..." if len(chunks) > 10 else "")
