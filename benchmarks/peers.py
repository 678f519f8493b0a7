"""The peers' methods measured on the reference models (issue 26): DAAM against the default word
maps, and T-GATE and every DeepCache branch as caching schemes, with FLOPs per step beside the
measured speed-ups.

    python benchmarks/peers.py daam    [--prompts 24 --steps 20]           # docs/results/peers_daam.json
    python benchmarks/peers.py caching [--steps 20 --repeats 5]            # docs/results/peers_caching.json
    python benchmarks/peers.py judge   [--n 50 --steps 20]                 # docs/results/peers_judged.json
    python benchmarks/peers.py --update-doc                                # tables in skips.md, attention.md

daam: for each prompt (the quality benchmark's single-object and glyph captions), one run recorded
with ``**.attn2.probs``; per word, the Pearson correlation between ``word_maps(method="daam")`` and
the default ``word_maps`` resized to the same latent grid. Reported: median and quartiles over words.

caching: each variant (uncached, T-GATE at each gate, DeepCache's 9 branches at interval N,
DeepCache's non-uniform schedule on branch 0) is timed right beside an uncached run of the same
prompts and seed (close pairs, order alternated, median of the per-pair ratios, wall and CPU), its
images compared with the uncached ones (PSNR), its FLOPs per step counted
(``workbench.capture.flops``).

judge: the uncached run and T-GATE at each gate are judged (shape+colour on single
objects, glyph on glyphs; Wilson 95% intervals).
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

import workbench as wb
from workbench.analysis.stats import wilson
from workbench.attention import word_maps
from workbench.capture.flops import flops_per_step
from workbench.capture.reuse import deepcache
from workbench.studies.docs import write_block
from workbench.studies.quality.job import prompt_families, score

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FAMILIES = {"single": "shape_and_colour", "glyph": "glyph"}


def _captions(n: int) -> list[str]:
    families = prompt_families(n, seed=0)
    return [c for family in FAMILIES for c, _ in families[family][: n // 2]]


# -- DAAM -------------------------------------------------------------------------------------------

def measure_daam(model_name: str, n_prompts: int, steps: int) -> dict:
    model = wb.load(model_name)
    per_word = []
    for i, caption in enumerate(_captions(n_prompts)):
        with wb.record(model, ["**.attn2.probs"]) as rec:
            model.generate([caption], steps=steps, seed=i)
        daam = word_maps(rec, method="daam")
        default = word_maps(rec, size=tuple(daam.shape[1:]))
        for word in daam.word.values:
            a, b = daam.sel(word=word).values.ravel(), default.sel(word=word).values.ravel()
            per_word.append({"prompt": i, "word": str(word), "pearson": float(np.corrcoef(a, b)[0, 1])})
    r = np.array([w["pearson"] for w in per_word])
    return {"model": model_name, "prompts": n_prompts, "steps": steps, "words": len(per_word),
            "pearson_median": round(float(np.median(r)), 4),
            "pearson_quartiles": [round(float(q), 4) for q in np.percentile(r, [25, 75])],
            "pearson_min": round(float(r.min()), 4), "per_word": per_word}


# -- caching ----------------------------------------------------------------------------------------

def variants(every: int, gates: list[int]) -> dict:
    """name -> context factory (None = uncached)."""
    out = {"uncached": None}
    for gate in gates:
        out[f"T-GATE gate {gate}"] = partial(wb.tgate, gate_step=gate)
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
    model = wb.load(model_name)
    results = json.loads(out.read_text()) if out.exists() else {}
    entry = results.setdefault(model_name, {"steps": steps, "every": every, "repeats": repeats,
                                            "timing_prompts": timing_prompts, "threads": torch.get_num_threads(),
                                            "variants": {}})
    prompts = _captions(2 * timing_prompts)[:timing_prompts]
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
        _save(results, out)
    return results


def judge_variants(model_name: str, gates: list[int], n: int, steps: int, out: Path) -> dict:
    """The judge's accuracy on the uncached run and on T-GATE at each gate (``n`` test prompts per
    family, seeds as the quality benchmark's), with Wilson 95% intervals."""
    from workbench.models.judge import load_judge

    model, judge = wb.load(model_name), load_judge()
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
        _save(results, out)
    return results


def _save(results: dict, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)


# -- doc tables -------------------------------------------------------------------------------------

def caching_table(results: dict, judged: dict) -> str:
    lines = ["| model | variant | FLOPs per step (mean, G) | FLOPs ratio | speed-up wall | speed-up CPU | PSNR vs uncached (dB) "
             "| shape+colour % [95% CI] | glyph % [95% CI] |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, entry in results.items():
        for name, row in entry["variants"].items():
            verdict = judged.get(model_name, {}).get("variants", {}).get(name, {})
            cells = [f"{verdict[k]['percent']:g} [{verdict[k]['wilson95'][0]:g}, {verdict[k]['wilson95'][1]:g}]"
                     if k in verdict else "-" for k in FAMILIES.values()]
            flops = row["flops_per_step"]
            if name == "uncached":
                wall = cpu = "1.00x"
            elif "speedup_wall" in row:
                wall, cpu = f"{row['speedup_wall']:.2f}x", f"{row['speedup_cpu']:.2f}x"
            else:  # an interrupted run: FLOPs counted, not yet timed
                wall = cpu = "not timed"
            lines.append(f"| {model_name} | {name} | {sum(flops) / len(flops) / 1e9:.3f} | {row['flops_ratio']:.2f}x | "
                         f"{wall} | {cpu} | {row.get('psnr_db', '-')} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def daam_table(result: dict) -> str:
    q = result["pearson_quartiles"]
    return ("| model | prompts | words | Pearson median | quartiles | min |\n| --- | --- | --- | --- | --- | --- |\n"
            f"| {result['model']} | {result['prompts']} | {result['words']} | {result['pearson_median']:.3f} | "
            f"[{q[0]:.3f}, {q[1]:.3f}] | {result['pearson_min']:.3f} |")


def update_doc() -> None:
    daam = RESULTS / "peers_daam.json"
    caching, judged = RESULTS / "peers_caching.json", RESULTS / "peers_judged.json"
    if daam.exists():
        write_block("attention.md", "peers-daam", daam_table(json.loads(daam.read_text())))
    if caching.exists():
        verdicts = json.loads(judged.read_text()) if judged.exists() else {}
        write_block("skips.md", "peers-caching", caching_table(json.loads(caching.read_text()), verdicts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", nargs="?", choices=["daam", "caching", "judge"])
    parser.add_argument("--update-doc", action="store_true")
    parser.add_argument("--model", default="toy-unet")
    parser.add_argument("--prompts", type=int, default=24, help="daam: prompts")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=3, help="caching: DeepCache's interval")
    parser.add_argument("--gates", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--n", type=int, default=50, help="judge: test prompts per family")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timing-prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.part is None and not args.update_doc:
        parser.error("name a part to measure (daam, caching) or --update-doc")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if args.part == "daam":
            result = measure_daam(args.model, args.prompts, args.steps)
            (RESULTS / "peers_daam.json").write_text(json.dumps(result, indent=1))
            print(daam_table(result))
        elif args.part == "caching":
            results = measure_caching(args.model, args.every, args.gates, args.steps, args.repeats,
                                      args.timing_prompts, RESULTS / "peers_caching.json")
            print(caching_table(results, {}))
        elif args.part == "judge":
            judge_variants(args.model, args.gates, args.n, args.steps, RESULTS / "peers_judged.json")
    if args.update_doc:
        update_doc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
