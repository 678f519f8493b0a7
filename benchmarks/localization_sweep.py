"""The localization sweep engine against one full generation per variant, side by side in one run:
denoiser calls, rows (calls x batch), CPU seconds, and the largest difference between images.

Two naive baselines: the anchor's way (one generation per prompt and variant, ``anchor``) and a
stronger one that batches all pairs of a variant in one generation (``naive_batched``). The
difference between those two is the float32 noise floor of batching (matrix kernels round
differently at other batch sizes), against which the engine's difference is read.

    python benchmarks/localization_sweep.py [--models toy-mmdit toy-unet] [--pairs 12 24] [--steps 8]
                                            [--starts 0,2,4] [--dtype float32|float64]
                                            [--out docs/results/localization_sweep_benchmark.json]

``--pairs`` takes several sizes: every model at every size, side by side in one run.
``--dtype float64`` casts the text encoder, the denoiser and the noise to float64 (the scheduler
still does its own arithmetic) and compares final latents as well as images: if the float32
differences are batch-size rounding, they shrink to ~1e-12 or below there.

Both engines get the same pairs, noise, variants (every text layer x start step) and batch of
pairs; the engine additionally shares the steps before each start and batches the variants that
start together. Single-threaded torch, as the sweep job runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

import workbench as wb
from workbench.studies.localization import protocol as gp
from workbench.studies.localization.patching import prompt_token_maps
from workbench.studies.localization.sweeps import layer_start_grid, naive_sweep, sweep
from workbench.models.reference import load_reference


def run(models, pairs, steps, starts, seed=0, dtype="float32") -> dict:
    torch.set_num_threads(1)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    glyphs = ["7", "K", "3", "A", "S", "0", "H", "5", "X", "2"]
    cells = gp.cells(pairs, seed)
    targets = [gp.glyph_scene(glyphs[i % len(glyphs)], c) for i, c in enumerate(cells)]
    sources = [gp.glyph_scene(glyphs[(i + 3) % len(glyphs)], c) for i, c in enumerate(cells)]
    seeds = [c.seed for c in cells]
    results = {"machine": platform.processor() or platform.machine(), "threads": 1, "pairs": pairs, "steps": steps,
               "starts": starts, "dtype": dtype, "models": {}}
    for name in models:
        model = wb.load(name) if dtype == "float32" else load_reference(name, dtype=torch_dtype)
        t, s = [x.caption for x in targets], [x.caption for x in sources]
        maps = prompt_token_maps(model, t, s, [x.spans[0] for x in targets], [x.spans[0] for x in sources])
        variants = layer_start_grid(model, starts)
        fast = sweep(model, t, s, seeds, variants, steps=steps, token_maps=maps, keep_latents=True)
        batched = naive_sweep(model, t, s, seeds, variants, steps=steps, token_maps=maps, keep_latents=True)
        anchor = naive_sweep(model, t, s, seeds, variants, steps=steps, token_maps=maps, pairs_per_run=1,
                             keep_latents=True)
        entry = {"variants": len(variants), "pairs": pairs, "dtype": dtype, "engine": fast.cost.as_dict()}
        for label, slow in (("anchor", anchor), ("naive_batched", batched)):
            entry[label] = slow.cost.as_dict()
            entry[f"speedup_cpu_vs_{label}"] = round(slow.cost.cpu_s / fast.cost.cpu_s, 2)
            entry[f"speedup_calls_vs_{label}"] = round(slow.cost.calls / fast.cost.calls, 2)
            entry[f"speedup_rows_vs_{label}"] = round(slow.cost.rows / fast.cost.rows, 2)
            entry[f"max_abs_image_diff_vs_{label}"] = float(np.abs(fast.images - slow.images).max())
            entry[f"max_abs_latent_diff_vs_{label}"] = float(np.abs(fast.latents - slow.latents).max())
        entry["max_abs_image_diff_anchor_vs_naive_batched"] = float(np.abs(anchor.images - batched.images).max())
        entry["max_abs_latent_diff_anchor_vs_naive_batched"] = float(np.abs(anchor.latents - batched.latents).max())
        results["models"][f"{name}, {pairs} pairs"] = entry
        print(name, json.dumps(entry), flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy-mmdit", "toy-unet"])
    parser.add_argument("--pairs", type=int, nargs="+", default=[12, 24])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--starts", default="0,2,4")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--out", default="docs/results/localization_sweep_benchmark.json")
    args = parser.parse_args(argv)
    starts = [int(s) for s in args.starts.split(",")]
    results = {"runs": [run(args.models, n, args.steps, starts, dtype=args.dtype) for n in args.pairs]}
    results["models"] = {k: v for r in results["runs"] for k, v in r["models"].items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
