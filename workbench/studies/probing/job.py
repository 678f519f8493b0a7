"""The probe grids of docs/features.md: probe the feature stores written by ``workbench extract``
(itself the resumable store job; see the doc for the exact commands) under the study's protocol
(:mod:`.protocol`) and save each grid to ``probe_<model>.json`` in the results folder, which
:mod:`.report` reads.

    python -m workbench.studies.probing.job toy-unet=unet.zarr toy-mmdit=mmdit.zarr
    python -m workbench.studies.probing.job --pixels      # the baseline: probes on the input pixels

The baseline renders the same 1000 test images (``protocol.IMAGES``; their ids are checked against
the grids' stores by digest) and probes their pixels under the same protocol (``probe_pixels.json``).
"""

from __future__ import annotations

import argparse
import json
import time

from ...features import open_features
from ...results import results_dir
from ...features.image_sources import open_source
from .protocol import IMAGES, pixel_features, probe_grid


def probe_store(name: str, store: str) -> dict:
    """Probe one feature store; returns (and saves as ``probe_<name>.json``) the grid as a dict."""
    start = time.perf_counter()
    features = open_features(store)
    grid = probe_grid(features)
    grid.attrs["seconds"] = round(time.perf_counter() - start, 1)
    grid.attrs["store"] = store
    grid.attrs["job"] = json.dumps(features.attrs.get("job", ""), default=str)[:2000]
    saved = grid.to_dict()
    (results_dir() / f"probe_{name}.json").write_text(json.dumps(saved, indent=1, default=float))
    print(f"{name}: probed in {grid.attrs['seconds']} s", flush=True)
    return saved


def probe_pixels() -> dict:
    """The pixel baseline (``protocol.pixel_features`` of ``protocol.IMAGES``); saved as ``probe_pixels.json``."""
    start = time.perf_counter()
    features = pixel_features(open_source(IMAGES))
    grid = probe_grid(features)
    grid.attrs.update(seconds=round(time.perf_counter() - start, 1), images=features.attrs["images"],
                      images_sha1=features.attrs["images_sha1"])
    saved = grid.to_dict()
    (results_dir() / "probe_pixels.json").write_text(json.dumps(saved, indent=1, default=float))
    print(f"pixels: probed in {grid.attrs['seconds']} s", flush=True)
    return saved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="*", help="MODEL=STORE pairs")
    parser.add_argument("--pixels", action="store_true", help="probe the input pixels (the baseline)")
    args = parser.parse_args(argv)
    if not args.stores and not args.pixels:
        parser.error("give MODEL=STORE pairs, --pixels, or both")
    if args.pixels:
        probe_pixels()
    for pair in args.stores:
        name, _, store = pair.partition("=")
        if not store:
            raise SystemExit(f"expected MODEL=STORE, got {pair!r}")
        probe_store(name, store)


if __name__ == "__main__":
    main()
