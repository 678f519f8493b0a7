"""Capture overhead on an SD3-shaped transformer: workbench vs a hand-written hook loop vs nnsight.

A random ``SD3Transformer2DModel`` (8 joint layers, 1024 image tokens = 32x32 patches, 77 text
tokens) runs a short flow-matching denoising loop. Each configuration runs in its own subprocess
(so its peak memory is its own); inside it, bare runs and instrumented runs alternate and the
ratio of their medians is reported, so both numbers come from the same process and moment.

Time is measured twice: wall clock, and the process's own CPU time (``time.process_time``) on
one thread. On a shared machine other processes stretch wall time at random, while CPU time
counts only this process's work, so the CPU-time ratio is the one to read there.

    python benchmarks/capture_overhead.py                      # all configurations, markdown table
    python benchmarks/capture_overhead.py --python .bench-venv/bin/python   # nnsight lives there
    python benchmarks/capture_overhead.py --record      # workbench vs hand-written hooks in rotating rounds
                                                        # at widths 512 and 64 -> docs/results/capture_overhead.json
    python benchmarks/capture_overhead.py --update-doc  # its table into docs/benchmarks.md

nnsight is not a workbench dependency; install it in its own environment, e.g.
``python -m venv --system-site-packages .bench-venv && .bench-venv/bin/pip install nnsight``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "blocks_workbench": "every block output (image + text), every step: workbench.record",
    "blocks_handwritten": "every block output (image + text), every step: hand-written torch hooks",
    "blocks_nnsight": "every block output (image + text), every step: nnsight trace per step",
    "image_text_attention": "image->text and text->image probabilities, every layer and step (log-sum-exp slices)",
    "full_attention_all_layers": "whole N x N probabilities, every layer and step (what per-word maps avoid)",
    "four_blocks_one_layer": "all four attention blocks at one layer, every step",
}


def build(width: int, layers: int, latent_size: int = 64, text_tokens: int = 77):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    heads = width // 64
    model = SD3Transformer2DModel(
        sample_size=latent_size, patch_size=2, in_channels=16, out_channels=16, num_layers=layers,
        attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=width,
        caption_projection_dim=width, pooled_projection_dim=width, qk_norm="rms_norm", pos_embed_max_size=latent_size,
    ).eval()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        latents=torch.randn(1, 16, latent_size, latent_size, generator=g),
        encoder_hidden_states=torch.randn(1, text_tokens, width, generator=g),
        pooled_projections=torch.randn(1, width, generator=g),
    )
    return model, FlowMatchEulerDiscreteScheduler(shift=3.0), inputs


# The per-call measurement's model: the SD3 transformer of the end-to-end rows (same layers, so the
# same hooks fire on the same modules and the same number of tensors is captured per step), made
# as cheap as it goes (width 64, 4 x 4 patches + 8 text tokens), so that its run is mostly the
# Python the hooks add to and per-call costs of a few microseconds stand out of the noise.
CHEAP = {"width": 64, "latent_size": 8, "text_tokens": 8}


def denoise(model, scheduler, inputs, steps, call=None):
    """The loop every configuration shares; ``call`` replaces ``model(...)`` (nnsight)."""
    import torch

    call = call or (lambda **kw: model(**kw, return_dict=False)[0])
    scheduler.set_timesteps(steps)
    latents = inputs["latents"]
    with torch.no_grad():
        for t in scheduler.timesteps:
            pred = call(hidden_states=latents, encoder_hidden_states=inputs["encoder_hidden_states"],
                        pooled_projections=inputs["pooled_projections"], timestep=t.expand(1))
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents


def instrumented(name: str, model, scheduler, inputs, steps):
    """A zero-argument function running the configuration once; returns what it captured."""
    import torch

    import workbench as wb

    n = len(model.transformer_blocks)
    if name == "blocks_workbench":
        def run():
            # the same tensors as the hand-written loop: each block's outputs ("transformer_blocks.*.out.*"
            # would also match the attention modules' outputs, transformer_blocks.N.attn.out.*)
            sites = [f"transformer_blocks.{i}.out.*" for i in range(n)]
            with wb.record(wb.load(model, scheduler=scheduler), sites) as rec:
                denoise(model, scheduler, inputs, steps)
            return rec
    elif name == "blocks_handwritten":
        def run():
            saved = []
            hooks = [b.register_forward_hook(lambda m, a, out: saved.extend(o.detach().clone() for o in out if o is not None))
                     for b in model.transformer_blocks]
            try:
                denoise(model, scheduler, inputs, steps)
            finally:
                for h in hooks:
                    h.remove()
            return saved
    elif name == "blocks_nnsight":
        from nnsight import NNsight

        wrapped = NNsight(model)

        def run():
            saved = []

            def call(**kw):
                box = {}  # nnsight runs the trace body in its own frame: hand results out by mutation
                with wrapped.trace(**kw, return_dict=False):
                    box["outs"] = [wrapped.transformer_blocks[i].output.save() for i in range(n)]
                    box["result"] = wrapped.output.save()
                saved.append(box["outs"])
                return box["result"][0]

            denoise(model, scheduler, inputs, steps, call=call)
            return saved
    elif name == "image_text_attention":
        def run():
            sites = ["transformer_blocks.*.attn.probs.image->text", "transformer_blocks.*.attn.probs.text->image"]
            with wb.record(wb.load(model, scheduler=scheduler), sites) as rec:
                denoise(model, scheduler, inputs, steps)
            return rec
    elif name == "full_attention_all_layers":
        def run():
            with wb.record(wb.load(model, scheduler=scheduler), ["transformer_blocks.*.attn.probs"],
                           max_bytes=64 << 30) as rec:
                denoise(model, scheduler, inputs, steps)
            return rec
    elif name == "four_blocks_one_layer":
        def run():
            with wb.record(wb.load(model, scheduler=scheduler), [f"transformer_blocks.{n // 2}.attn.probs.*"]) as rec:
                denoise(model, scheduler, inputs, steps)
            return rec
    else:
        raise KeyError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    torch.set_grad_enabled(False)
    return run


def measure(names: list[str], width: int, layers: int, steps: int, repeats: int, threads: int = 1) -> list[dict]:
    """Runs in a subprocess: bare runs first (their peak memory), then each configuration of ``names``
    and a bare run in turn, ``repeats`` times, so configurations measured together are side by side
    (same process, same moments of a noisy machine) against the same bare runs
    (``workbench.studies.timing.side_by_side``, the method real_width.py shares)."""
    import torch

    from workbench.studies.timing import side_by_side

    torch.set_num_threads(threads)
    model, scheduler, inputs = build(width, layers)
    runs = {name: instrumented(name, model, scheduler, inputs, steps) for name in names}
    measured = side_by_side(lambda: denoise(model, scheduler, inputs, steps), runs, repeats)
    return [{"config": name, **measured[name], "measured_with": [n for n in names if n != name]} for name in names]


def captured_per_run(name: str, result) -> int:
    """How many tensors one run of configuration ``name`` captured (its ``run()``'s result)."""
    if name == "blocks_handwritten":
        return len(result)
    if name == "blocks_workbench":  # one denoiser call per step here, so one capture per (site, step)
        return sum(result.has_step(site, step) for site in result for step in result.steps)
    raise KeyError(f"captured_per_run counts blocks_workbench and blocks_handwritten only, not {name!r}")


def measure_pair(layers: int, steps: int, rounds: int, threads: int = 1, cheap: bool = False,
                 width: int = 512) -> dict:
    """Runs in a subprocess: workbench.record, the hand-written loop and the bare run, each once per
    round in a rotating order (``workbench.studies.timing.counterbalanced``), CPU seconds per round.
    ``cheap``: on the CHEAP model (the per-call measurement; ``width`` unused), else at ``width``
    with 1024 image + 77 text tokens (the end-to-end one). Returns the tensors one run captured and
    the CPU seconds per round of each of the three."""
    import torch

    from workbench.studies.timing import counterbalanced

    torch.set_num_threads(threads)
    sizes = CHEAP if cheap else {"width": width}
    model, scheduler, inputs = build(sizes["width"], layers, sizes.get("latent_size", 64), sizes.get("text_tokens", 77))
    runs = {name: instrumented(name, model, scheduler, inputs, steps) for name in SIDE_BY_SIDE.split("+")}
    counts = {name: captured_per_run(name, run()) for name, run in runs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"the recorders captured different numbers of tensors per run ({counts}): they must "
                         "capture the same tensors to be compared")
    runs["bare"] = lambda: denoise(model, scheduler, inputs, steps)
    return {"tensors_per_run": counts["blocks_workbench"], "cpu_s": counterbalanced(runs, rounds)}


def median_and_interval(values) -> list[float]:
    """[median, low, high]: the median and its 95% bootstrap interval."""
    import numpy as np

    from workbench.analysis.stats import bootstrap

    values = np.asarray(values, dtype=float)
    return [float(np.median(values)), *bootstrap(values, statistic=np.median)]


def summarise_pair(measured: dict) -> dict:
    """From :func:`measure_pair` at a real width: each recorder's CPU time against the bare median,
    and the gap of each round (workbench - hand-written, over the bare median): their median with its
    95% bootstrap interval, the quartiles, and every round's gap, sorted."""
    import numpy as np

    cpu = {name: np.asarray(values, dtype=float) for name, values in measured["cpu_s"].items()}
    bare = float(np.median(cpu["bare"]))
    gaps = (cpu["blocks_workbench"] - cpu["blocks_handwritten"]) / bare
    return {
        "rounds": len(gaps), "tensors_per_run": measured["tensors_per_run"], "bare_cpu_s": bare,
        "workbench_ratio": float(np.median(cpu["blocks_workbench"])) / bare,
        "handwritten_ratio": float(np.median(cpu["blocks_handwritten"])) / bare,
        "gap": median_and_interval(gaps),
        "gap_quartiles": [float(q) for q in np.percentile(gaps, [25, 75])],
        "gap_per_round": sorted(float(g) for g in gaps),
        "raw": measured,
    }


def summarise_per_call(measured: dict, bare_run_cpu_s: float) -> dict:
    """From :func:`measure_pair` on the CHEAP model: each recorder's cost per captured tensor over the
    bare run of its round (microseconds), the difference workbench - hand-written per tensor and per
    run (same round), and the overhead that difference implies on a run whose bare CPU time is
    ``bare_run_cpu_s`` (the same layers and steps at a real width: the same hooks fire the same number
    of times). Each as [median, low, high]: the median over rounds and its 95% bootstrap interval.

    The implication assumes what differs between the two is per-call Python work, not the copy: both
    copy each captured tensor once (the hand-written loop ``clone()``, workbench ``clone()`` too), so
    at a real width the bytes copied are the same and the copy's cost cancels."""
    import numpy as np

    cpu = {name: np.asarray(values, dtype=float) for name, values in measured["cpu_s"].items()}
    n = measured["tensors_per_run"]
    difference_s = cpu["blocks_workbench"] - cpu["blocks_handwritten"]
    return {
        "rounds": len(difference_s), "tensors_per_run": n,
        "bare_cheap_run_cpu_s": float(np.median(cpu["bare"])),
        "workbench_us_per_tensor": median_and_interval((cpu["blocks_workbench"] - cpu["bare"]) / n * 1e6),
        "handwritten_us_per_tensor": median_and_interval((cpu["blocks_handwritten"] - cpu["bare"]) / n * 1e6),
        "difference_us_per_tensor": median_and_interval(difference_s / n * 1e6),
        "difference_run_s": median_and_interval(difference_s),
        "bare_run_cpu_s": bare_run_cpu_s,
        "implied_gap": median_and_interval(difference_s / bare_run_cpu_s),
        "raw": measured,
    }


def interval_verdict(triple: list[float], target: float) -> str:
    """Met only if the whole 95% interval is within the target."""
    _, low, high = triple
    if high <= target:
        return f"yes: the interval is within {100 * target:g}%"
    if low > target:
        return f"**no**: the interval is above {100 * target:g}%"
    return f"not resolved: the interval spans {100 * target:g}%"


# The recorded comparison (issue 25's target: block recording within 2% of a hand-written hook loop):
# (width, steps, rounds); width 64 makes hook overhead a larger share of the work, and its cheaper
# runs allow more rounds. Each row's per-call measurement runs the CHEAP model for the same layers
# and steps, PER_CALL_ROUNDS rounds.
RECORDED = ((512, 3, 30), (64, 10, 90))
PER_CALL_ROUNDS = 60
SIDE_BY_SIDE = "blocks_workbench+blocks_handwritten"


def run_pair(python: str, width: int, layers: int, steps: int, rounds: int, threads: int, cheap: bool = False) -> dict:
    """:func:`measure_pair` in its own subprocess (its own memory, a fresh interpreter)."""
    cmd = [python, __file__, "--pair", "--width", str(width), "--layers", str(layers), "--steps", str(steps),
           "--repeats", str(rounds), "--threads", str(threads)] + (["--cheap"] if cheap else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the pair at width {'cheap' if cheap else width} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(python: str, width: int, layers: int, steps: int, rounds: int, threads: int) -> dict:
    """workbench.record against the hand-written loop at ``width`` (end to end), and per captured
    tensor on the CHEAP model for the same layers and steps."""
    row = summarise_pair(run_pair(python, width, layers, steps, rounds, threads))
    cheap = run_pair(python, width, layers, steps, PER_CALL_ROUNDS, threads, cheap=True)
    row["per_call"] = summarise_per_call(cheap, row["bare_cpu_s"])
    return row


def record(python: str, layers: int, threads: int, before: str | None = None) -> dict:
    """workbench.record and the hand-written hook loop side by side at each width of RECORDED.

    ``before``: an interpreter whose ``workbench`` is an earlier version of the code; at each width
    it is measured the same way right before this version (same run, same machine moment), under
    ``rows[i]["before"]``, so a change to the engine is judged against the code it replaced."""
    import torch

    rows = []
    for width, steps, rounds in RECORDED:
        row = {"width": width, "steps": steps}
        if before is not None:
            row["before"] = _compare(before, width, layers, steps, rounds, threads)
            row["before"]["workbench_version"] = _version_of(before)
        row.update(_compare(python, width, layers, steps, rounds, threads))
        rows.append(row)
        print(f"width {width}: workbench {row['workbench_ratio']:.3f}x, hand-written {row['handwritten_ratio']:.3f}x, "
              f"gap per round {_pct(row['gap'])}; per captured tensor {_us(row['per_call']['difference_us_per_tensor'])} "
              f"us, implied gap {_pct(row['per_call']['implied_gap'])}"
              + (f"; before: gap {_pct(row['before']['gap'])}" if before else ""), file=sys.stderr)
    cheap = (CHEAP["latent_size"] // 2) ** 2
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "target_gap": 0.02,
            "machine": f"{platform.processor() or platform.machine()}, {threads} thread(s), torch {torch.__version__}",
            "model": f"SD3Transformer2DModel, {layers} layers, 1024 image + 77 text tokens",
            "per_call_model": f"SD3Transformer2DModel, {layers} layers, width {CHEAP['width']}, {cheap} image + "
                              f"{CHEAP['text_tokens']} text tokens", "rows": rows}


def _pct(triple: list[float]) -> str:
    median, low, high = triple
    return f"{100 * median:+.2f}% [{100 * low:+.2f}, {100 * high:+.2f}]"


def _us(triple: list[float]) -> str:
    median, low, high = triple
    return f"{median:+.1f} [{low:+.1f}, {high:+.1f}]"


def _version_of(python: str) -> str:
    """Which workbench checkout ``python`` imports, and its commit (for the record of a comparison)."""
    code = ("import subprocess, workbench, pathlib; root = pathlib.Path(workbench.__file__).parents[1]; "
            "print(root, subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'], "
            "capture_output=True, text=True).stdout.strip())")
    # run outside any checkout: ``python -c`` imports from the working directory first, which
    # would report the checkout we run from instead of the one ``python`` has installed
    return subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/").stdout.strip()


def overhead_table(saved: dict) -> str:
    """docs/benchmarks.md's side-by-side tables, from the saved results."""
    target = saved["target_gap"]
    out = [f"Measured {saved['date']} ({saved['machine']}; {saved['model']}); CPU time on one thread. Each round "
           "runs workbench.record, the hand-written hooks and the bare loop once, in an order that rotates through "
           "all six permutations, in one process. *gap per round* = (workbench - hand-written) / the bare median, "
           "for the two runs of one round, made seconds apart, so a slow drift of the machine's speed cancels; "
           "its median over the rounds, [95% bootstrap interval]. Met only if the whole interval is within "
           f"{100 * target:g}%.", "",
           "| width, steps | rounds | workbench.record vs bare | hand-written hooks vs bare | gap per round: median "
           "[95% interval] | quartiles | range | within 2%? |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in saved["rows"]:
        gaps, (q1, q3) = r["gap_per_round"], r["gap_quartiles"]
        out.append(f"| {r['width']}, {r['steps']} steps | {r['rounds']} | {r['workbench_ratio']:.3f}x | "
                   f"{r['handwritten_ratio']:.3f}x | {_pct(r['gap'])} | {100 * q1:+.1f} to {100 * q3:+.1f}% | "
                   f"{100 * gaps[0]:+.1f} to {100 * gaps[-1]:+.1f}% | {interval_verdict(r['gap'], target)} |")
    out += ["", f"Per captured tensor, measured directly: the same two recorders over a cheap model "
            f"({saved['per_call_model']}: the same hooks on the same modules, the same tensors captured per step, "
            "little compute), for each row's layers and steps, in rotating rounds as above. *per tensor* = (a run's "
            "CPU time - the bare run of its round) / tensors captured per run, so it includes each run's set-up "
            "(workbench.record resolves its sites and projects its size once per run). *difference* pairs the "
            "workbench and hand-written runs of each round. *implied gap* = that difference per run / the bare "
            "median at the row's width: the overhead workbench adds over the hand-written loop there, since both "
            "copy the same bytes per tensor (the copy's cost cancels) and what differs is per-call work that does "
            "not grow with the width. Medians over the rounds, [95% bootstrap intervals].", "",
            "| width, steps | rounds | tensors per run | workbench us/tensor | hand-written us/tensor | "
            "difference us/tensor | difference per run, ms | implied gap at this width | within 2%? |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in saved["rows"]:
        pc = r["per_call"]
        out.append(f"| {r['width']}, {r['steps']} steps | {pc['rounds']} | {pc['tensors_per_run']} | "
                   f"{_us(pc['workbench_us_per_tensor'])} | {_us(pc['handwritten_us_per_tensor'])} | "
                   f"{_us(pc['difference_us_per_tensor'])} | {_us([1e3 * d for d in pc['difference_run_s']])} | "
                   f"{_pct(pc['implied_gap'])} | {interval_verdict(pc['implied_gap'], target)} |")
    if any("before" in r for r in saved["rows"]):
        out += ["", "The same comparison for the code before the change named here, measured in the same run "
                "just before each row above:", "",
                "| width | code | gap per round: median [95% interval] | implied gap per tensor |", "| --- | --- | --- | --- |"]
        for r in saved["rows"]:
            if "before" not in r:
                continue
            for label, m in (("before: " + r["before"]["workbench_version"].split()[-1], r["before"]), ("this", r)):
                out.append(f"| {r['width']} | {label} | {_pct(m['gap'])} | {_pct(m['per_call']['implied_gap'])} |")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of " + ", ".join(CONFIGS) + "; configurations joined by '+' "
                        "run side by side in one process (default: workbench and hand-written block hooks together)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (heads of 64)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: CPU time is exact)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the subprocesses (one with nnsight)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--record", action="store_true",
                        help="measure workbench vs hand-written hooks side by side at widths 512 and 64 and write "
                        "docs/results/capture_overhead.json")
    parser.add_argument("--before", metavar="PYTHON",
                        help="with --record: also measure the workbench this interpreter imports (an earlier "
                        "checkout), right before each width's run")
    parser.add_argument("--update-doc", action="store_true",
                        help="write the saved comparison into docs/benchmarks.md's generated block")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    parser.add_argument("--pair", action="store_true", help=argparse.SUPPRESS)  # internal: measure_pair, print JSON
    parser.add_argument("--cheap", action="store_true", help=argparse.SUPPRESS)  # internal: --pair on the CHEAP model
    args = parser.parse_args(argv)
    if args.pair:
        print(json.dumps(measure_pair(args.layers, args.steps, args.repeats, args.threads, args.cheap, args.width)))
        return
    if args.one:
        print(json.dumps(measure(args.one.split("+"), args.width, args.layers, args.steps, args.repeats, args.threads)))
        return
    from workbench.results import results_dir

    saved_path = results_dir() / "capture_overhead.json"
    if args.record:
        saved_path.write_text(json.dumps(record(args.python, args.layers, args.threads, args.before), indent=1) + "\n")
        print(overhead_table(json.loads(saved_path.read_text())))
        return
    if args.update_doc:
        from workbench.studies.docs import write_block

        write_block("benchmarks.md", "capture-overhead", overhead_table(json.loads(saved_path.read_text())))
        return
    results = []
    groups = args.configs.split(",")
    if "blocks_workbench" in groups and "blocks_handwritten" in groups:  # the comparison must be side by side
        groups.remove("blocks_handwritten")
        groups[groups.index("blocks_workbench")] = "blocks_workbench+blocks_handwritten"
    for name in groups:
        cmd = [args.python, __file__, "--one", name, "--width", str(args.width), "--layers", str(args.layers),
               "--steps", str(args.steps), "--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        for r in json.loads(proc.stdout.strip().splitlines()[-1]):
            results.append(r)
            print(f"{r['config']}: {r['ratio']:.3f}x bare in CPU time ({r['instrumented_cpu_s']:.2f}s vs {r['bare_cpu_s']:.2f}s; "
                  f"per repeat {', '.join(f'{x:.3f}' for x in r['cpu_ratios'])}), {r['wall_ratio']:.3f}x in wall time, "
                  f"extra peak {r['extra_peak_mib']:.0f} MiB", file=sys.stderr)
    import torch

    print(f"\nmachine: {platform.processor() or platform.machine()}, {args.threads} thread(s), torch "
          f"{torch.__version__}; SD3Transformer2DModel width {args.width}, {args.layers} layers, 1024 image + 77 text "
          f"tokens, {args.steps} steps, median of {args.repeats}\n")
    print("| configuration | CPU time vs bare | per repeat | wall time vs bare | instrumented CPU s | bare CPU s | extra peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {CONFIGS[r['config']]} | {r['ratio']:.3f}x | {', '.join(f'{x:.3f}' for x in r['cpu_ratios'])} | "
              f"{r['wall_ratio']:.3f}x | {r['instrumented_cpu_s']:.2f} | {r['bare_cpu_s']:.2f} | {r['extra_peak_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
