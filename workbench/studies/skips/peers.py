"""The peers' own caching schemes measured on a reference model (issue 26): T-GATE at each gate and
every DeepCache branch (and its non-uniform schedule), with FLOPs per step beside the measured
speed-ups; the table of docs/skips.md is :func:`.report.peers_caching_table`'s.

    python -m workbench.studies.skips.peers caching [--steps 20 --repeats 5]   # docs/results/peers_caching.json
    python -m workbench.studies.skips.peers judge   [--n 50 --steps 20]        # docs/results/peers_judged.json

caching: each variant (uncached, T-GATE at each gate, DeepCache's 9 branches at interval N,
DeepCache's non-uniform schedule on branch 0) is timed right beside an uncached run of the same
prompts and seed (close pairs, order alternated, median of the per-pair ratios, wall and CPU), its
images compared with the uncached ones (PSNR), its FLOPs per step counted
(``workbench.capture.flops``).

judge: the uncached run and T-GATE at each gate are judged (shape+colour on single objects, glyph
on glyphs; Wilson 95% intervals), on the quality study's test prompts.

Both resume by variant: each finished variant is saved to the JSON at once, and a rerun measures
only the variants (or, for caching, the parts of a variant) the file lacks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ... import load, tgate
from ...analysis.stats import wilson
from ...capture.flops import flops_per_step
from ...capture.reuse import deepcache
from ...results import results_dir
from ...store.jobs import write_json_atomically
from ..quality.protocol import prompt_families, score, single_and_glyph_captions
from .protocol import FAMILIES
from .report import peers_caching_table


def variants(every: int, gates: list[int]) -> dict:
    """name -> context factory (None = uncached)."""
    out = {"uncached": None}
    for gate in gates:
        out[f"T-GATE gate {gate}"] = partial(tgate, gate_step=gate)
    for branch in range(9):
        out[f"DeepCache branch {branch}, N={every}"] = partial(deepcache, every=every, branch=branch)
    out[f"DeepCache branch 0, N={every}, non-uniform"] = partial(deepcache, every=every, branch=0, uniform=False)
    return out


def _run(model, factory, prompts, steps, seed=0):
    if factory is None:
        return model.generate(prompts, steps=steps, seed=seed)
    with factory(model):
        return model.generate(prompts, steps=steps, seed=seed)


def _timed(model, factory, prompts, steps):
    w0, c0 = time.perf_counter(), time.process_time()
    _run(model, factory, prompts, steps)
    return time.perf_counter() - w0, time.process_time() - c0


def measure_caching(model_name: str, every: int, gates: list[int], steps: int, repeats: int,
                    timing_prompts: int, out: Path) -> dict:
    model = load(model_name)
    results = json.loads(out.read_text()) if out.exists() else {}
    entry = results.setdefault(model_name, {"steps": steps, "every": every, "repeats": repeats,
                                            "timing_prompts": timing_prompts, "threads": torch.get_num_threads(),
                                            "variants": {}})
    prompts = single_and_glyph_captions(2 * timing_prompts)[:timing_prompts]  # the single-object half
    reference = _run(model, None, prompts, steps)
    base_flops = flops_per_step(model, lambda: _run(model, None, prompts[:1], steps))
    for name, factory in variants(every, gates).items():
        row = entry["variants"].setdefault(name, {})
        if "flops_per_step" not in row:
            flops = base_flops if factory is None else flops_per_step(model, lambda: _run(model, factory, prompts[:1], steps))
            row["flops_per_step"] = flops
            row["flops_ratio"] = round(sum(base_flops) / sum(flops), 3)
        if factory is not None and "speedup_wall" not in row:
            images = _run(model, factory, prompts, steps)
            mse = float(np.mean((images - reference) ** 2))
            row["psnr_db"] = round(10 * np.log10(1.0 / max(mse, 1e-12)), 2)
            pairs = []
            for r in range(repeats):
                order = [None, factory] if r % 2 == 0 else [factory, None]
                times = {id(f): _timed(model, f, prompts, steps) for f in order}
                pairs.append((times[id(None)], times[id(factory)]))
            row["pairs"] = [[list(b), list(v)] for b, v in pairs]
            row["speedup_wall"] = round(statistics.median(b[0] / v[0] for b, v in pairs), 3)
            row["speedup_cpu"] = round(statistics.median(b[1] / v[1] for b, v in pairs), 3)
        write_json_atomically(out, results, indent=1)
    return results


def judge_variants(model_name: str, gates: list[int], n: int, steps: int, out: Path) -> dict:
    """The judge's accuracy on the uncached run and on T-GATE at each gate (``n`` test prompts per
    family, seeds as the quality benchmark's), with Wilson 95% intervals."""
    from ...models.judge import load_judge

    model, judge = load(model_name), load_judge()
    results = json.loads(out.read_text()) if out.exists() else {}
    entry = results.setdefault(model_name, {"steps": steps, "n": n, "variants": {}})
    families = prompt_families(n, seed=0)
    for name, factory in variants(3, gates).items():
        if not (factory is None or name.startswith("T-GATE")) or name in entry["variants"]:
            continue
        judged = {}
        for family, key in FAMILIES.items():
            captions = [c for c, _ in families[family]]
            images = np.concatenate([_run(model, factory, captions[i:i + 50], steps, seed=i)
                                     for i in range(0, len(captions), 50)])
            rate = score(family, [o for _, o in families[family]], judge.judge(images))
            right = round(rate[key] * rate["n"] / 100)
            judged[key] = {"right": right, "n": rate["n"], "percent": rate[key],
                           "wilson95": [round(100 * x, 1) for x in wilson(right, rate["n"])]}
        entry["variants"][name] = judged
        write_json_atomically(out, results, indent=1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["caching", "judge"])
    parser.add_argument("--model", default="toy-unet")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=3, help="caching: DeepCache's interval")
    parser.add_argument("--gates", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--n", type=int, default=50, help="judge: test prompts per family")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timing-prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results_dir().mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if args.part == "caching":
            measure_caching(args.model, args.every, args.gates, args.steps, args.repeats, args.timing_prompts,
                            results_dir() / "peers_caching.json")
        else:
            judge_variants(args.model, args.gates, args.n, args.steps, results_dir() / "peers_judged.json")
    print(peers_caching_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
