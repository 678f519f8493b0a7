"""Skip connections and feature dynamics: pure functions over recorded xarray features.

Inputs are what ``Recording[site]`` returns: DataArrays with dims ``(sample, branch, step, ...)``,
spatial sites ending in ``(channel, y, x)``, stream sites in ``(token, channel)``. Nothing here knows
an architecture: which sites are skips, backbones or blocks, and the order of stages, come from the
site map (see :func:`block_roles`), passed in by the caller.

* Spectra (FreeU): :func:`spectral_shares` splits each feature map's energy into its mean (DC), a
  low band and a high band; :func:`radial_spectrum` gives the power per frequency ring.
* Dynamics (DeepCache, Faster Diffusion, Skip-DiT): :func:`step_similarity` (step x step cosine),
  :func:`adjacent_similarity`, :func:`relative_change` and :func:`share_above`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

RUN_DIMS = ("sample", "branch", "step")


def _feature_dims(da: xr.DataArray) -> list[str]:
    return [d for d in da.dims if d not in RUN_DIMS]


def _frequency_radius(ny: int, nx: int) -> np.ndarray:
    """|f| in cycles per pixel (Nyquist = 0.5) for every bin of an unshifted ny x nx spectrum."""
    fy, fx = np.fft.fftfreq(ny), np.fft.fftfreq(nx)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _power(da: xr.DataArray) -> np.ndarray:
    if da.dims[-2:] != ("y", "x"):
        raise ValueError(f"spectra need spatial features with dims ending in (y, x); got {da.dims}")
    return np.abs(np.fft.fft2(da.values.astype(np.float64), axes=(-2, -1))) ** 2


def spectral_shares(da: xr.DataArray, cutoff: float = 0.25) -> xr.Dataset:
    """Energy shares of spatial features, summed over channels, per (sample, branch, step):

    * ``dc``: the share in each channel's mean (the zero frequency);
    * ``low``: the share at 0 < |f| <= ``cutoff`` cycles per pixel;
    * ``high``: the share above ``cutoff``;
    * ``low_of_ac``: ``low / (low + high)``, the low-frequency share of what varies over the map
      (the measure to compare across sites: it does not depend on the channels' offsets).
    """
    if not 0 < cutoff < 0.5 * np.sqrt(2):
        raise ValueError(f"cutoff is a spatial frequency in cycles per pixel, between 0 and {0.5 * np.sqrt(2):.3f}; got {cutoff}")
    power = _power(da)
    radius = _frequency_radius(*power.shape[-2:])
    channel_axis = [i for i, d in enumerate(da.dims) if d not in RUN_DIMS + ("y", "x")]
    total = power.sum(axis=(-2, -1))
    parts = {
        "dc": power[..., radius == 0].sum(-1),
        "low": power[..., (radius > 0) & (radius <= cutoff)].sum(-1),
        "high": power[..., radius > cutoff].sum(-1),
    }
    axes = tuple(channel_axis)
    total = total.sum(axis=axes)
    run_dims = [d for d in da.dims if d in RUN_DIMS]
    coords = {d: da.coords[d] for d in run_dims if d in da.coords}
    out = {name: xr.DataArray(part.sum(axis=axes) / np.maximum(total, 1e-30), dims=run_dims, coords=coords)
           for name, part in parts.items()}
    out["low_of_ac"] = out["low"] / np.maximum(out["low"] + out["high"], 1e-30)
    return xr.Dataset(out, attrs={"cutoff_cycles_per_pixel": cutoff})


def radial_spectrum(da: xr.DataArray, bins: int = 8) -> xr.DataArray:
    """Mean power per ring of |f| (``bins`` rings from 0 to Nyquist), normalised to sum 1, averaged
    over every other dim except ``step``: dims ``(step, frequency)``."""
    power = _power(da)
    radius = _frequency_radius(*power.shape[-2:])
    edges = np.linspace(0, 0.5 * np.sqrt(2) + 1e-9, bins + 1)
    ring = np.digitize(radius, edges) - 1
    keep = [i for i, d in enumerate(da.dims) if d == "step"]
    reduce_axes = tuple(i for i in range(power.ndim - 2) if i not in keep)
    mean_power = power.mean(axis=reduce_axes) if reduce_axes else power
    profile = np.stack([mean_power[..., ring == b].mean(-1) if (ring == b).any() else np.zeros(mean_power.shape[:-2])
                        for b in range(bins)], axis=-1)
    profile = profile / np.maximum(profile.sum(-1, keepdims=True), 1e-30)
    centres = (edges[:-1] + edges[1:]) / 2
    dims = ["step", "frequency"] if keep else ["frequency"]
    coords = {"frequency": centres}
    if keep and "step" in da.coords:
        coords["step"] = da.coords["step"]
    return xr.DataArray(profile, dims=dims, coords=coords)


def _flat(da: xr.DataArray) -> np.ndarray:
    """(sample, branch, step, features) with every feature dim flattened."""
    ordered = da.transpose(*[d for d in RUN_DIMS if d in da.dims], *_feature_dims(da))
    missing = [d for d in RUN_DIMS if d not in da.dims]
    if missing:
        raise ValueError(f"features need dims {RUN_DIMS} (as Recording[site] gives them); missing {missing}")
    values = ordered.values.astype(np.float64)
    return values.reshape(values.shape[:3] + (-1,))


def step_similarity(da: xr.DataArray) -> xr.DataArray:
    """Cosine similarity of the features at every pair of steps, per sample and branch, averaged
    over both: dims ``(step, step_other)``."""
    flat = _flat(da)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-30)
    sim = np.einsum("abif,abjf->abij", unit, unit).mean(axis=(0, 1))
    steps = da.coords["step"].values if "step" in da.coords else np.arange(flat.shape[2])
    return xr.DataArray(sim, dims=("step", "step_other"), coords={"step": steps, "step_other": steps})


def adjacent_similarity(da: xr.DataArray) -> xr.DataArray:
    """cos(f_t, f_{t-1}) per sample, branch and step t >= 1: dims ``(sample, branch, step)``."""
    flat = _flat(da)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-30)
    cos = (unit[:, :, 1:] * unit[:, :, :-1]).sum(-1)
    return _run_array(da, cos)


def relative_change(da: xr.DataArray) -> xr.DataArray:
    """||f_t - f_{t-1}|| / ||f_t|| per sample, branch and step t >= 1: dims ``(sample, branch, step)``."""
    flat = _flat(da)
    change = np.linalg.norm(flat[:, :, 1:] - flat[:, :, :-1], axis=-1) / np.maximum(
        np.linalg.norm(flat[:, :, 1:], axis=-1), 1e-30)
    return _run_array(da, change)


def _run_array(da: xr.DataArray, values: np.ndarray) -> xr.DataArray:
    steps = da.coords["step"].values[1:] if "step" in da.coords else np.arange(1, values.shape[2] + 1)
    coords = {d: da.coords[d] for d in ("sample", "branch") if d in da.coords}
    coords["step"] = steps
    return xr.DataArray(values, dims=RUN_DIMS, coords=coords)


def share_above(similarity: xr.DataArray, threshold: float = 0.95) -> float:
    """The share of values above ``threshold`` (e.g. of :func:`adjacent_similarity`: adjacent-step pairs)."""
    values = np.asarray(similarity.values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no similarities to count (a run of one step has no adjacent pairs)")
    return float((values > threshold).mean())


def block_roles(blocks: list[str], stages: tuple[str, ...]) -> dict[str, str]:
    """Encoder, bottleneck or decoder for each top-level block, in forward order.

    With three or more stages (a U-Net: down, mid, up) the first stage is the encoder, the last
    the decoder and the ones between the bottleneck. With one stage (a transformer's block list)
    the first half of the blocks is called encoder and the second half decoder, the split
    Faster Diffusion's claim is tested against on a model without an encoder."""
    if len(stages) >= 3:
        first, last = stages[0], stages[-1]
        return {b: "encoder" if b.split(".")[0] == first else "decoder" if b.split(".")[0] == last else "bottleneck"
                for b in blocks}
    half = len(blocks) / 2
    return {b: "encoder" if i < half else "decoder" for i, b in enumerate(blocks)}
