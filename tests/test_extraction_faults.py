"""Extraction jobs under faults (issue 13), with real processes where processes are involved: two
jobs on one store, a job with other settings, a full disk, Ctrl-C, a damaged chunk; and feature
stores that open in plain xarray without warnings.

Child processes run ``workbench extract`` through ``workbench.cli.main.main``, wrapped so that
each chunk computation appends a line to a count file (the count of computations is observed,
not taken from the job's report) and each chunk write can be slowed down (time to signal or
stop the process between chunks)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from workbench.cli.main import main
from workbench.features import DamagedStore, DatasetSpec, JobFailed, extract, open_features
from workbench.features.feature_store import done_chunks
from workbench.store.jobs import chunk_files, job_dir

SITES = "mid_block.out,up_blocks.1.out"
N_IMAGES, BATCH = 12, 2  # 6 chunks


@pytest.fixture(scope="module")
def toy_unet(tmp_path_factory) -> str:
    from workbench.models.reference import build_components

    folder = tmp_path_factory.mktemp("reference") / "toy-unet"
    build_components("toy-unet", seed=0).save_pretrained(folder, dtype=torch.float32)
    return str(folder)


def argv(model: str, out: Path, *extra: str, timesteps: str = "100,500") -> list[str]:
    return ["extract", "--model", model, "--dataset", "shapes", "--limit", str(N_IMAGES), "--max-objects", "1",
            "--split", "val", "--sites", SITES, "--timesteps", timesteps, "--batch-size", str(BATCH),
            "--out", str(out), "--threads", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def whole(toy_unet, tmp_path_factory) -> xr.Dataset:
    """The uninterrupted single run every scenario must reproduce."""
    out = tmp_path_factory.mktemp("whole") / "whole.zarr"
    assert main(argv(toy_unet, out)) == 0
    return open_features(out).load()


def assert_equal_to(path, whole: xr.Dataset) -> None:
    ds = open_features(path).load()
    for name in [*whole.attrs["sites"], "valid", "done", "shape", "colour"]:
        np.testing.assert_array_equal(ds[name].values, whole[name].values, err_msg=name)


CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from workbench.cli.main import main
from workbench.features import extraction, feature_store
count_file, delay = sys.argv[1], float(sys.argv[2])
compute, write = extraction.Extractor.compute, feature_store.write_chunk
def counted(self, indices):
    with open(count_file, "a") as f:
        f.write(f"{min(indices)}\\n")
    return compute(self, indices)
def slow(*args, **kwargs):
    write(*args, **kwargs)
    time.sleep(delay)
extraction.Extractor.compute = counted
feature_store.write_chunk = slow
sys.exit(main(sys.argv[3:]))
"""


def start(args: list[str], counts: Path, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(counts), str(delay), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def computations(counts: Path) -> list[int]:
    """The chunks computed, one entry per computation, from the count file."""
    return [int(line) // BATCH for line in counts.read_text().split()] if counts.exists() else []


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def wait_for(condition, timeout: float = 90, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended early: {finish(proc)[1][-2000:]}")
        time.sleep(0.02)


def n_done(out: Path) -> int:
    try:
        return int(done_chunks(out).sum())
    except Exception:  # not created yet
        return 0


def held_claims(out: Path) -> list[Path]:
    return sorted((job_dir(out) / "claims").glob("*.*")) if job_dir(out).exists() else []


# -- 1. two jobs on one store -----------------------------------------------------------------------
def test_two_identical_jobs_started_together_compute_each_chunk_once(tmp_path, toy_unet, whole):
    out = tmp_path / "shared.zarr"
    counts = [tmp_path / "a.count", tmp_path / "b.count"]
    procs = [start(argv(toy_unet, out), c, delay=0.2) for c in counts]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    done_by = [computations(c) for c in counts]
    assert sorted(done_by[0] + done_by[1]) == list(range(N_IMAGES // BATCH)), done_by  # once each
    assert_equal_to(out, whole)


def test_a_job_waits_for_a_chunk_another_job_holds_and_a_different_job_is_refused(tmp_path, toy_unet, whole, capsys):
    out = tmp_path / "shared.zarr"
    counts_a, counts_b = tmp_path / "a.count", tmp_path / "b.count"
    a = start(argv(toy_unet, out), counts_a, delay=0.3)
    try:
        while True:  # stop job A while it holds a chunk (claimed, not finished)
            wait_for(lambda: held_claims(out), proc=a)
            os.kill(a.pid, signal.SIGSTOP)
            if held_claims(out):
                break
            os.kill(a.pid, signal.SIGCONT)
        held = len(held_claims(out))

        b = start(argv(toy_unet, out), counts_b)
        # A job with other settings (here, in this process) while A holds the store: refused.
        assert main(argv(toy_unet, out, timesteps="100")) == 2
        refused = capsys.readouterr().err
        assert "different job" in refused and "timesteps: store has [100, 500], this job asks [100]" in refused
        assert main(argv(toy_unet, out, "--overwrite")) == 2  # nor replaced while A holds a chunk
        refused = capsys.readouterr().err
        assert "being written by another job" in refused and f"pid {a.pid} on" in refused
        wait_for(lambda: n_done(out) == N_IMAGES // BATCH - held, proc=b)  # B did all A does not hold ...
        time.sleep(0.5)
        assert b.poll() is None  # ... and waits for the chunk A holds instead of computing it too
        os.kill(a.pid, signal.SIGCONT)
        code_a, text_a = finish(a)
        code_b, text_b = finish(b)
    finally:
        for proc in (a,):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    assert (code_a, code_b) == (0, 0), text_a + text_b
    by_a, by_b = computations(counts_a), computations(counts_b)
    assert by_a and by_b, (by_a, by_b)
    assert sorted(by_a + by_b) == list(range(N_IMAGES // BATCH)), (by_a, by_b)
    assert "computed by another job" in text_b
    assert_equal_to(out, whole)
    assert not held_claims(out)  # every claim released


# -- 2. a full disk ---------------------------------------------------------------------------------
def test_a_full_disk_ends_the_job_clearly_and_a_rerun_completes(tmp_path, toy_unet, whole, monkeypatch, capsys):
    import zarr.storage._local as local_store

    out, after = tmp_path / "full.zarr", 2
    put, marks = local_store._put, []

    def full_disk(path, value, exclusive=False):
        """A disk that fills up after ``after`` chunks: the next data write stops half-way."""
        path = Path(path)
        if out.name in str(path) and "creating" not in str(path):
            if path.parent.parent.name == "done" or path.parent.name == "done":
                marks.append(path)
            elif len(marks) >= after:
                data = bytes(value.as_buffer_like())
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data[: max(1, len(data) // 2)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local_store, "_put", full_disk)
    assert main(argv(toy_unet, out)) == 1
    message = capsys.readouterr().err
    assert str(out) in message and "disk is full" in message and "No space left on device" in message
    assert "chunk 2 (images 4..5)" in message and "2 of 6 chunks are done" in message
    assert f"workbench extract --model {toy_unet}" in message and f"--out {out}" in message
    assert done_chunks(out).tolist() == [True, True, False, False, False, False]  # the half-written one is not done

    monkeypatch.setattr(local_store, "_put", put)  # space freed
    resumed = extract(model=toy_unet, dataset=DatasetSpec("shapes", limit=N_IMAGES, max_objects=1, split="val"),
                      sites=SITES.split(","), timesteps=[100, 500], batch_size=BATCH, out=str(out), threads=1,
                      progress=False)
    assert resumed.computed == [2, 3, 4, 5] and resumed.already_done == 2
    assert_equal_to(out, whole)


def test_a_failing_write_in_the_library_raises_job_failed(tmp_path, toy_unet, monkeypatch):
    from workbench.features import feature_store

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(feature_store, "write_chunk", no_space)
    with pytest.raises(JobFailed, match=r"(?s)disk is full.*0 of 6 chunks.*run the same extract\(\.\.\.\) call"):
        extract(model=toy_unet, dataset="shapes", dataset_options=dict(limit=N_IMAGES, max_objects=1, split="val"),
                sites=SITES.split(","), timesteps=[100, 500], batch_size=BATCH, out=str(tmp_path / "f.zarr"),
                threads=1, progress=False)
    assert not held_claims(tmp_path / "f.zarr")


# -- 3. Ctrl-C --------------------------------------------------------------------------------------
def test_ctrl_c_stops_within_one_chunk_keeps_finished_chunks_and_says_how_to_resume(tmp_path, toy_unet, whole):
    out, counts, delay = tmp_path / "stopped.zarr", tmp_path / "c.count", 0.5
    proc = start(argv(toy_unet, out), counts, delay=delay)
    wait_for(lambda: n_done(out) >= 2, proc=proc)
    done_at_signal = n_done(out)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, text = finish(proc)
    took = time.monotonic() - sent
    assert code == 130, text
    assert "interrupted (Ctrl-C)" in text and "Resume with:" in text
    assert f"workbench extract --model {toy_unet}" in text
    done_after = n_done(out)
    assert done_at_signal <= done_after <= done_at_signal + 1, "more than the current chunk ran after Ctrl-C"
    assert done_after < N_IMAGES // BATCH, "the job was not stopped"
    assert took < 10 * delay + 5, took
    assert not held_claims(out)

    assert main(argv(toy_unet, out)) == 0  # the printed resume command
    assert sorted(computations(counts)) == list(range(done_after))  # the job ended after the chunk in flight
    assert_equal_to(out, whole)


# -- 4. a damaged chunk -----------------------------------------------------------------------------
def test_a_damaged_chunk_is_named_on_open_and_only_it_is_recomputed(tmp_path, toy_unet, whole, capsys):
    out = tmp_path / "damaged.zarr"
    assert main(argv(toy_unet, out)) == 0
    site_file = out / chunk_files(out, ["mid_block.out"], 1)[0]
    site_file.write_bytes(site_file.read_bytes()[: site_file.stat().st_size // 2])  # truncated
    (out / chunk_files(out, ["valid"], 4)[0]).unlink()  # deleted

    with pytest.raises(DamagedStore, match=r"chunk 1 \(images 2\.\.3\): mid_block.out/c/1/0/0 has \d+ bytes, \d+ were"):
        open_features(out)
    with pytest.raises(DamagedStore, match=r"chunk 4 \(images 8\.\.9\): valid/c/4 is missing"):
        open_features(out)

    capsys.readouterr()
    assert main(argv(toy_unet, out, "--verify")) == 0
    printed = capsys.readouterr().out
    assert "computed 2 of 6 chunks" in printed and "damaged chunk(s) (1, 4)" in printed
    assert_equal_to(out, whole)

    # Damage that keeps the file's size is found only by reading the values: --verify.
    value_file = out / chunk_files(out, ["up_blocks.1.out"], 3)[0]
    altered = bytearray(value_file.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    value_file.write_bytes(bytes(altered))
    assert main(argv(toy_unet, out)) == 0 and "nothing to do" in capsys.readouterr().out
    assert main(argv(toy_unet, out, "--verify")) == 0
    assert "damaged chunk(s) (3)" in capsys.readouterr().out
    assert_equal_to(out, whole)


# -- 5. stores that open cleanly --------------------------------------------------------------------
def test_feature_stores_open_in_plain_xarray_without_warnings(tmp_path, toy_unet, whole):
    out = tmp_path / "clean.zarr"
    assert main(argv(toy_unet, out)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(out)
        assert ds["done"].values.all()
        np.testing.assert_array_equal(ds["mid_block.out"].values, whole["mid_block.out"].values)
        xr.open_datatree(out, engine="zarr")
        open_features(out).load()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunk_records_digest_what_is_on_disk(tmp_path, toy_unet, dtype):
    """The record's digest is taken from the blocks as written (no read-back); it must equal the
    digest of the blocks read from disk, the last partial chunk and float16 stores included, or a
    later --verify would call every chunk damaged."""
    from workbench.store.jobs import ChunkRecords, chunk_digest

    out = tmp_path / "f.zarr"
    extract(model=toy_unet, dataset=DatasetSpec(kind="shapes", split="val", limit=5, max_objects=1),
            sites=SITES.split(","), timesteps=[100], batch_size=BATCH, out=str(out), dtype=dtype, progress=False)
    records = ChunkRecords(out)
    for chunk in range(3):  # 2 + 2 + 1 images
        record = records.read(chunk)
        assert record["digest"] == chunk_digest(out, record["variables"], chunk)
        assert records.damage(chunk, full=True) is None
    array = open_features(out)["mid_block.out"]
    assert array.dtype == np.dtype(dtype) and np.isfinite(array.values).all()
