"""Per-block statistics of recorded attention: entropy and spatial locality (pure, over xarray)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..sitemap import parse_site


def entropy(probs: xr.DataArray, normalise: bool = True) -> xr.DataArray:
    """Entropy of each query's distribution over keys, in nats; with ``normalise`` the block's
    rows are renormalised first (a block's rows sum to less than one)."""
    p = probs / probs.sum("key") if normalise else probs
    return -(p * np.log(p.where(p > 0, 1.0))).sum("key")


def locality(image_to_image: xr.DataArray, max_distance: int | None = None) -> xr.DataArray:
    """Attention mass an image query sends to image keys at each Chebyshev grid distance,
    averaged over queries: dims (..., distance). Local attention piles its mass at small distances.

    ``image_to_image`` needs ``query_y/x`` and ``key_y/x`` coordinates (any image->image block)."""
    qy, qx = image_to_image.query_y.values, image_to_image.query_x.values
    ky, kx = image_to_image.key_y.values, image_to_image.key_x.values
    distance = np.maximum(np.abs(qy[:, None] - ky[None, :]), np.abs(qx[:, None] - kx[None, :]))
    top = int(distance.max()) if max_distance is None else max_distance
    per_distance = []
    for d in range(top + 1):
        mask = xr.DataArray(distance == d, dims=("query", "key"))
        per_distance.append((image_to_image * mask).sum("key").mean("query"))
    return xr.concat(per_distance, dim=xr.DataArray(np.arange(top + 1), dims="distance", name="distance"))


def validate(recording, atol: float = 1e-3):
    """Check that every recorded attention row sums to one over its keys, site by site.

    Only whole rows can be checked: sites named ``*.probs`` (a joint matrix, ``attn1``/``attn2``);
    a block such as ``*.probs.image->text`` holds part of each row. Returns a DataFrame indexed by
    site: ``rows`` checked, ``max_error`` (largest ``|row sum - 1|``), ``worst_row`` (where it is:
    sample, branch, step, head, query) and ``ok`` (``max_error <= atol``). Raises if the recording
    has no whole-row site."""
    import pandas as pd

    records = []
    for name in recording:
        parts = parse_site(name)
        if parts.kind != "probs" or parts.block is not None:  # a block holds part of each row
            continue
        probs = recording[name]
        if "key" not in probs.dims or "query" not in probs.dims:
            continue
        error = np.abs(probs.sum("key") - 1.0)
        flat = int(np.nanargmax(error.values))
        where = dict(zip(error.dims, np.unravel_index(flat, error.shape)))
        labels = []
        for dim, index in where.items():
            label = error[dim].values[index] if dim in error.coords and dim in ("branch", "step") else index
            labels.append(f"{dim} {label}")
        worst = float(error.values.flat[flat])
        records.append({"site": name, "rows": int(error.size), "max_error": worst, "worst_row": ", ".join(labels),
                        "ok": bool(worst <= atol)})
    if not records:
        raise ValueError("no whole attention rows to check: record sites named '*.probs' (e.g. "
                         "'transformer_blocks.*.attn.probs' or '**.attn2.probs'); query->key blocks hold part rows")
    return pd.DataFrame(records).set_index("site")
