"""Feature reuse: measured speed-up against the uncached run, side by side, and the judge's verdict.

For each model and reuse scheme (``workbench.capture.reuse``) and cache interval N:

* speed: every cached variant is timed in the same process right beside an uncached run of the
  same prompts and seed (close pairs, order alternated), ``--repeats`` times; wall-clock
  (``perf_counter``) and CPU time (``process_time``) are both kept, and the speed-up is the median of
  the per-pair ratios. The cached modules really do not run at reused steps (their call counts are
  stored).
* quality: the judge's accuracy on the quality benchmark's test prompts (single objects: shape and
  colour; glyphs: the right glyph), each variant against the uncached run with the same seeds; and,
  stricter, each variant's pixel distance (mean |difference|, PSNR) from the uncached images of the
  timing prompts.

Results go to ``--out`` (JSON, one entry per configuration, written after each so an interrupted run
resumes where it stopped) and a markdown table beside it.

    python benchmarks/caching.py [--models toy-unet toy-mmdit] [--every 2 3 4 5] [--n 100] [--steps 20]
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
from tqdm import tqdm

import workbench as wb
from workbench.capture.reuse import deepcache, encoder_propagation, middle_blocks
from workbench.models.judge import load_judge
from workbench.store.jobs import write_json_atomically

from workbench.studies.quality.protocol import prompt_families, score
from workbench.studies.skips.protocol import FAMILIES

# DeepCache's branch 1 on toy-unet: the first down stage's resnet and the whole last up stage recompute,
# everything deeper (the first downsampler included) is reused; the scheme measured as "deepcache"
# before branch ids were named (that one also ran the unused downsampler; images identical).
SCHEMES = {"deepcache": partial(deepcache, branch=1), "encoder_propagation": encoder_propagation,
           "middle_blocks": middle_blocks}
# The schemes that apply to each reference model (encoder propagation needs an encoder/decoder U-Net).
DEFAULT_SCHEMES = {"toy-unet": ["deepcache", "encoder_propagation"], "toy-mmdit": ["middle_blocks"]}


def variants(model, schemes: list[str], every: list[int]):
    """(name, context factory) for the uncached run and every scheme x interval."""
    out = [("uncached", None, None)]
    for scheme in schemes:
        for n in every:
            out.append((f"{scheme}/N={n}", scheme, n))
    return out


def run_variant(model, scheme, every, prompts, steps, seed, batch):
    """Images for ``prompts`` with the variant applied, and its reuse statistics."""
    images, stats = [], None
    for i in range(0, len(prompts), batch):
        if scheme is None:
            images.append(model.generate(prompts[i:i + batch], steps=steps, seed=seed + i))
            continue
        with SCHEMES[scheme](model, every=every) as cache:
            images.append(model.generate(prompts[i:i + batch], steps=steps, seed=seed + i))
        stats = cache.stats
    return np.concatenate(images), stats


def time_variants(model, configs, prompts, steps, repeats) -> dict:
    """Wall and CPU seconds of each variant beside its own uncached run, in close pairs.

    On a shared machine the load changes within seconds, so each variant is timed right next to an
    uncached run of the same prompts (order alternated: uncached first on even repeats, last on odd
    ones), and its speed-up is the median over repeats of the per-pair ratios."""
    timing = {name: {"wall_s": [], "cpu_s": [], "base_wall_s": [], "base_cpu_s": []} for name, _, _ in configs[1:]}

    def timed(scheme, every):
        w0, c0 = time.perf_counter(), time.process_time()
        run_variant(model, scheme, every, prompts, steps, seed=0, batch=len(prompts))
        return time.perf_counter() - w0, time.process_time() - c0

    for r in tqdm(range(repeats), desc="timing repeats", leave=False):
        for name, scheme, every in configs[1:]:
            pair = [(None, None), (scheme, every)] if r % 2 == 0 else [(scheme, every), (None, None)]
            measured = {s: timed(s, e) for s, e in pair}
            (bw, bc), (vw, vc) = measured[None], measured[scheme]
            timing[name]["base_wall_s"].append(bw), timing[name]["base_cpu_s"].append(bc)
            timing[name]["wall_s"].append(vw), timing[name]["cpu_s"].append(vc)
    for row in timing.values():
        row["speedup_wall"] = round(statistics.median(b / v for b, v in zip(row["base_wall_s"], row["wall_s"])), 3)
        row["speedup_cpu"] = round(statistics.median(b / v for b, v in zip(row["base_cpu_s"], row["cpu_s"])), 3)
    timing["uncached"] = {"speedup_wall": 1.0, "speedup_cpu": 1.0}
    return timing


def fidelity(model, configs, prompts, steps) -> dict:
    """How far each variant's images are from the uncached images of the same prompts and seeds:
    mean absolute pixel difference and PSNR (pixels in [0, 1]). Stricter than the judge, which
    only reads what is drawn."""
    reference, _ = run_variant(model, None, None, prompts, steps, seed=0, batch=len(prompts))
    out = {}
    for name, scheme, every in configs[1:]:
        images, _ = run_variant(model, scheme, every, prompts, steps, seed=0, batch=len(prompts))
        mse = float(np.mean((images - reference) ** 2))
        out[name] = {"mean_abs_diff": round(float(np.mean(np.abs(images - reference))), 4),
                     "psnr_db": round(10 * np.log10(1.0 / max(mse, 1e-12)), 2)}
    return out


def measure(model_name: str, schemes: list[str], every: list[int], n: int, steps: int, batch: int, repeats: int,
            timing_batch: int, out: Path, results: dict) -> dict:
    model = wb.load(model_name)
    configs = variants(model, schemes, every)
    entry = results.setdefault(model_name, {"steps": steps, "n": n})
    if "timing" not in entry:
        timing_prompts = [c for c, _ in prompt_families(timing_batch, seed=0)["single"]]
        entry["timing"] = time_variants(model, configs, timing_prompts, steps, repeats)
        entry["timing_setup"] = {"prompts": timing_batch, "repeats": repeats, "threads": torch.get_num_threads()}
        write_json_atomically(out, results, indent=1)
    if "fidelity" not in entry:
        entry["fidelity"] = fidelity(model, configs, [c for c, _ in prompt_families(timing_batch, seed=0)["single"]], steps)
        write_json_atomically(out, results, indent=1)
    judge = load_judge()
    families = prompt_families(n, seed=0)
    quality = entry.setdefault("quality", {})
    for name, scheme, n_every in tqdm(configs, desc=f"{model_name} judged variants"):
        if name in quality:
            continue  # done in an earlier, interrupted run
        row = {}
        for family, key in FAMILIES.items():
            prompts = [c for c, _ in families[family]]
            images, stats = run_variant(model, scheme, n_every, prompts, steps, seed=0, batch=batch)
            row[key] = score(family, [o for _, o in families[family]], judge.judge(images))[key]
            if stats is not None:
                row["reused_share"] = round(stats.share_reused(), 3)
                row["calls"] = {"computed": dict(stats.computed), "reused": dict(stats.reused)}
        quality[name] = row
        write_json_atomically(out, results, indent=1)
    base = quality["uncached"]
    for name, row in quality.items():
        row["drop_points"] = {key: round(base[key] - row[key], 1) for key in FAMILIES.values()}
    write_json_atomically(out, results, indent=1)
    return results


def markdown(results: dict) -> str:
    lines = ["| model | variant | speed-up (wall) | speed-up (CPU) | shape+colour % | glyph % | drop (points) "
             "| PSNR vs uncached (dB) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, entry in results.items():
        for name, row in entry.get("quality", {}).items():
            t = entry.get("timing", {}).get(name, {})
            drop = row.get("drop_points", {})
            lines.append(f"| {model_name} | {name} | {t.get('speedup_wall', '-')}x | {t.get('speedup_cpu', '-')}x | "
                         f"{row['shape_and_colour']} | {row['glyph']} | {drop.get('shape_and_colour', '-')} / "
                         f"{drop.get('glyph', '-')} | {entry.get('fidelity', {}).get(name, {}).get('psnr_db', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_SCHEMES))
    parser.add_argument("--every", nargs="+", type=int, default=[2, 3, 4, 5])
    parser.add_argument("--n", type=int, default=100, help="test prompts per judged family")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timing-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results/skips_caching.json")
    parser.add_argument("--retime", action="store_true", help="time again, keeping the judged results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.retime:
        for entry in results.values():
            entry.pop("timing", None)
    with torch.no_grad():
        for model_name in args.models:
            measure(model_name, DEFAULT_SCHEMES[model_name], args.every, args.n, args.steps, args.batch, args.repeats,
                    args.timing_batch, out, results)
    table = markdown(results)
    print(table)
    out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
