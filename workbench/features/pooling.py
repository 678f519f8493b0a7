"""Pooling recorded site tensors into per-image feature vectors or small maps.

A site's recording is ``(sample, *site dims)`` once the branch and step are chosen. Two layouts
carry a spatial grid: U-Net feature maps ``(channel, y, x)`` and transformer image tokens
``(token, channel)``, whose ``token_y`` / ``token_x`` coordinates place each token on the patch
grid. Both become one canonical map ``(channel, y, x)`` first, so that every pooling treats a U-Net
and an MM-DiT alike:

* ``mean``: global average over the grid -> ``(channel,)`` (text tokens: the mean token);
* ``adaptive``: adaptive average pooling to ``k x k`` -> ``(channel, py, px)``, as the
  diffusion-classifier papers do (their best: 2 x 2);
* ``none``: the whole map ``(channel, y, x)``; sites without a grid (text tokens, attention
  probabilities) keep their recorded dims.

Example:
    >>> import numpy as np, xarray as xr
    >>> maps = xr.DataArray(np.ones((2, 4, 6, 6), "float32"), dims=("sample", "channel", "y", "x"))
    >>> pool(maps, "adaptive", 2).dims
    ('sample', 'channel', 'py', 'px')
    >>> pool(maps, "mean").shape
    (2, 4)
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr


def canonical(array: xr.DataArray) -> tuple[xr.DataArray, str]:
    """``(sample, ...)`` site data as ``(sample, channel, y, x)`` if it has a grid, with its layout:
    ``"map"``, ``"tokens"`` (no grid: text tokens) or ``"other"`` (e.g. attention probabilities)."""
    dims = set(array.dims)
    if {"channel", "y", "x"} <= dims and len(dims) == 4:
        return array.reset_coords(drop=True).drop_vars(["y", "x"], errors="ignore").transpose("sample", "channel", "y", "x"), "map"
    if dims == {"sample", "token", "channel"}:
        if _all_image_tokens(array):
            return _tokens_to_map(array), "map"
        return array.transpose("sample", "token", "channel").reset_coords(drop=True), "tokens"
    return array.reset_coords(drop=True), "other"


def pool(array: xr.DataArray, pooling: str, size: int = 2, site: str = "") -> xr.DataArray:
    """Pool ``(sample, ...)`` site data; see the module docstring for what each pooling gives."""
    data, layout = canonical(array)
    what = f"site {site}" if site else "this site"
    if pooling == "none":
        return data.drop_vars(list(data.coords))
    if layout == "map":
        if pooling == "mean":
            return data.mean(("y", "x"))
        if pooling == "adaptive":
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(data.values)), size)
            return xr.DataArray(pooled.numpy(), dims=("sample", "channel", "py", "px"))
    if layout == "tokens" and pooling == "mean":
        return data.mean("token")
    raise ValueError(
        f"{what} has dims {tuple(d for d in array.dims if d != 'sample')} and no spatial grid: pooling "
        f"{pooling!r} needs a feature map or image tokens; use pooling='none' "
        + ("or 'mean'" if layout == "tokens" else "for it")
    )


def _all_image_tokens(array: xr.DataArray) -> bool:
    if "token_y" not in array.coords or "token_x" not in array.coords:
        return False
    kinds = array.coords["token_kind"].values if "token_kind" in array.coords else None
    image = kinds is None or bool(np.all(kinds == "image"))
    return image and bool(np.all(array["token_y"].values >= 0))


def _tokens_to_map(array: xr.DataArray) -> xr.DataArray:
    """Image tokens on their (row, col) grid: ``(sample, token, channel)`` -> ``(sample, channel, y, x)``."""
    ys, xs = array["token_y"].values, array["token_x"].values
    rows, cols = int(ys.max()) + 1, int(xs.max()) + 1
    if rows * cols != array.sizes["token"]:
        raise ValueError(f"{array.sizes['token']} image tokens do not fill their {rows} x {cols} grid")
    grid = np.empty((array.sizes["sample"], array.sizes["channel"], rows, cols), dtype=array.dtype)
    values = array.transpose("sample", "channel", "token").values
    grid[:, :, ys, xs] = values  # tokens may come in any order: place each by its coordinates
    return xr.DataArray(grid, dims=("sample", "channel", "y", "x"))
