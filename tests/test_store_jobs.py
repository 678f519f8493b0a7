"""The rules of every job that writes a store (workbench/store/jobs.py), on their own: chunk claims
raced by real processes, taking over dead claims, atomic creation, chunk records; and recording
stores that open in plain xarray without warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import workbench as wb
import workbench.store.claims as claims_module
from workbench.store.claims import Claims
from workbench.store.jobs import ChunkRecords, StoreJob, create_atomically

# claims.py needs only the standard library: the racers load it alone (importing the workbench
# package would load torch, seconds per process), so they start at once.
RACER = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("claims", sys.argv[5])
module = sys.modules["claims"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
Claims = module.Claims
store, n, me, racers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
claims = Claims(store)
(claims.dir.parent / f"ready-{me}").touch()
while len(list(claims.dir.parent.glob("ready-*"))) < racers:  # all racers begin together
    time.sleep(0.001)
won = [c for c in range(n) if claims.try_claim(c)]
print(json.dumps(won), flush=True)
(claims.dir.parent / f"finished-{me}").touch()
while len(list(claims.dir.parent.glob("finished-*"))) < racers:  # hold the claims (alive) until all tried
    time.sleep(0.01)
"""


def test_claims_raced_by_real_processes_give_each_chunk_one_owner(tmp_path):
    store, n, racers = tmp_path / "s.zarr", 500, 4
    source = Path(claims_module.__file__)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(store), str(n), str(i), str(racers), str(source)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(racers)]
    won = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        won.append(json.loads(out))
    claimed = sorted(c for chunks in won for c in chunks)
    assert claimed == list(range(n)), "a chunk was claimed twice or not at all"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    claims = Claims(tmp_path / "s.zarr")
    import socket

    (claims.dir / "0.0").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    (claims.dir / "1.0").write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # alive, other host
    (claims.dir / "2.0").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    old = time.time() - 3600
    os.utime(claims.dir / "2.0", (old, old))  # ... but silent for an hour: dead
    try:
        assert claims.try_claim(0) and claims.held[0].name == "0.1"  # the next generation
        assert not claims.try_claim(1)
        assert claims.try_claim(2)
        assert str(claims.holder(1)) == "pid 1 on elsewhere"
        claims.release(0)
        assert not list(claims.dir.glob("0.*"))  # released with the dead claim it replaced
    finally:
        claims.close()


def test_a_live_claim_is_left_alone_and_a_lost_claim_is_noticed(tmp_path):
    first, second = Claims(tmp_path / "s.zarr"), Claims(tmp_path / "s.zarr", stale_after=0.2)
    try:
        assert first.try_claim(3)
        assert not second.try_claim(3)  # held by this live process
        assert first.still_mine(3)
        # first looks dead to a process with a short patience once its file is old
        old = time.time() - 10
        os.utime(first.held[3], (old, old))
        (first.dir / "3.1").write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # taken over elsewhere
        assert not first.still_mine(3)
    finally:
        first.close()
        second.close()


def test_the_heartbeat_keeps_a_held_claim_fresh(tmp_path):
    claims = Claims(tmp_path / "s.zarr", heartbeat=0.05)
    try:
        assert claims.try_claim(0)
        old = time.time() - 1000
        os.utime(claims.held[0], (old, old))
        time.sleep(0.3)
        assert claims.holder(0).quiet_seconds < 5
    finally:
        claims.close()
    assert not list(claims.dir.glob("*"))


def test_atomic_creation_lets_one_process_win(tmp_path):
    target = tmp_path / "s.zarr"

    def build(folder: Path, text: str):
        folder.mkdir()
        (folder / "who").write_text(text)

    assert create_atomically(target, lambda f: build(f, "first"))
    assert not create_atomically(target, lambda f: build(f, "second"))
    assert (target / "who").read_text() == "first"
    assert not list(tmp_path.glob(".s.zarr.creating-*"))  # the loser's build is cleaned up


def test_chunk_records_find_missing_truncated_and_altered_chunks(tmp_path):
    path = tmp_path / "s.zarr"
    data = np.arange(40, dtype=np.float32).reshape(4, 10) + 0.5
    xr.Dataset({"a": (("i", "x"), data)}).to_zarr(path, encoding={"a": {"chunks": (1, 10)}}, consolidated=False)
    records = ChunkRecords(path)
    for chunk in range(4):
        records.write(chunk, ["a"])
    assert [records.damage(c, full=True) for c in range(4)] == [None] * 4
    files = [path / "a" / "c" / str(c) / "0" for c in range(4)]
    files[1].unlink()
    files[2].write_bytes(files[2].read_bytes()[:5])
    altered = bytearray(files[3].read_bytes())
    altered[-1] ^= 0xFF
    files[3].write_bytes(bytes(altered))
    assert "missing" in records.damage(1) and "bytes" in records.damage(2)
    assert records.damage(3) is None  # same size: only a full check reads the values
    assert records.damage(3, full=True) is not None
    records.forget(2)  # a chunk without a record: only a full check, and only for undecodable data
    assert records.damage(2) is None and records.damage(2, full=True) is None
    assert "cannot be decoded" in records.damage(2, full=True, variables=["a"])


def test_store_job_waits_for_a_chunk_held_elsewhere_then_takes_it_over(tmp_path):
    store = tmp_path / "s.zarr"
    done: set[int] = set()
    claims = Claims(store)
    (claims.dir / "1.0").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    computed = []

    def work(chunk):
        computed.append(chunk)
        done.add(chunk)
        return chunk

    start = time.monotonic()
    with StoreJob(store, resume="again", total=3, stale_after=1.0, poll=0.1) as job:
        assert job.run([0, 1, 2], work, lambda c: c in done) == [0, 2, 1]
    assert computed == [0, 2, 1] and time.monotonic() - start >= 0.9  # chunk 1 once its holder went quiet


# -- recording stores ------------------------------------------------------------------------------
def test_recording_stores_open_in_plain_xarray_without_warnings(tmp_path):
    model = wb.load("tiny-sd3")
    sites = ["transformer_blocks.0.out.image", "latent.x0"]
    streamed, whole = tmp_path / "streamed.zarr", tmp_path / "whole.zarr"
    with wb.record(model, sites, store=streamed):
        model.generate(["a red circle"], steps=2)
    with wb.record(model, sites) as rec:
        model.generate(["a red circle"], steps=2)
    rec.save(whole)
    for path in (streamed, whole):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tree = xr.open_datatree(path, engine="zarr")
            assert set(tree.children) == set(sites)
            xr.open_zarr(path, group="latent.x0").load()
            opened = wb.open_recording(path)
        np.testing.assert_array_equal(opened["latent.x0"].values, rec["latent.x0"].values)
