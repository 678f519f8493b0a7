"""What recording costs on a compiled model: recorded runs run the instrumented model eagerly.

A tiny diffusers pipeline (``--family``: flux, sd3 or sd; ``--layers`` deep) generates ``--steps``
steps. Measured in one process, CPU time on one thread (the machine is shared; wall time shown too):

* eager: the uncompiled model;
* compiled: after ``compile_repeated_blocks()`` (``--mode regional``) or ``torch.compile(model)``
  (``--mode whole``) with ``--backend`` (default inductor), first call (compilation) and steady state;
* recorded: the compiled model inside ``wb.record`` (every block output and one attention map);
* compiled again: the first plain run after the recording (is anything recompiled?).

    python benchmarks/compiled_capture.py --family flux --mode regional
    python benchmarks/compiled_capture.py --family sd3 --mode whole
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

SITES = {
    "flux": ["transformer_blocks.*.out.*", "single_transformer_blocks.*.out.*", "transformer_blocks.0.attn.probs.image->text"],
    "sd3": ["transformer_blocks.*.out.*", "transformer_blocks.0.attn.probs.image->text"],
    "sd": ["up_blocks.*.out", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.probs"],
}
DEPTH = {"flux": lambda n: dict(num_layers=n, num_single_layers=n), "sd3": lambda n: dict(num_layers=n), "sd": None}


def width_config(family: str, width: int) -> dict:
    """Transformer width ``width`` in heads of 64 (the tiny default is 2 heads of 16)."""
    if width <= 32:
        return {}
    heads = width // 64
    config = dict(attention_head_dim=64, num_attention_heads=heads)
    if family == "flux":
        config["axes_dims_rope"] = (16, 24, 24)
    if family == "sd3":
        config["caption_projection_dim"] = width
    return config


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``repeats`` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="flux", choices=sorted(SITES))
    parser.add_argument("--mode", default="regional", choices=["regional", "whole"])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=32, help="transformer width (heads of 64 above 32)")
    parser.add_argument("--size", type=int, default=None, help="image height and width in pixels (default: tiny)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import torch

    import workbench as wb
    from workbench.models.tiny import tiny_denoiser, tiny_pipeline

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    pipe = tiny_pipeline(args.family)
    attr = "unet" if args.family == "sd" else "transformer"
    if DEPTH[args.family] is not None:
        setattr(pipe, attr, tiny_denoiser(args.family, **DEPTH[args.family](args.layers), **width_config(args.family, args.width)))
    model = wb.load(pipe)

    def run():
        return model.generate("a red circle on the left", steps=args.steps, height=args.size, width=args.size)

    def recorded():
        with wb.record(model, SITES[args.family]) as rec:
            run()
        return rec

    run()
    rows = [("eager", *timed(run, args.repeats)), ("eager, recorded", *timed(recorded, args.repeats))]
    if args.mode == "regional":
        getattr(pipe, attr).compile_repeated_blocks(backend=args.backend)
    else:
        setattr(pipe, attr, torch.compile(getattr(pipe, attr), backend=args.backend))
        model = wb.load(pipe)
    rows.append(("compiled, first call (compiles)", *timed(run, 1)))
    rows.append(("compiled", *timed(run, args.repeats)))
    rows.append(("compiled, recorded (runs eagerly)", *timed(recorded, args.repeats)))
    rows.append(("compiled, first plain run after recording", *timed(run, 1)))
    rows.append(("compiled, after recording", *timed(run, args.repeats)))

    print(f"\n{args.family}, {args.mode} compilation, backend {args.backend}, {args.layers} layer(s), width {args.width}, "
          f"{args.size or 'default'} px, {args.steps} steps, "
          f"median of {args.repeats}, torch {torch.__version__}, 1 thread\n")
    print("| run | CPU s | wall s |")
    print("| --- | --- | --- |")
    for name, cpu, wall in rows:
        print(f"| {name} | {cpu:.3f} | {wall:.3f} |")


if __name__ == "__main__":
    main()
