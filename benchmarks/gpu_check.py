"""GPU readiness: recording makes the host wait for the device nowhere per denoiser call.

    python benchmarks/gpu_check.py              # the CPU part; with a GPU, the CUDA part after it
    python benchmarks/gpu_check.py --cpu-only   # the CPU part only (tests/test_gpu_check.py runs it)

**CPU part** (any machine). Tiny SD3, FLUX and Wan denoisers (the real diffusers classes, batch 2)
run bare and recorded (image->text at every layer, every block output, and for SD3 ``latent.in`` /
``latent.pred``) under ``workbench.capture.transfer.HostReadCounter``, which counts every operation
that would make the host wait for a GPU: reads of tensor values (``.item()``, ``float(t)``,
``if t:``, ``torch.equal``, data-dependent shapes) and blocking device->host copies. The recorded
run must read nothing more than the bare run, at 2 and at 4 denoiser calls alike (so nothing per
call). One warm-up recorded call comes first: FLUX reads its position ids once per ids tensor (a
pipeline makes one per run), and the CPU attention kernel checks its output once per shape.

**CUDA part** (when ``torch.cuda.is_available()``). The same recorded calls on the GPU under
``torch.cuda.set_sync_debug_mode("error")``, after the bare calls have passed under it (a denoiser
that synchronises by itself is reported as such, not blamed on the recorder); the recording, read
afterwards, must equal the CPU recording of the same weights to float32 tolerance. Then
``benchmarks/real_width.py --device cuda --video-heads 12`` (Wan at its released 12 heads) writes
``docs/results/real_width_cuda.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from pathlib import Path

import torch

BRANCHES = ("uncond", "cond")
SITES = {
    "sd3": ["transformer_blocks.*.attn.probs.image->text", "transformer_blocks.?.out.*", "latent.in", "latent.pred"],
    "flux": ["transformer_blocks.*.attn.probs.image->text", "single_transformer_blocks.*.attn.probs.image->text",
             "transformer_blocks.?.out.*", "single_transformer_blocks.?.out.*"],
    "wan": ["blocks.*.attn2.probs", "blocks.?.out"],
}


def _family(family: str, device: str):
    from workbench.models.tiny import example_inputs, tiny_denoiser

    model = tiny_denoiser(family).to(device)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in example_inputs(family, batch_size=2).items()}
    return model, inputs


def _calls(model, inputs, n: int):
    with torch.no_grad():
        for _ in range(n):
            model(**dict(inputs), return_dict=False)  # a copy: diffusers may pop keys


def _recorded(model, family: str, inputs, n: int, during=contextlib.nullcontext):
    """``n`` recorded calls; ``during()`` is entered around the calls only (not the recorder's set-up
    and finish, which read the recording once, at its end)."""
    import workbench as wb

    with wb.record(wb.load(model), SITES[family], branches=BRANCHES) as rec:
        with during():
            _calls(model, inputs, n)
    return rec


@contextlib.contextmanager
def sync_debug(mode: str):
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def host_reads(family: str, calls: int, device: str = "cpu") -> dict:
    """Host reads counted during ``calls`` bare denoiser calls and during as many recorded ones."""
    from workbench.capture.transfer import HostReadCounter

    model, inputs = _family(family, device)
    _recorded(model, family, inputs, 1)  # warm-up: once-per-run and once-per-shape reads happen here
    bare, recorded = HostReadCounter(), HostReadCounter()
    with bare:
        _calls(model, inputs, calls)
    rec = _recorded(model, family, inputs, calls, during=lambda: recorded)
    assert len(rec) == len(rec.sites) and all(rec[name].sizes["step"] == calls for name in rec)  # it did record
    return {"family": family, "calls": calls, "bare": dict(bare.counts), "recorded": dict(recorded.counts)}


def cpu_part(families=tuple(SITES)) -> list[dict]:
    """The recorded runs read nothing on the host that the bare runs do not, at 2 and 4 calls alike."""
    results = []
    for family in families:
        for calls in (2, 4):
            r = host_reads(family, calls)
            extra = {op: n - r["bare"].get(op, 0) for op, n in r["recorded"].items() if n != r["bare"].get(op, 0)}
            r["extra"] = extra
            results.append(r)
            print(f"{family}, {calls} calls: bare {r['bare'] or 'no host reads'}, recorded {r['recorded'] or 'no host reads'}",
                  file=sys.stderr)
            if extra:
                raise AssertionError(f"recording {family} makes the host read tensor values the bare run does not: {extra}")
    return results


def cuda_part(families=tuple(SITES)) -> None:
    import warnings

    for family in families:
        model, inputs = _family(family, "cuda")
        _recorded(model, family, inputs, 1)  # warm-up (FLUX reads its position ids once per ids tensor)
        torch.cuda.synchronize()
        try:
            with sync_debug("error"):
                _calls(model, inputs, 2)
        except RuntimeError as error:
            print(f"{family}: the bare denoiser itself synchronises ({error}); counting instead", file=sys.stderr)
            with warnings.catch_warnings(record=True) as bare_warnings, sync_debug("warn"):
                warnings.simplefilter("always")
                _calls(model, inputs, 2)
            with warnings.catch_warnings(record=True) as recorded_warnings:
                warnings.simplefilter("always")
                rec = _recorded(model, family, inputs, 2, during=lambda: sync_debug("warn"))
            if len(recorded_warnings) > len(bare_warnings):
                raise AssertionError(f"{family}: recording adds {len(recorded_warnings) - len(bare_warnings)} "
                                     f"synchronisations: {[str(w.message) for w in recorded_warnings][:3]}")
        else:
            rec = _recorded(model, family, inputs, 2, during=lambda: sync_debug("error"))  # raises at a sync
        cpu_model, cpu_inputs = _family(family, "cpu")
        reference = _recorded(cpu_model, family, cpu_inputs, 2)
        for name in reference:
            torch.testing.assert_close(torch.as_tensor(rec[name].values), torch.as_tensor(reference[name].values),
                                       rtol=1e-3, atol=1e-4)
        print(f"{family}: recorded on CUDA with no synchronisation per call; equal to the CPU recording", file=sys.stderr)
    script = Path(__file__).with_name("real_width.py")
    subprocess.run([sys.executable, str(script), "--device", "cuda", "--video-heads", "12", "--threads", "1"], check=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA part even on a GPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cpu_part()
    print("CPU part: recording reads no tensor value on the host per call (SD3, FLUX, Wan)")
    if args.cpu_only:
        return
    if not torch.cuda.is_available():
        print("no GPU here: the CUDA part (sync debug mode 'error', real_width.py on CUDA) was not run")
        return
    cuda_part()


if __name__ == "__main__":
    main()
