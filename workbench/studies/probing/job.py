"""The probe grids of docs/features.md: probe the feature stores written by ``workbench extract``
(itself the resumable store job; see the doc for the exact commands) under the study's protocol
(:mod:`.protocol`) and save each grid to ``probe_<model>.json`` in the results folder, which
:mod:`.report` reads.

    python -m workbench.studies.probing.job toy-unet=unet.zarr toy-mmdit=mmdit.zarr
"""

from __future__ import annotations

import argparse
import json
import time

from ...features import open_features
from ...results import results_dir
from .protocol import probe_grid


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="+", help="MODEL=STORE pairs")
    args = parser.parse_args(argv)
    for pair in args.stores:
        name, _, store = pair.partition("=")
        if not store:
            raise SystemExit(f"expected MODEL=STORE, got {pair!r}")
        probe_store(name, store)


if __name__ == "__main__":
    main()
