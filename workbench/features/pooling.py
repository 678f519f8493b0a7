"""Pooling recorded site tensors into per-image feature vectors or small maps.

A site's capture is ``(batch, *site dims)``. Two layouts carry a spatial grid: U-Net feature maps
``(channel, y, x)`` and transformer image tokens ``(token, channel)``, which lie row by row on the
patch grid (the order the recording's ``token_y`` / ``token_x`` coordinates describe, from the site
map's token layout and the call's geometry). Both become
one canonical map ``(channel, y, x)`` first, so that every pooling treats a U-Net and an MM-DiT
alike:

* ``mean``: global average over the grid -> ``(channel,)`` (text tokens: the mean token);
* ``adaptive``: adaptive average pooling to ``k x k`` -> ``(channel, py, px)``, as the
  diffusion-classifier papers do (their best: 2 x 2);
* ``none``: the whole map ``(channel, y, x)``; sites without a grid (text tokens, attention
  probabilities) keep their recorded dims.

:func:`pool_tensor` works on a raw capture (what extraction uses: no labelled arrays per call);
:func:`pool` is the same on a labelled ``(sample, ...)`` DataArray, e.g. ``rec[site]`` at one step.

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


def canonical(x: torch.Tensor, dims: tuple[str, ...], tokens: str = "text",
              grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, tuple[str, ...], str]:
    """A capture ``(batch, *dims)`` as ``(batch, channel, y, x)`` if it has a grid.

    ``tokens`` says what a ``token`` axis holds: ``"image"`` (laid row by row on ``grid``),
    ``"text"`` or ``"joint"`` (both). Returns the tensor, its dims after batch, and its layout:
    ``"map"``, ``"tokens"`` (text tokens: no grid) or ``"other"`` (joint tokens, attention
    probabilities, ...).
    """
    if set(dims) == {"channel", "y", "x"}:
        order = [0] + [1 + dims.index(d) for d in ("channel", "y", "x")]
        return x.permute(order), ("channel", "y", "x"), "map"
    if set(dims) == {"token", "channel"} and tokens in ("image", "text"):
        seq = x.permute(0, 1 + dims.index("token"), 1 + dims.index("channel"))  # (batch, token, channel)
        if tokens == "text":
            return seq, ("token", "channel"), "tokens"
        rows, cols = grid
        if rows * cols != seq.shape[1]:
            raise ValueError(f"{seq.shape[1]} image tokens do not fill a {rows} x {cols} grid")
        image = seq.reshape(seq.shape[0], rows, cols, seq.shape[2]).permute(0, 3, 1, 2)
        return image, ("channel", "y", "x"), "map"
    return x, tuple(dims), "other"


def pool_tensor(x: torch.Tensor, dims: tuple[str, ...], pooling: str, size: int = 2, tokens: str = "text",
                grid: tuple[int, int] | None = None, site: str = "") -> tuple[torch.Tensor, tuple[str, ...]]:
    """Pool a capture ``(batch, *dims)`` (``tokens``, ``grid``: see :func:`canonical`); returns
    the pooled tensor and its dims after batch."""
    data, data_dims, layout = canonical(x, tuple(dims), tokens, grid)
    if pooling == "none":
        return data, data_dims
    if layout == "map":
        if pooling == "mean":
            return data.mean(dim=(2, 3)), ("channel",)
        if pooling == "adaptive":
            return torch.nn.functional.adaptive_avg_pool2d(data, size), ("channel", "py", "px")
    if layout == "tokens" and pooling == "mean":
        return data.mean(dim=1), ("channel",)
    what = f"site {site}" if site else "this site"
    raise ValueError(
        f"{what} has dims {tuple(dims)} and no spatial grid: pooling {pooling!r} needs a feature map or image "
        "tokens; use pooling='none'" + (" or 'mean'" if layout == "tokens" else "")
    )


def pool(array: xr.DataArray, pooling: str, size: int = 2, site: str = "") -> xr.DataArray:
    """:func:`pool_tensor` on a labelled ``(sample, ...)`` array; image tokens are recognised by
    their ``token_kind`` / ``token_y`` / ``token_x`` coordinates."""
    dims = tuple(d for d in array.dims if d != "sample")
    array = array.transpose("sample", *dims)
    tokens, grid = _token_layout(array) if "token" in dims else ("text", None)
    pooled, pooled_dims = pool_tensor(torch.from_numpy(np.ascontiguousarray(array.values)), dims, pooling, size,
                                      tokens, grid, site)
    return xr.DataArray(pooled.numpy(), dims=("sample", *pooled_dims))


def _token_layout(array: xr.DataArray) -> tuple[str, tuple[int, int] | None]:
    """What the token axis holds (image / text / joint) and, for image tokens, their grid."""
    kinds = set(array.coords["token_kind"].values.tolist()) if "token_kind" in array.coords else {"text"}
    if kinds != {"image"}:
        return ("text" if kinds == {"text"} else "joint"), None
    ys, xs = array["token_y"].values, array["token_x"].values
    rows, cols = int(ys.max()) + 1, int(xs.max()) + 1
    if not (np.array_equal(ys, np.repeat(np.arange(rows), cols)) and np.array_equal(xs, np.tile(np.arange(cols), rows))):
        raise ValueError("image tokens are not laid row by row on their grid")
    return "image", (rows, cols)
