"""Chunk claims: one writer per chunk of a store, across processes and machines.

Rule 2 of ``workbench.store.jobs``: a process claims a chunk before computing it by creating the
file ``<store>.job/claims/<chunk>.<generation>`` with ``O_CREAT | O_EXCL`` (atomic on local file
systems and NFS), naming its host and pid, and touches it every ``heartbeat`` seconds while it
works. The highest generation is the current claim. A claim is dead when its pid is gone (same
host) or it was not touched for ``stale_after`` seconds (any host); it is taken over by creating
the next generation, again exclusively, so of two processes that find it dead only one takes it.
Released claims are deleted.

Example:
    >>> claims = Claims("feats.zarr")                 # doctest: +SKIP
    >>> if claims.try_claim(3):                       # doctest: +SKIP
    ...     compute_and_write(3); claims.release(3)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("workbench.jobs")

HOST = socket.gethostname()
STALE_AFTER = 120.0  # seconds without a heartbeat after which a claim is dead
HEARTBEAT = 5.0  # seconds between touches of the claims a process holds
_HELD_HERE: set[Path] = set()  # claim files held by this process (its own pid is always "alive")


def job_dir(store) -> Path:
    """Where a store's job bookkeeping lives: ``<store>.job/`` beside it (zarr warns about any
    file inside a store that is not part of its hierarchy)."""
    store = Path(store)
    return store.with_name(store.name + ".job")


def remove_store(store) -> None:
    """Delete a store and its job bookkeeping."""
    for path in (Path(store), job_dir(store)):
        if path.exists():
            shutil.rmtree(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass
class Holder:
    """Who holds a chunk's claim, and how long ago they last showed life."""

    host: str
    pid: int
    generation: int
    quiet_seconds: float

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


class Claims:
    """The chunk claims of one store, as seen by this process (see the module docstring)."""

    def __init__(self, store, *, stale_after: float = STALE_AFTER, heartbeat: float = HEARTBEAT):
        self.dir = job_dir(store) / "claims"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stale_after, self.heartbeat = float(stale_after), float(heartbeat)
        self.held: dict[int, Path] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _generations(self, chunk: int) -> list[tuple[int, Path]]:
        out = []
        for path in self.dir.glob(f"{chunk}.*"):
            suffix = path.name.split(".", 1)[1]
            if suffix.isdigit():
                out.append((int(suffix), path))
        return sorted(out)

    def holder(self, chunk: int) -> Holder | None:
        """The current claim on ``chunk`` (None when unclaimed)."""
        generations = self._generations(chunk)
        if not generations:
            return None
        generation, path = generations[-1]
        try:
            owner = json.loads(path.read_text())
            quiet = time.time() - path.stat().st_mtime
        except (OSError, ValueError):  # released or being written right now: treat as held
            return Holder("?", -1, generation, 0.0)
        return Holder(str(owner.get("host")), int(owner.get("pid", -1)), generation, quiet)

    def alive(self, holder: Holder, chunk: int | None = None) -> bool:
        if holder.pid == -1:
            return True
        if holder.quiet_seconds > self.stale_after:
            return False
        if holder.host == HOST:
            if holder.pid == os.getpid():  # ours only while this process really holds it
                return chunk is not None and any(p.name == f"{chunk}.{holder.generation}" for p in _HELD_HERE)
            return pid_alive(holder.pid)
        return True

    def live_holders(self) -> str:
        """The live processes holding any claim, e.g. ``"pid 812 on node3"`` ("" when none)."""
        chunks = {int(p.name.split(".")[0]) for p in self.dir.glob("*.*") if p.name.split(".")[0].isdigit()}
        holders = [self.holder(chunk) for chunk in chunks]
        return ", ".join(sorted({str(h) for h in holders if h is not None and self.alive(h)}))

    def clear_dead(self, is_done) -> None:
        """Delete the dead claims on finished chunks (left by a job killed after marking a chunk
        done, before releasing it). Claims on unfinished chunks stay: they are taken over."""
        for path in list(self.dir.glob("*.*")):
            chunk = path.name.split(".")[0]
            if not chunk.isdigit() or not is_done(int(chunk)):
                continue
            holder = self.holder(int(chunk))
            if holder is not None and not self.alive(holder, int(chunk)):
                path.unlink(missing_ok=True)

    def try_claim(self, chunk: int) -> bool:
        """Claim ``chunk`` if nobody alive holds it. True when this process now holds it."""
        current = self.holder(chunk)
        if current is not None and self.alive(current, chunk):
            return False
        generation = 0 if current is None else current.generation + 1
        path = self.dir / f"{chunk}.{generation}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another process claimed (or took over) first
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"host": HOST, "pid": os.getpid(), "since": time.time()}, f)
        if current is not None:
            log.warning("chunk %d: taking over the claim of %s (quiet for %.0f s, not running)", chunk, current,
                        current.quiet_seconds)
        with self._lock:
            self.held[chunk] = path
            _HELD_HERE.add(path)
        self._start_heartbeat()
        return True

    def still_mine(self, chunk: int) -> bool:
        """Whether this process still holds the newest claim on ``chunk`` (False if it was taken
        over because this process looked dead, e.g. it was suspended past ``stale_after``)."""
        generations = self._generations(chunk)
        return bool(generations) and generations[-1][1] == self.held.get(chunk)

    def release(self, chunk: int) -> None:
        with self._lock:
            path = self.held.pop(chunk, None)
            _HELD_HERE.discard(path)
        if path is None:
            return
        mine = int(path.name.split(".", 1)[1])
        for generation, older in self._generations(chunk):
            if generation <= mine:  # ours and the dead ones we took over from
                older.unlink(missing_ok=True)

    def release_all(self) -> None:
        for chunk in list(self.held):
            self.release(chunk)

    def close(self) -> None:
        self.release_all()
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None

    def _start_heartbeat(self) -> None:
        if self._beat is not None:
            return
        self._stop.clear()
        self._beat = threading.Thread(target=self._beating, name="workbench-claims-heartbeat", daemon=True)
        self._beat.start()

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                paths = list(self.held.values())
            for path in paths:
                try:
                    os.utime(path)
                except OSError:
                    pass
