"""Capture cost at real widths and token counts: SD3-medium, FLUX.1 and Wan 2.1 geometries.

The real diffusers classes, built from configs with random weights (``workbench.models.tiny``'s
builder with the released models' widths) and few layers, run a flow-matching loop at batch 2 (the
two guidance branches, batched):

* ``sd3-medium``: ``SD3Transformer2DModel``, 24 heads x 64 (1536 wide), 1024 px = 4096 image
  tokens + 333 text tokens (77 CLIP + 256 T5), 2 joint layers (the second is SD3's last layer,
  whose text stream stops);
* ``flux``: ``FluxTransformer2DModel``, 24 heads x 128 (3072 wide), 1 double-stream + 1
  single-stream block, 512 px = 1024 image tokens + 512 text tokens;
* ``wan``: ``WanTransformer3DModel`` (Wan 2.1 T2V 1.3B layout), 16 latent frames of 64 x 64 = 16,384
  video tokens + 512 text tokens, head dim 128, 1 layer; on a CPU with 2 heads (256 wide) instead of
  12 (1536), since one full-width call costs about 90 s of one core there (``--video-heads 12`` on a GPU).

Per geometry, in one process, bare runs and each configuration alternate (the side-by-side method of
``benchmarks/capture_overhead.py``, ``workbench.studies.timing``): every block output; image->text
probabilities at every layer (video->text for Wan, its cross-attention); the same streamed to a zarr
store. Reported: wall and CPU seconds, their ratios to bare, and each run's own peak resident memory.
Then, in fresh processes, one streamed recording at 2 and at 6 steps: its peak memory must not grow
with the number of steps.

    python benchmarks/real_width.py                 # all geometries -> docs/results/real_width.json (~15-20 min, 2 cores)
    python benchmarks/real_width.py --update-doc    # its tables into docs/benchmarks.md
    python benchmarks/real_width.py --smoke --json /tmp/rw.json   # the same code at tiny sizes, seconds
    python benchmarks/real_width.py --device cuda --video-heads 12   # on a GPU (benchmarks/gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

TARGET_IMAGE_TEXT = 1.15  # image->text at every layer, CPU time against bare
FLAT_STEPS = (2, 6)  # a streamed recording's peak memory is measured at these step counts
SMOKE_FLAT_STEPS = (1, 2)
BRANCHES = ("uncond", "cond")  # batch 2: classifier-free guidance batched into one call

QUERIES = {"stride": 8}  # every 8th patch along y and x (and every frame): 64 of SD3's 4096 image queries
CONFIGS = {
    "blocks": "every block output, every step",
    "image_text": "image->text probabilities, every layer and step",
    "queries": "image->image probabilities of every 8th patch in y and x (`queries=`), every layer and step",
    "stream": "image->text probabilities, every layer and step, streamed to zarr",
}


@dataclass
class Workload:
    """One geometry, built: the denoiser, its scheduler, the batch-2 latents, and what to record."""

    model: torch.nn.Module
    scheduler: object
    latents: torch.Tensor
    call: object  # (latents, t) -> the denoiser's prediction
    sites: dict[str, list[str]]  # configuration -> site patterns
    tokens: str  # what the token count is, in words
    config: dict = field(default_factory=dict)  # the denoiser config overrides (widths, layers)


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def _build(family: str, overrides: dict, device: str) -> torch.nn.Module:
    from workbench.models.tiny import tiny_denoiser

    return tiny_denoiser(family, **overrides).to(device)


def _randn(*shape, device: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def sd3_medium(real: bool, device: str, layers: int | None = None, **_) -> Workload:
    # SD3-medium: 24 x 64, T5 width 4096, pooled CLIP-L + CLIP-G 2048, 128 x 128 latents; qk_norm None
    config = (dict(num_layers=2, num_attention_heads=24, attention_head_dim=64, joint_attention_dim=4096,
                   caption_projection_dim=1536, pooled_projection_dim=2048, sample_size=128, pos_embed_max_size=192,
                   qk_norm=None) if real else dict(num_layers=2))
    if layers is not None:
        config["num_layers"] = layers
    model = _build("sd3", config, device)
    cfg, b = model.config, len(BRANCHES)
    text_len = 333 if real else 8
    latents = _randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    text = _randn(b, text_len, cfg.joint_attention_dim, device=device, seed=1)
    pooled = _randn(b, cfg.pooled_projection_dim, device=device, seed=2)

    def call(x, t):
        return model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                     timestep=t.expand(b).to(device), return_dict=False)[0]

    n_image = (cfg.sample_size // cfg.patch_size) ** 2
    return Workload(model, _scheduler(), latents, call, tokens=f"{n_image} image + {text_len} text", config=config, sites={
        "blocks": ["transformer_blocks.?.out.*"],
        "image_text": ["transformer_blocks.*.attn.probs.image->text"],
        "queries": ["transformer_blocks.*.attn.probs.image->image"],
    })


def flux(real: bool, device: str, layers: int | None = None, **_) -> Workload:
    # FLUX.1-dev: 24 x 128 (3072 wide), T5 width 4096, pooled CLIP-L 768, RoPE axes (16, 56, 56)
    config = (dict(num_layers=1, num_single_layers=1, num_attention_heads=24, attention_head_dim=128,
                   joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))
              if real else dict(num_layers=1, num_single_layers=1))
    if layers is not None:
        config.update(num_layers=layers, num_single_layers=layers)
    model = _build("flux", config, device)
    from workbench.models.tiny.flux import packed_image_ids

    cfg, b = model.config, len(BRANCHES)
    side, text_len = (32, 512) if real else (8, 8)  # packed 2 x 2 latent patches: 512 px -> 32 x 32 tokens
    latents = _randn(b, side * side, cfg.in_channels, device=device)
    text = _randn(b, text_len, cfg.joint_attention_dim, device=device, seed=1)
    pooled = _randn(b, cfg.pooled_projection_dim, device=device, seed=2)
    img_ids, txt_ids = packed_image_ids(side, side).to(device), torch.zeros(text_len, 3, device=device)
    guidance = torch.full((b,), 3.5, device=device)

    def call(x, t):
        return model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                     timestep=(t / 1000).expand(b).to(device), img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                     return_dict=False)[0]

    return Workload(model, _scheduler(), latents, call, tokens=f"{side * side} image + {text_len} text", config=config, sites={
        "blocks": ["transformer_blocks.?.out.*", "single_transformer_blocks.?.out.*"],
        "image_text": ["transformer_blocks.*.attn.probs.image->text", "single_transformer_blocks.*.attn.probs.image->text"],
        "queries": ["transformer_blocks.*.attn.probs.image->image", "single_transformer_blocks.*.attn.probs.image->image"],
    })


def wan(real: bool, device: str, layers: int | None = None, video_heads: int = 2, **_) -> Workload:
    # Wan 2.1 T2V 1.3B: 12 x 128, ffn 8960, umT5 width 4096, 16 latent channels; here `video_heads` heads
    width = video_heads * 128
    config = (dict(num_layers=1, num_attention_heads=video_heads, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=width * 8960 // 1536, rope_max_seq_len=1024)
              if real else dict(num_layers=1))
    if layers is not None:
        config["num_layers"] = layers
    model = _build("wan", config, device)
    cfg, b = model.config, len(BRANCHES)
    frames, size, text_len = (16, 64, 512) if real else (3, 8, 8)
    latents = _randn(b, cfg.in_channels, frames, size, size, device=device)
    text = _randn(b, text_len, cfg.text_dim, device=device, seed=1)

    def call(x, t):
        return model(hidden_states=x, timestep=t.expand(b).to(device), encoder_hidden_states=text, return_dict=False)[0]

    n_video = frames * (size // 2) ** 2
    return Workload(model, _scheduler(), latents, call, config=config,
                    tokens=f"{n_video} video ({frames} x {size // 2} x {size // 2}) + {text_len} text", sites={
        "blocks": ["blocks.?.out"],
        "image_text": ["blocks.*.attn2.probs"],  # Wan's text enters by cross-attention: attn2 is video->text
        "queries": ["blocks.*.attn1.probs"],  # video->video self-attention
    })


GEOMETRIES = {"sd3-medium": sd3_medium, "wan": wan, "flux": flux}  # in the order measured: the costliest last
# repeats per geometry on a CPU: each bare call of SD3-medium's two layers costs ~25 s of one core
REPEATS = {"sd3-medium": 2, "flux": 1, "wan": 2}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the timed run ends when the device has finished its work


def denoise(work: Workload, steps: int, device: str):
    work.scheduler.set_timesteps(steps)
    latents = work.latents
    with torch.no_grad():
        for t in work.scheduler.timesteps:
            latents = work.scheduler.step(work.call(latents, t), t, latents, return_dict=False)[0]
    _sync(device)
    return latents


def recorded(work: Workload, sites: list[str], steps: int, device: str, store=None, queries=None):
    """A zero-argument function: one recorded run of ``steps`` steps; returns the recording."""
    import workbench as wb

    model = wb.load(work.model, scheduler=work.scheduler)

    def run():
        with wb.record(model, sites, branches=BRANCHES, store=store, queries=queries) as rec:
            denoise(work, steps, device)
        return rec

    return run


def measure_geometry(name: str, real: bool, device: str, steps: int, repeats: int, video_heads: int) -> dict:
    """Bare runs and every configuration side by side in this process."""
    from workbench.studies.timing import side_by_side

    work = GEOMETRIES[name](real, device, video_heads=video_heads)
    store = Path(tempfile.mkdtemp(prefix="real_width_")) / "stream.zarr"
    try:
        runs = {
            "blocks": recorded(work, work.sites["blocks"], steps, device),
            "image_text": recorded(work, work.sites["image_text"], steps, device),
            "queries": recorded(work, work.sites["queries"], steps, device, queries=QUERIES),
            "stream": recorded(work, work.sites["image_text"], steps, device, store=store),
        }
        # one bare warm-up, one image->text warm-up (the attention kernel's one-off check per shape),
        # then (each configuration, bare) in turn
        warm = runs["image_text"]()
        captured = warm.nbytes()  # what the target row holds per run
        del warm
        measured = side_by_side(lambda: denoise(work, steps, device), runs, repeats, leading_bare=0, warm_up=False)
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)
    return {"geometry": name, "measured": _now(), "code": _code(), "tokens": work.tokens, "model": type(work.model).__name__,
            "config": _jsonable(work.config),
            "steps": steps, "repeats": repeats, "captured_mib_per_step": captured / steps / 2**20,
            "rows": [{"config": c, **measured[c]} for c in runs]}


def measure_flatness(name: str, real: bool, device: str, steps: int, video_heads: int, layers: int | None) -> dict:
    """One streamed image->text recording of ``steps`` steps in this (fresh) process: its own peak memory."""
    import workbench as wb
    from workbench.studies.timing import measure_run

    work = GEOMETRIES[name](real, device, video_heads=video_heads, layers=layers)
    folder = Path(tempfile.mkdtemp(prefix="real_width_"))
    try:
        denoise(work, 1, device)  # warm-up, so that one-off allocations are not counted
        row = measure_run(recorded(work, work.sites["image_text"], steps, device, store=folder / "stream.zarr"))
        stored = wb.open_recording(folder / "stream.zarr")
        per_step = sum(a.isel(step=0).nbytes for a in stored.values())  # what one step would hold unstreamed
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"geometry": name, "measured": _now(), "code": _code(), "tokens": work.tokens, "config": _jsonable(work.config),
            "steps": steps,
            "captured_mib_per_step": per_step / 2**20, **row}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _code() -> str:
    """The commit of the workbench checkout measured (``git describe``), or what ``$WORKBENCH_CODE`` says
    (a copy of a checkout without its git folder)."""
    import os

    import workbench

    if os.environ.get("WORKBENCH_CODE"):
        return os.environ["WORKBENCH_CODE"]
    root = Path(workbench.__file__).resolve().parents[1]
    proc = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def _jsonable(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _in_subprocess(args: list[str]) -> dict:
    """One measurement in a fresh interpreter (so its peak memory is its own); its JSON back."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"real_width {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine(threads: int, device: str) -> str:
    import diffusers

    cpu = platform.processor() or platform.machine()
    try:
        cores = len(__import__("os").sched_getaffinity(0))
    except AttributeError:
        cores = __import__("os").cpu_count()
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU only, {cores} cores"
    return (f"{cpu}, {where}; {threads} torch thread(s); torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"Python {platform.python_version()}")


def run_all(geometries: list[str], *, real: bool, device: str, threads: int, video_heads: int,
            flat_geometry: str | None, flat_layers: int | None, out: Path | None, in_process: bool,
            resume: bool = False, merge: tuple[str, ...] = (), flatness: bool = True) -> dict:
    """Every geometry side by side, and the flatness runs after ``flat_geometry``'s; ``out`` is rewritten
    after each measurement, so a long run that is stopped keeps what it finished (``resume``: and goes
    on from there, measuring only what ``out`` does not hold yet)."""
    common = ["--threads", str(threads), "--device", device, "--video-heads", str(video_heads)] + ([] if real else ["--smoke"])
    saved = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(threads, device),
             "real": real, "device": device, "target_image_text": TARGET_IMAGE_TEXT, "branches": list(BRANCHES),
             "geometries": [], "flatness": []}

    def save():
        if out is not None:
            out.write_text(json.dumps(saved, indent=1) + "\n")

    if resume and out is not None and out.exists():  # a stopped run goes on: what it measured is kept
        saved = json.loads(out.read_text())
        saved.setdefault("resumed", []).append(_now())
    for other in merge:  # measurements of another run (its own bare runs in each process) that this one lacks
        theirs = json.loads(Path(other).read_text())
        for entry in theirs["geometries"] + theirs["flatness"]:  # a file from before entries carried their time
            entry.setdefault("measured", f"in a run started {theirs['date']}")
        have = {g["geometry"] for g in saved["geometries"]}
        saved["geometries"] += [g for g in theirs["geometries"] if g["geometry"] not in have]
        if not saved["flatness"]:
            saved["flatness"] = theirs["flatness"]
        saved.setdefault("merged", []).append(f"{Path(other).name} ({theirs['date']})")
    save()
    done = {g["geometry"] for g in saved["geometries"]}
    flat_done = {r["steps"] for r in saved["flatness"]}

    for name in geometries:
        repeats = REPEATS[name] if real else 1
        if name not in done:
            print(f"{name}: measuring ({repeats} repeat(s))", file=sys.stderr, flush=True)
            if in_process:
                result = measure_geometry(name, real, device, 1, repeats, video_heads)
            else:
                result = _in_subprocess(["--one", name, "--repeats", str(repeats), *common])
            saved["geometries"].append(result)
            save()
            print(_geometry_lines(result), file=sys.stderr, flush=True)
        if name != flat_geometry or not flatness:
            continue
        for steps in [n for n in (FLAT_STEPS if real else SMOKE_FLAT_STEPS) if n not in flat_done]:
            print(f"{name}: streamed recording of {steps} steps", file=sys.stderr, flush=True)
            if in_process:
                result = measure_flatness(name, real, device, steps, video_heads, flat_layers)
            else:
                layers = [] if flat_layers is None else ["--layers", str(flat_layers)]
                result = _in_subprocess(["--flat", name, "--steps", str(steps), *layers, *common])
            saved["flatness"].append(result)
            save()
    return saved


def _geometry_lines(result: dict) -> str:
    return "\n".join(f"  {r['config']}: CPU {r['ratio']:.3f}x bare ({r['instrumented_cpu_s']:.1f} s vs {r['bare_cpu_s']:.1f} s), "
                     f"wall {r['wall_ratio']:.3f}x, run peak {r.get('run_peak_mib', float('nan')):.0f} MiB"
                     for r in result["rows"])


# -- the generated tables -----------------------------------------------------------------------------
def image_text_verdict(row: dict, target: float) -> str:
    return f"{'met' if row['ratio'] <= target else '**missed**'}: {row['ratio']:.3f}x (target <= {target}x)"


def flatness_verdict(runs: list[dict]) -> str:
    """Flat: the peak at the most steps is within half of one step's capture of the peak at the fewest
    (memory that grew with the steps would add a whole step's capture per extra step)."""
    few, many = min(runs, key=lambda r: r["steps"]), max(runs, key=lambda r: r["steps"])
    growth, per_step = many["peak_mib"] - few["peak_mib"], few["captured_mib_per_step"]
    flat = growth <= 0.5 * per_step
    return (f"{'met' if flat else '**missed**'}: {growth:+.0f} MiB from {few['steps']} to {many['steps']} steps "
            f"(one step's capture: {per_step:.0f} MiB; unstreamed, {many['steps'] - few['steps']} more steps would hold "
            f"{(many['steps'] - few['steps']) * per_step:.0f} MiB more)")


def tables(saved: dict) -> str:
    merged = f" (combined with {', '.join(saved['merged'])})" if saved.get("merged") else ""
    out = [f"Run started {saved['date']}{merged} on {saved['machine']}; device {saved['device']}; batch {len(saved['branches'])} "
           f"(guidance branches {', '.join(saved['branches'])} batched), 1 step per run. Per geometry, one process runs bare "
           "and each configuration in turn; ratios are medians of the configuration's runs over the median of all bare "
           "runs of that process. *Run peak* is a run's own peak resident memory (Linux `VmHWM`, reset before each run); "
           "*extra* is that peak above the resident memory at the run's start.", ""]
    for g in saved["geometries"]:
        bare = g["rows"][0]
        out += [f"**{g['geometry']}** (measured {g.get('measured', saved['date'])}, code {g.get('code', 'not recorded')}): "
                f"`{g['model']}`, {g['tokens']} tokens, "
                + ", ".join(f"{k}={v}" for k, v in g["config"].items())
                + f"; median of {g['repeats']} run(s) per configuration, {g['repeats'] + 1} bare runs. "
                f"Bare: {bare['bare_wall_s']:.1f} s wall, {bare['bare_cpu_s']:.1f} s CPU, run peak "
                f"{bare.get('bare_run_peak_mib', float('nan')):.0f} MiB. The image->text capture holds "
                f"{g['captured_mib_per_step']:.0f} MiB per step.", "",
                "| configuration | wall s | wall vs bare | CPU s | CPU vs bare | per run | run peak MiB | extra MiB | target |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in g["rows"]:
            verdict = image_text_verdict(r, saved["target_image_text"]) if r["config"] == "image_text" else ""
            out.append(f"| {CONFIGS[r['config']]} | {r['instrumented_wall_s']:.1f} | {r['wall_ratio']:.3f}x | "
                       f"{r['instrumented_cpu_s']:.1f} | {r['ratio']:.3f}x | {', '.join(f'{x:.3f}' for x in r['cpu_ratios'])} | "
                       f"{r.get('run_peak_mib', float('nan')):.0f} | {r.get('run_extra_mib', float('nan')):.0f} | {verdict} |")
        out.append("")
    if saved["flatness"]:
        f0 = saved["flatness"][0]
        out += [f"Streamed recording (image->text at every layer, `store=`), **{f0['geometry']}** (measured "
                f"{f0.get('measured', saved['date'])}, code {f0.get('code', 'not recorded')}), {f0['tokens']} tokens, "
                + ", ".join(f"{k}={v}" for k, v in f0["config"].items())
                + "; each step count in a fresh process, after one bare warm-up step:", "",
                "| steps | wall s | CPU s | run peak MiB | extra MiB | one step's capture MiB |", "| --- | --- | --- | --- | --- | --- |"]
        for r in saved["flatness"]:
            out.append(f"| {r['steps']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r.get('peak_mib', float('nan')):.0f} | "
                       f"{r.get('extra_mib', float('nan')):.0f} | {r['captured_mib_per_step']:.0f} |")
        out += ["", f"Peak memory flat in the number of steps: {flatness_verdict(saved['flatness'])}."]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometries", default=",".join(GEOMETRIES), help="comma-separated subset of " + ", ".join(GEOMETRIES))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, in one process: checks the script in seconds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: CPU time is exact)")
    parser.add_argument("--video-heads", type=int, default=2, help="Wan heads of 128 (the released 1.3B model: 12)")
    parser.add_argument("--flat-layers", type=int, default=1, help="layers of the model of the streamed-memory runs")
    parser.add_argument("--json", help="write the results here (default: docs/results/real_width.json, or "
                        "real_width_cuda.json on a GPU; --smoke writes only where --json says)")
    parser.add_argument("--update-doc", action="store_true", help="write the saved tables into docs/benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep what the results file holds; measure the rest")
    parser.add_argument("--merge", action="append", default=[], metavar="JSON",
                        help="take the geometries (and streamed-memory runs) this run lacks from another results file")
    parser.add_argument("--no-flatness", action="store_true", help="skip the streamed-memory runs")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one geometry side by side, JSON on stdout
    parser.add_argument("--flat", help=argparse.SUPPRESS)  # internal: one streamed run, JSON on stdout
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    real = not args.smoke
    if args.one:
        print(json.dumps(measure_geometry(args.one, real, args.device, args.steps, args.repeats, args.video_heads)))
        return
    if args.flat:
        print(json.dumps(measure_flatness(args.flat, real, args.device, args.steps, args.video_heads, args.layers)))
        return
    from workbench.results import results_dir

    default = results_dir() / ("real_width_cuda.json" if args.device.startswith("cuda") else "real_width.json")
    if args.update_doc:
        from workbench.studies.docs import write_block

        # a GPU's figures go to their own block (docs/benchmarks.md needs its markers first), never over the CPU's
        key = "real-width-cuda" if args.device.startswith("cuda") else "real-width"
        write_block("benchmarks.md", key, tables(json.loads(default.read_text())))
        return
    geometries = args.geometries.split(",")
    unknown = [g for g in geometries if g not in GEOMETRIES]
    if unknown:
        parser.error(f"unknown geometries {unknown}; choose from {', '.join(GEOMETRIES)}")
    out = Path(args.json) if args.json else (None if args.smoke else default)
    saved = run_all(geometries, real=real, device=args.device, threads=args.threads, video_heads=args.video_heads,
                    flat_geometry="sd3-medium" if "sd3-medium" in geometries else geometries[0],
                    flat_layers=args.flat_layers if real else None, out=out, in_process=args.smoke,
                    resume=args.resume, merge=tuple(args.merge), flatness=not args.no_flatness)
    print(tables(saved))


if __name__ == "__main__":
    main()
