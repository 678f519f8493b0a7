"""Extraction benchmark: throughput against a hand-written torch-hooks loop, and peak memory
against the number of images.

Both extractors do the same work on the same images: shapes-world images generated batch by
batch, noised with the same deterministic noise to each timestep, one denoiser call per batch and
timestep, the same block outputs pooled 2 x 2, written to a zarr store chunked by batch. The
hand-written loop is what one would write without workbench: ``register_forward_hook`` on the
block modules, ``adaptive_avg_pool2d``, ``zarr`` arrays; no resuming, no labels, no provenance.

* throughput: one subprocess; workbench and hand-written runs alternate (``--repeats`` each)
  and the medians are compared, so both numbers come from the same process and moment. Both
  sides are timed the same four ways: the whole call (setup included: model-side setup, store
  creation) and the batch loop alone (setup excluded: ``ExtractReport.compute_seconds`` for
  workbench, the loop over batches for the hand-written side), each as wall and as CPU time
  (``time.process_time``: steadier than wall time on a shared machine);
* memory: one subprocess per image count, each reporting its own peak RSS.

    python benchmarks/extraction.py                        # both, markdown tables on stdout
    python benchmarks/extraction.py --only throughput --images 256 --repeats 3
    python benchmarks/extraction.py --only memory --memory-images 64,256,1024
    python benchmarks/extraction.py --images 256 --repeats 5 --profile --save   # docs/results/extraction.json
    python benchmarks/extraction.py --update-doc         # its tables into docs/features.md, docs/benchmarks.md

The model is the shipped reference ``toy-unet`` if its weights are present, else the same
architecture with fresh weights (throughput does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITES = ["down_blocks.0.out", "down_blocks.1.out", "down_blocks.2.out", "mid_block.out", "up_blocks.0.out",
         "up_blocks.1.out", "up_blocks.2.out"]
TIMESTEPS = [50, 150, 300]
BATCH = 32
DATASET = dict(kind="shapes", split="test", max_objects=1)


def model_spec(workdir: Path) -> str:
    from workbench.models.reference import build_components, reference_dir

    if (reference_dir("toy-unet") / "reference.json").exists():
        return str(reference_dir("toy-unet"))
    folder = workdir / "toy-unet-fresh"
    if not folder.exists():
        import torch

        build_components("toy-unet", seed=0).save_pretrained(folder, dtype=torch.float32)
    return str(folder)


def run_workbench(model, n: int, out: Path) -> dict:
    """Times of ``n`` images with ``workbench.features.extract``: wall and CPU seconds of the whole
    call (``setup_included``: plan, store creation, chunks) and of the chunks alone (``compute``)."""
    from workbench.features import DatasetSpec, extract

    wall, cpu = time.perf_counter(), time.process_time()
    report = extract(model=model, dataset=DatasetSpec(**DATASET, limit=n), sites=SITES, timesteps=TIMESTEPS,
                     pooling="adaptive", pool_size=2, batch_size=BATCH, out=str(out), overwrite=True, progress=False)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "compute_wall": report.compute_seconds, "compute_cpu": report.compute_cpu_seconds}


def run_handwritten(model, n: int, out: Path) -> float:
    """The same job as plain torch hooks + zarr."""
    import dataclasses

    import numpy as np
    import torch
    import zarr

    from workbench.data import default_recipe, sample_scene
    from workbench.features.noising import batch_noise
    from workbench.sitemap import parse_site

    wall, cpu = time.perf_counter(), time.process_time()
    recipe = dataclasses.replace(default_recipe(), max_objects=1)
    unet = model.denoiser
    captured: dict[str, torch.Tensor] = {}
    modules = {site: unet.get_submodule(parse_site(site).module) for site in SITES}

    def keep(name):
        def hook(module, args, output):
            captured[name] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            empty = model.encode([""])["encoder_hidden_states"]
            root = zarr.open_group(str(out), mode="w")
            arrays = {}
            compute_wall, compute_cpu = time.perf_counter(), time.process_time()  # the loop alone, like compute_seconds
            for start in range(0, n, BATCH):
                indices = list(range(start, min(n, start + BATCH)))
                images = np.stack([sample_scene(i, DATASET["split"], 0, recipe=recipe).image for i in indices])
                x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                buffers: dict[str, np.ndarray] = {}
                for step, t in enumerate(TIMESTEPS):
                    noise = batch_noise(0, indices, t, 1, tuple(x0.shape[1:]))
                    sigma = t / 1000
                    noisy = (1 - sigma) * x0 + sigma * noise
                    unet(sample=noisy, timestep=torch.full((len(indices),), float(t)),
                         encoder_hidden_states=empty.expand(len(indices), -1, -1), return_dict=False)
                    for name in SITES:
                        pooled = torch.nn.functional.adaptive_avg_pool2d(captured[name], 2).numpy()
                        buffers.setdefault(name, np.empty((len(indices), len(TIMESTEPS), *pooled.shape[1:]), np.float32))
                        buffers[name][:, step] = pooled
                for name, values in buffers.items():
                    if name not in arrays:
                        arrays[name] = root.create_array(name, shape=(n, *values.shape[1:]), dtype="float32",
                                                         chunks=(BATCH, *values.shape[1:]))
                    arrays[name][start : start + len(indices)] = values
            compute_wall, compute_cpu = time.perf_counter() - compute_wall, time.process_time() - compute_cpu
    finally:
        for handle in handles:
            handle.remove()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "compute_wall": compute_wall,
            "compute_cpu": compute_cpu}


def child_throughput(n: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from workbench.features.model_inputs import load_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(model_spec(tmp))
        run_workbench(model, BATCH, tmp / "warm.zarr")  # warm-up: first calls allocate and import
        run_handwritten(model, BATCH, tmp / "warm_h.zarr")
        times = {"workbench": [], "handwritten": []}
        for _ in range(repeats):
            times["workbench"].append(run_workbench(model, n, tmp / "wb.zarr"))
            times["handwritten"].append(run_handwritten(model, n, tmp / "hw.zarr"))
        same = _same_features(tmp / "wb.zarr", tmp / "hw.zarr")
    medians = {side: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for side, runs in times.items()}
    ratios = {k: medians["handwritten"][k] / medians["workbench"][k] for k in medians["workbench"]}
    return {"images": n, "repeats": repeats, "seconds": times, "median_seconds": medians,
            "images_per_s": {side: {k: n / v for k, v in m.items()} for side, m in medians.items()},
            "ratio": ratios, "same_features": same}


def _same_features(wb: Path, hw: Path) -> bool:
    import numpy as np
    import xarray as xr
    import zarr

    ds = xr.open_zarr(wb, consolidated=False)
    root = zarr.open_group(str(hw), mode="r")
    return all(np.allclose(ds[s].values, root[s][:], rtol=1e-4, atol=1e-5) for s in SITES)


def child_memory(n: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from workbench.features.model_inputs import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(model_spec(Path(tmp)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = run_workbench(model, n, Path(tmp) / "mem.zarr")["compute_wall"]
        store_mb = sum(p.stat().st_size for p in (Path(tmp) / "mem.zarr").rglob("*") if p.is_file()) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"images": n, "peak_rss_mib": peak / 1024, "rss_after_load_mib": before / 1024,
            "store_mib": store_mb, "seconds": seconds}


def spawn(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at start), Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("throughput", "memory"))
    parser.add_argument("--images", type=int, default=256, help="images per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-images", default="64,256,1024")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the subprocesses")
    parser.add_argument("--target", type=float, default=0.9, help="the documented throughput target (ratio)")
    parser.add_argument("--profile", action="store_true", help="also profile one workbench extraction")
    parser.add_argument("--save", action="store_true", help="write docs/results/extraction.json")
    parser.add_argument("--update-doc", action="store_true",
                        help="write the saved results' tables into docs/features.md and docs/benchmarks.md")
    parser.add_argument("--child", choices=("throughput", "memory", "profile"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.update_doc:
        from workbench.studies.docs import write_block

        from workbench.results import results_dir

        saved = json.loads((results_dir() / "extraction.json").read_text())
        text = doc_tables(saved, args.target)
        write_block("features.md", "extraction", text)
        write_block("benchmarks.md", "extraction", text)
        return 0
    if args.child == "throughput":
        print(json.dumps(child_throughput(args.images, args.repeats, args.threads)))
        return 0
    if args.child == "memory":
        print(json.dumps(child_memory(args.images, args.threads)))
        return 0
    if args.child == "profile":
        print(json.dumps(child_profile(args.images, args.threads)))
        return 0

    print(f"machine: {machine()}")
    print(f"job: toy-unet, {len(SITES)} block outputs, timesteps {TIMESTEPS}, adaptive 2x2 pooling, batch {BATCH}, "
          f"{args.threads} torch thread(s)\n")
    saved = {"machine": machine(), "threads": args.threads, "job": {"sites": SITES, "timesteps": TIMESTEPS,
                                                                     "batch": BATCH}}
    if args.only in (None, "throughput"):
        result = spawn(["--child", "throughput", "--images", str(args.images), "--repeats", str(args.repeats),
                        "--threads", str(args.threads)])
        saved["throughput"] = result
        print(throughput_table(result, args.target))
    if args.profile:
        saved["profile"] = spawn(["--child", "profile", "--images", str(args.images), "--threads", str(args.threads)])
        print("\nprofile of workbench.features.extract (cumulative, top entries):\n")
        print(saved["profile"]["text"])
    if args.only in (None, "memory"):
        print("| images | peak RSS (MiB) | RSS after model load (MiB) | store on disk (MiB) | seconds |")
        print("| --- | --- | --- | --- | --- |")
        for n in [int(x) for x in args.memory_images.split(",")]:
            r = spawn(["--child", "memory", "--images", str(n), "--threads", str(args.threads)])
            saved.setdefault("memory", []).append(r)
            print(f"| {n} | {r['peak_rss_mib']:.0f} | {r['rss_after_load_mib']:.0f} | {r['store_mib']:.1f} | "
                  f"{r['seconds']:.1f} |")
    if args.save:
        from workbench.results import results_dir

        (results_dir() / "extraction.json").write_text(json.dumps(saved, indent=1))
    return 0


def doc_tables(saved: dict, target: float = 0.9) -> str:
    out = [f"Machine: {saved['machine']}; {saved['threads']} torch thread(s). Job: toy-unet, "
           f"{len(saved['job']['sites'])} block outputs, timesteps {saved['job']['timesteps']}, adaptive 2 x 2 "
           f"pooling, batches of {saved['job']['batch']} shapes-world images.\n"]
    if "throughput" in saved:
        out.append(throughput_table(saved["throughput"], target))
    if "memory" in saved:
        out += ["", "| images | peak RSS (MiB) | RSS after model load (MiB) | store on disk (MiB) | seconds |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| {r['images']} | {r['peak_rss_mib']:.0f} | {r['rss_after_load_mib']:.0f} | {r['store_mib']:.1f} | "
                f"{r['seconds']:.1f} |" for r in saved["memory"]]
    if "profile" in saved:
        out += ["", "Profile of one workbench extraction (cProfile, cumulative time, top entries):", "", "```",
                saved["profile"]["text"], "```"]
    return "\n".join(out)


def throughput_table(result: dict, target: float = 0.9) -> str:
    """Both sides timed the same four ways; ratio = hand-written time / workbench time (above 1:
    workbench is faster)."""
    m, r = result["median_seconds"], result["ratio"]
    rows = [("setup included, wall", "wall"), ("setup included, CPU", "cpu"),
            ("setup excluded (chunks / loop only), wall", "compute_wall"),
            ("setup excluded (chunks / loop only), CPU", "compute_cpu")]
    out = [f"| timing (median of {result['repeats']} runs of {result['images']} images) | workbench s | hand-written s "
           f"| workbench images/s | hand-written images/s | ratio | target >= {target}x |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, key in rows:
        verdict = "met" if r[key] >= target else "**missed**"
        out.append(f"| {label} | {m['workbench'][key]:.2f} | {m['handwritten'][key]:.2f} | "
                   f"{result['images'] / m['workbench'][key]:.1f} | {result['images'] / m['handwritten'][key]:.1f} | "
                   f"{r[key]:.2f}x | {verdict} |")
    runs = result["seconds"]
    spread = []
    for label, key in rows:
        paired = [h[key] / w[key] for w, h in zip(runs["workbench"], runs["handwritten"])]
        spread.append(f"{label} {min(paired):.2f}-{max(paired):.2f}x")
    out.append(f"\nRatio of each alternating pair of runs (hand-written run i / workbench run i), lowest-highest: "
               + "; ".join(spread) + ".")
    out.append(f"\nsame features: {result['same_features']}")
    return "\n".join(out)


def child_profile(n: int, threads: int) -> dict:
    """cProfile (CPU time) of one workbench extraction (after a warm-up), top entries by cumulative time."""
    import cProfile
    import io
    import pstats

    import torch

    torch.set_num_threads(threads)
    from workbench.features.model_inputs import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(model_spec(Path(tmp)))
        run_workbench(model, BATCH, Path(tmp) / "warm.zarr")
        profiler = cProfile.Profile(time.process_time)  # CPU time: wall time is mostly waiting on this shared machine
        profiler.enable()
        run_workbench(model, n, Path(tmp) / "prof.zarr")
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    return {"text": "\n".join(lines[:45])}


if __name__ == "__main__":
    sys.exit(main())
