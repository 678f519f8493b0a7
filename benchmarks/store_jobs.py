"""What the rules of jobs that write stores cost per chunk (workbench/store/jobs.py).

One process, one store. Each chunk of an extraction job is computed once; then its writing is
timed both ways, alternating, on the same data:

* bare: the region write and the done mark (what the job did before the rules);
* rules: the done check, the claim (O_EXCL file + heartbeat thread), the same region write, the
  chunk record (files, sizes, and a digest read back from disk), the done mark, the release.

The computation of the chunk (noise, denoiser, pooling) is timed too, so both writing costs can be
read against the whole chunk.

    python benchmarks/store_jobs.py                      # 256 images, 8 chunks, 5 repeats
    python benchmarks/store_jobs.py --images 512 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SITES = ["down_blocks.0.out", "down_blocks.1.out", "down_blocks.2.out", "mid_block.out", "up_blocks.0.out",
         "up_blocks.1.out", "up_blocks.2.out"]
TIMESTEPS = [50, 150, 300]
BATCH = 32


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from workbench.features import DatasetSpec, ExtractConfig, Extractor, feature_store
    from workbench.models.reference import build_components
    from workbench.store.claims import Claims

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="store-jobs-bench-"))
    folder = work / "toy-unet"
    build_components("toy-unet", seed=0).save_pretrained(folder, dtype=torch.float32)
    out = work / "feats.zarr"
    config = ExtractConfig(model=str(folder), dataset=DatasetSpec("shapes", split="test", max_objects=1,
                                                                  limit=args.images),
                           sites=SITES, timesteps=TIMESTEPS, pooling="adaptive", batch_size=BATCH, out=str(out),
                           progress=False)
    ex = Extractor(config)
    plan = ex.plan()
    feature_store.prepare(out, ex.job(), plan, ex.source, TIMESTEPS, BATCH, config.dtype, ex.provenance())
    n_chunks = -(-args.images // BATCH)

    computed, compute_s = {}, []
    for chunk in range(n_chunks):
        start = chunk * BATCH
        begin = time.perf_counter()
        features, valid, _ = ex.compute(range(start, min(args.images, start + BATCH)))
        compute_s.append(time.perf_counter() - begin)
        computed[chunk] = (start, features, valid)

    def bare(chunk: int) -> None:
        import xarray as xr

        start, features, valid = computed[chunk]
        region = xr.Dataset({site: (("image", "timestep", *plan[site]["dims"]), values)
                             for site, values in features.items()} | {"valid": ("image", valid)})
        region.to_zarr(out, region={"image": slice(start, start + len(valid))}, mode="r+", consolidated=False)
        feature_store.set_done(out, chunk, True)

    claims = Claims(out)

    def rules(chunk: int) -> None:
        start, features, valid = computed[chunk]
        assert not feature_store.is_done(out, chunk) and claims.try_claim(chunk)
        feature_store.write_chunk(out, plan, chunk, start, features, valid)  # data, record, mark
        claims.release(chunk)

    bare_s, rules_s = [], []
    for _ in range(args.repeats):
        for chunk in range(n_chunks):
            for kind, fn, times in (("bare", bare, bare_s), ("rules", rules, rules_s)):
                feature_store.unmark(out, [chunk])
                begin = time.perf_counter()
                fn(chunk)
                times.append(time.perf_counter() - begin)
    claims.close()

    compute, b, r = (statistics.median(x) * 1000 for x in (compute_s, bare_s, rules_s))
    print(f"{args.images} images, {n_chunks} chunks of {BATCH}, {len(SITES)} sites x {len(TIMESTEPS)} timesteps, "
          f"{args.repeats} repeats; medians per chunk:\n")
    print("| per chunk | ms |")
    print("| --- | --- |")
    print(f"| compute (noise, denoiser, pooling) | {compute:.1f} |")
    print(f"| write, bare (region + done mark) | {b:.1f} |")
    print(f"| write under the job rules (+ claim, record with read-back digest, release) | {r:.1f} |")
    print(f"\nrules add {r - b:.1f} ms per chunk: {(r - b) / (compute + b) * 100:.1f}% of a bare chunk "
          f"(compute + write); whole chunk ratio {(compute + r) / (compute + b):.3f}x")
    np.testing.assert_array_equal(feature_store.done_chunks(out), np.ones(n_chunks, bool))


if __name__ == "__main__":
    main()
