"""Per-block statistics of recorded attention: entropy and spatial locality (pure, over xarray)."""

from __future__ import annotations

import numpy as np
import xarray as xr


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
