"""GPU readiness without a GPU: benchmarks/gpu_check.py's CPU part (recording reads no tensor value on
the host per denoiser call), the counter it relies on, and the deferred copies and timesteps."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.capture import clock
from workbench.capture.transfer import HostCopies, HostReadCounter, PendingScalar, host_scalar

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return runpy.run_path(str(SCRIPT), run_name="gpu_check")  # the script's functions, not its main()


def test_cpu_part_recording_adds_no_host_read_per_call(gpu_check, one_thread):
    results = gpu_check["cpu_part"]()  # raises if a recorded run reads more than the bare run
    assert {r["family"] for r in results} == {"sd3", "flux", "wan"}
    assert all(r["extra"] == {} for r in results)


def test_cpu_part_catches_a_timestep_read_at_every_call(gpu_check, monkeypatch, one_thread):
    """The check can fail: a clock that reads the timestep on the host at every call (what it did
    before) is caught, with the operation named."""
    read_now = host_scalar
    monkeypatch.setattr(clock, "host_scalar", lambda value, now: read_now(value, now=True))
    with pytest.raises(AssertionError, match="_local_scalar_dense"):
        gpu_check["cpu_part"](("sd3",))


def test_counter_sees_scalar_reads_bools_and_data_dependent_shapes():
    x = torch.tensor([1.0, -2.0])
    with HostReadCounter() as counter:
        x[0].item()
        float(x[1])
        if x[0] > 0:  # a Python bool of a tensor
            pass
        torch.equal(x, x)
        x.nonzero()
        host_scalar(x, now=False)  # set aside, not read
    assert counter.counts == {"aten::_local_scalar_dense": 3, "aten::equal": 1, "aten::nonzero": 1}


def test_pending_timestep_and_host_copies_on_cpu():
    t = torch.tensor([981.0, 981.0])
    pending = host_scalar(t, now=False)
    assert isinstance(pending, PendingScalar)
    t.fill_(0.0)  # a caller that reuses its tensor does not change the value set aside
    assert float(pending) == 981.0 and host_scalar(t, now=True) == 0.0 and host_scalar(None, now=False) != 0.0
    copies = HostCopies()
    x = torch.arange(6.0).reshape(2, 3)
    kept = copies.copy(x, torch.float16)
    x.add_(1.0)  # the model changes its tensor in place: the capture must not
    assert kept.dtype == torch.float16 and kept.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert not copies.pending  # nothing is queued on a CPU


def test_recorded_timesteps_and_intervention_context_read_the_pending_value(mmdit):
    seen = []
    probe = wb.edit("transformer_blocks.0.out.image", lambda x, ctx: seen.append(ctx.timestep) or x)
    with wb.record(mmdit, ["latent.pred"], interventions=[probe]) as rec:
        mmdit.generate(["a red circle on the left"], steps=2, seed=0)
    assert rec.timesteps == seen and all(isinstance(t, float) for t in seen)
    assert list(rec["latent.pred"].timestep.values) == seen
