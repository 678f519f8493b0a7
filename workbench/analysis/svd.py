"""SVD of the latent codes themselves (after Wang et al. 2025, arXiv 2502.02225).

A latent z of shape (channel, y, x) is read as matrices in one of two views:

* ``"channels"``: one matrix of channels x pixels (C x HW). Its rank is at most C: for the
  pixel-space reference models (3 x 32 x 32) that is 3 components, with left singular vectors
  that are colour mixtures and right singular vectors that are whole-image spatial patterns;
* ``"per_channel"``: one H x W matrix per channel (rank up to min(H, W) = 32 for the reference
  models), the view that has room for many components.

Everything here is a pure function over xarray; the runs that produce trajectories and continue a
run from an edited latent at step k are :mod:`workbench.studies.svd.runs`.

Conventions, explicit because the paper gives none:

* singular vectors carry a sign chosen so that each right singular vector's largest-magnitude
  entry is positive (u and v flip together, so the latent is unchanged);
* the subspace of a latent is spanned by its top-k right singular vectors (pixel patterns in the
  channels view, row patterns per channel); distance between two subspaces is the Grassmann
  distance sqrt(sum theta_i^2) over their principal angles, in [0, sqrt(k) * pi / 2];
* an edit reconstructs only the matrices whose factors it changed; untouched matrices keep the
  original values bit for bit, so a no-op edit continues exactly as the original run did.

Example:
    >>> import workbench as wb
    >>> from workbench.analysis import svd
    >>> from workbench.studies.svd.runs import trajectory
    >>> model = wb.load("toy-mmdit")                                             # doctest: +SKIP
    >>> z = trajectory(model, ["a red circle on the left"], steps=10)            # doctest: +SKIP
    >>> factors = svd.latent_svd(z, view="per_channel")                          # doctest: +SKIP
    >>> svd.subspace_distances(factors, k=4).shape                               # doctest: +SKIP
    (11, 11)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr

VIEWS = ("channels", "per_channel")
LATENT_DIMS = ("channel", "y", "x")


# -- latents as arrays ----------------------------------------------------------------------------
def as_latents(latents, leading: Sequence[str] = ("sample",)) -> xr.DataArray:
    """A DataArray with trailing dims (channel, y, x). Accepts a DataArray (a recording's
    ``latent.in`` / ``latent.x0``: the branch dim is dropped, taking the last branch, since
    ``latent.in`` is the same latent in every branch and ``latent.x0`` has one 'guided' branch),
    or a tensor / array whose leading axes are named by ``leading``."""
    if isinstance(latents, xr.DataArray):
        array = latents.isel(branch=-1, drop=True) if "branch" in latents.dims else latents
        missing = [d for d in LATENT_DIMS if d not in array.dims]
        if missing:
            raise ValueError(f"latents need dims {LATENT_DIMS}; these have {array.dims} (missing {missing})")
        others = [d for d in array.dims if d not in LATENT_DIMS]
        return array.transpose(*others, *LATENT_DIMS)
    values = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
    if values.ndim < 3:
        raise ValueError(f"latents need at least 3 axes (channel, y, x), got shape {values.shape}")
    lead = list(leading)[:values.ndim - 3]
    if len(lead) != values.ndim - 3:
        raise ValueError(f"latents of shape {values.shape} have {values.ndim - 3} leading axes; name them with leading=")
    return xr.DataArray(values, dims=(*lead, *LATENT_DIMS))


def _matrices(latents: xr.DataArray, view: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The latents as a stack of matrices (..., m, n) and the names of the stacking dims."""
    _check_view(view)
    values = latents.values
    lead = tuple(d for d in latents.dims if d not in LATENT_DIMS)
    if view == "channels":
        return values.reshape(*values.shape[:-2], values.shape[-2] * values.shape[-1]), lead
    return values, lead + ("channel",)


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown SVD view {view!r}; choose 'channels' (C x HW) or 'per_channel' (H x W per channel)")


def max_rank(shape: Sequence[int], view: str) -> int:
    """The most components a latent of ``shape`` (channel, y, x) has in ``view``."""
    _check_view(view)
    c, h, w = shape[-3:]
    return min(c, h * w) if view == "channels" else min(h, w)


def check_rank(k: int, shape: Sequence[int], view: str) -> int:
    """``k`` if a latent of ``shape`` has that many components in ``view``, else a clear error."""
    limit = max_rank(shape, view)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
        hint = " (use view='per_channel' for more)" if view == "channels" else ""
        raise ValueError(f"rank k={k!r} is not available: a {tuple(shape[-3:])} latent has {limit} components in "
                         f"the {view!r} view{hint}; choose 1 <= k <= {limit}")
    return int(k)


# -- SVD and reconstruction -----------------------------------------------------------------------
def latent_svd(latents, view: str = "per_channel") -> xr.Dataset:
    """SVD of every latent: Dataset with ``U`` (..., row, component), ``S`` (..., component) and
    ``Vh`` (..., component, col); rows/cols are channel/pixel in the channels view and y/x per
    channel. Leading dims (sample, step, ...) are kept; attrs say the view and latent shape."""
    latents = as_latents(latents)
    matrices, lead = _matrices(latents, view)
    u, s, vh = np.linalg.svd(matrices.astype(np.float64), full_matrices=False)
    # sign: each right singular vector's largest-magnitude entry positive
    idx = np.abs(vh).argmax(axis=-1)
    signs = np.sign(np.take_along_axis(vh, idx[..., None], axis=-1))[..., 0]
    signs[signs == 0] = 1.0
    u, vh = u * signs[..., None, :], vh * signs[..., :, None]
    rows, cols = ("channel", "pixel") if view == "channels" else ("y", "x")
    coords = {d: latents.coords[d] for d in lead if d in latents.coords}
    shape = tuple(latents.sizes[d] for d in LATENT_DIMS)
    return xr.Dataset(
        {"U": ((*lead, rows, "component"), u), "S": ((*lead, "component"), s), "Vh": ((*lead, "component", cols), vh)},
        coords={**coords, "component": np.arange(s.shape[-1])},
        attrs={"view": view, "latent_shape": shape},
    )


def reconstruct(factors: xr.Dataset, k: int | None = None) -> xr.DataArray:
    """The latents U diag(S) Vh (from the top ``k`` components if given), dims (..., channel, y, x)."""
    view, shape = factors.attrs["view"], tuple(factors.attrs["latent_shape"])
    if k is not None:
        factors = top(factors, k)
    u, s, vh = factors["U"].values, factors["S"].values, factors["Vh"].values
    matrices = (u * s[..., None, :]) @ vh
    lead = tuple(d for d in factors["S"].dims if d != "component")
    if view == "channels":  # (..., C, HW) -> (..., C, H, W)
        values, out_dims = matrices.reshape(*matrices.shape[:-1], shape[1], shape[2]), lead + LATENT_DIMS
    else:  # lead ends with channel already
        values, out_dims = matrices, lead + ("y", "x")
    coords = {d: factors.coords[d] for d in lead if d in factors.coords}
    array = xr.DataArray(values.astype(np.float32), dims=out_dims, coords=coords)
    return array.transpose(*[d for d in out_dims if d not in LATENT_DIMS], *LATENT_DIMS)


def top(factors: xr.Dataset, k: int) -> xr.Dataset:
    """The top ``k`` components (checked against what the latent allows)."""
    check_rank(k, factors.attrs["latent_shape"], factors.attrs["view"])
    return factors.isel(component=slice(0, k))


def edit_latents(latents, edit: Callable[[xr.Dataset], xr.Dataset], view: str = "per_channel") -> xr.DataArray:
    """Apply ``edit`` (factors -> edited factors, same shapes) and rebuild the latents. Matrices
    whose factors the edit left equal keep their original values bit for bit."""
    latents = as_latents(latents)
    factors = latent_svd(latents, view)
    edited = edit(factors)
    _check_same_shape(factors, edited, "the edit's output")
    rebuilt = reconstruct(edited)
    changed = None
    for name, reduce_dims in (("U", 2), ("S", 1), ("Vh", 2)):
        diff = factors[name].values != edited[name].values
        diff = diff.reshape(*diff.shape[:diff.ndim - reduce_dims], -1).any(-1)
        changed = diff if changed is None else changed | diff
    lead = tuple(d for d in factors["S"].dims if d != "component")
    mask = xr.DataArray(changed, dims=lead)
    out = xr.where(mask, rebuilt, latents).astype(latents.dtype)
    return out.transpose(*latents.dims)


def _check_same_shape(a: xr.Dataset, b: xr.Dataset, what: str = "the second latents") -> None:
    for name in ("U", "S", "Vh"):
        if a[name].shape != b[name].shape or a[name].dims != b[name].dims:
            raise ValueError(f"latents of different shapes: {name} is {dict(a[name].sizes)} but {what} has "
                             f"{dict(b[name].sizes)}; SVD edits combine latents of one shape and view")
    if a.attrs.get("view") != b.attrs.get("view"):
        raise ValueError(f"factors from different views: {a.attrs.get('view')!r} and {b.attrs.get('view')!r}")


def swap(factors_a: xr.Dataset, factors_b: xr.Dataset, part: str, k: int | None = None) -> xr.Dataset:
    """A's factors with B's singular ``"values"`` or ``"vectors"`` (U and Vh together), for all
    components or the top ``k``."""
    if part not in ("values", "vectors"):
        raise ValueError(f"part must be 'values' or 'vectors', got {part!r}")
    _check_same_shape(factors_a, factors_b)
    n = factors_a.sizes["component"] if k is None else check_rank(k, factors_a.attrs["latent_shape"],
                                                                      factors_a.attrs["view"])
    out = factors_a.copy(deep=True)
    names = ("S",) if part == "values" else ("U", "Vh")
    for name in names:
        out[name][{"component": slice(0, n)}] = factors_b[name].isel(component=slice(0, n)).values
    return out


def scale_values(factors: xr.Dataset, gains: Sequence[float]) -> xr.Dataset:
    """Factors with the top ``len(gains)`` singular values multiplied by ``gains`` (in every
    matrix): what the explorer's sliders do. Gains of exactly 1 leave the latent untouched."""
    check_rank(len(gains), factors.attrs["latent_shape"], factors.attrs["view"])
    out = factors.copy(deep=True)
    g = np.ones(factors.sizes["component"])
    g[:len(gains)] = gains
    out["S"] = factors["S"] * xr.DataArray(g, dims="component")
    return out


# -- subspaces ------------------------------------------------------------------------------------
def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the spans of orthonormal columns ``a``
    (..., n, k) and ``b`` (..., n, k)."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"bases of different shapes {a.shape[-2:]} and {b.shape[-2:]} (space x components)")
    cosines = np.linalg.svd(np.swapaxes(a, -1, -2) @ b, compute_uv=False)
    return np.arccos(np.clip(cosines, -1.0, 1.0))


def grassmann_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(sum of squared principal angles) between two k-dim subspaces."""
    return np.sqrt((principal_angles(a, b) ** 2).sum(-1))


def basis(factors: xr.Dataset, k: int, side: str = "right") -> xr.DataArray:
    """Orthonormal columns spanning the top-``k`` subspace: right singular vectors (pixel or row
    patterns) or left ones (channel mixtures or column patterns); dims (..., space, component)."""
    factors = top(factors, k)
    if side == "right":
        vh = factors["Vh"]
        return vh.transpose(*[d for d in vh.dims if d != "component"], "component").rename(
            {vh.dims[-1]: "space"})
    if side == "left":
        u = factors["U"]
        return u.rename({u.dims[-2]: "space"})
    raise ValueError(f"side must be 'right' or 'left', got {side!r}")


def subspace_distances(factors: xr.Dataset, k: int, dim: str = "step", side: str = "right") -> xr.DataArray:
    """Grassmann distance between the top-``k`` subspaces at every pair of ``dim`` values (steps),
    averaged over every other dim (samples, channels): dims (dim, dim + '_other')."""
    if dim not in factors.dims:
        raise ValueError(f"the factors have no {dim!r} dim to compare along (dims: {tuple(factors.dims)})")
    b = basis(factors, k, side)
    others = [d for d in b.dims if d not in (dim, "space", "component")]
    values = b.transpose(dim, *others, "space", "component").values
    n = values.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        out[i] = grassmann_distance(values[i][None], values).reshape(n, -1).mean(-1)
    coord = factors[dim].values if dim in factors.coords else np.arange(n)
    return xr.DataArray(out, dims=(dim, f"{dim}_other"), coords={dim: coord, f"{dim}_other": coord},
                        attrs={"k": k, "side": side, "view": factors.attrs["view"], "metric": "grassmann"})


def random_subspace_distance(n: int, k: int, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the Grassmann distance between two uniformly random k-dim subspaces of
    R^n (Monte Carlo): the baseline a 'stable subspace' must beat."""
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and n={n}")
    rng = np.random.default_rng(seed)
    a = np.linalg.qr(rng.standard_normal((samples, n, k)))[0]
    b = np.linalg.qr(rng.standard_normal((samples, n, k)))[0]
    d = grassmann_distance(a, b)
    return float(d.mean()), float(d.std())


def attribute_shares(factors_a: xr.Dataset, latents_b) -> xr.DataArray:
    """How much of the difference D = z_B - z_A lies along each of A's rank-one components
    u_i v_i^T: share_i = sum over matrices of (u_i^T D v_i)^2, over the sum of ||D||^2 (the
    components are orthonormal, so the shares sum to at most 1). Dims (leading..., component);
    per channel view: summed over channels."""
    latents_b = as_latents(latents_b)
    view = factors_a.attrs["view"]
    if tuple(latents_b.sizes[d] for d in LATENT_DIMS) != tuple(factors_a.attrs["latent_shape"]):
        raise ValueError(f"latents of different shapes: A is {tuple(factors_a.attrs['latent_shape'])}, B is "
                         f"{tuple(latents_b.sizes[d] for d in LATENT_DIMS)}")
    a = reconstruct(factors_a)
    diff, lead = _matrices(latents_b - a, view)
    u, vh = factors_a["U"].values, factors_a["Vh"].values
    coef = np.einsum("...mc,...mn,...cn->...c", u, diff.astype(np.float64), vh) ** 2
    total = (diff.astype(np.float64) ** 2).sum((-2, -1))
    if view == "per_channel":
        coef, total = coef.sum(-2), total.sum(-1)
        lead = lead[:-1]
    shares = coef / np.maximum(total, 1e-30)[..., None]
    coords = {d: latents_b.coords[d] for d in lead if d in latents_b.coords}
    return xr.DataArray(shares, dims=(*lead, "component"), coords=coords)


# -- combining two latents ------------------------------------------------------------------------
def slerp(a, b, t: float = 0.5) -> xr.DataArray:
    """Spherical interpolation between two latents per sample (over channel, y, x)."""
    a, b = as_latents(a), as_latents(b)
    if a.shape != b.shape:
        raise ValueError(f"latents of different shapes: {a.shape} and {b.shape}")
    x, y = a.values.astype(np.float64), b.values.astype(np.float64)
    axes = (-3, -2, -1)
    cos = (x * y).sum(axes) / np.sqrt((x * x).sum(axes) * (y * y).sum(axes))
    omega = np.arccos(np.clip(cos, -1, 1))[..., None, None, None]
    small = np.sin(omega) < 1e-6
    wa = np.where(small, 1 - t, np.sin((1 - t) * omega) / np.where(small, 1, np.sin(omega)))
    wb = np.where(small, t, np.sin(t * omega) / np.where(small, 1, np.sin(omega)))
    return a.copy(data=(wa * x + wb * y).astype(a.dtype))


def svd_edit(source, attribute, rank: int = 4, view: str = "per_channel", iterations: int = 300,
             hidden: int = 32, identity_weight: float = 1.0, seed: int = 0) -> xr.DataArray:
    """Our explicit version of Wang et al.'s edit from one pair of latents at one step.

    Per sample, with source factors (U_s, S_s, V_s) and attribute factors (U_a, S_a, V_a):

        z' = U_s diag(S_s * g_s) V_s^T + U_a[:, :r] diag(S_a[:r] * g_a) V_a[:, :r]^T

    combines all source components with the attribute's top ``rank`` = r components. The gains
    (g_s, g_a) come from a small predictor (an MLP over log singular values, ``hidden`` units,
    one per sample, shared by its channels) trained on that one pair for ``iterations`` Adam
    steps with two losses:

    * identity: fed the source as both inputs, it must give back the source latent (||z'-z_s||),
      and fed the pair, the edit must keep the source outside the attribute's top-r subspace;
    * target: fed the pair, the edit's coefficients along the attribute's top-r components
      (u_a,i^T z' v_a,j) must equal diag(S_a[:r]).
    """
    source, attribute = as_latents(source), as_latents(attribute)
    if source.shape != attribute.shape:
        raise ValueError(f"latents of different shapes: source {source.shape}, attribute {attribute.shape}")
    fs, fa = latent_svd(source, view), latent_svd(attribute, view)
    r = check_rank(rank, fs.attrs["latent_shape"], view)
    lead = tuple(d for d in fs["S"].dims if d != "component")
    per_sample = lead[:-1] if view == "per_channel" else lead  # matrices of one sample share a predictor
    n_matrix = int(np.prod([fs.sizes[d] for d in lead[len(per_sample):]] or [1]))

    def flat(name, f):
        v = torch.from_numpy(f[name].values.astype(np.float32))
        return v.reshape(-1, n_matrix, *v.shape[len(lead):])

    us, ss, vhs = flat("U", fs), flat("S", fs), flat("Vh", fs)
    ua, sa, vha = flat("U", fa), flat("S", fa), flat("Vh", fa)
    edited = _fit_edits(us, ss, vhs, ua[..., :r], sa[..., :r], vha[..., :r, :], r, iterations, hidden,
                        identity_weight, seed).numpy()
    edited = edited.reshape(source.shape)
    return source.copy(data=edited.astype(source.dtype))


@torch.enable_grad()  # callers often run under no_grad; the predictor trains here
def _fit_edits(us, ss, vhs, ua, sa, vha, r, iterations, hidden, identity_weight, seed):
    """Train one predictor per sample (all samples at once, as a batch of independent MLPs; the
    matrices of one sample share theirs); returns the edited matrices (sample, matrix, m, n)."""
    n, p = ss.shape[0], ss.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    w1 = (torch.randn((n, 2 * p, hidden), generator=gen) * 0.1).requires_grad_()
    b1 = torch.zeros((n, 1, hidden), requires_grad=True)
    w2 = (torch.randn((n, hidden, p + r), generator=gen) * 0.1).requires_grad_()
    b2 = torch.zeros((n, 1, p + r), requires_grad=True)
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=1e-2)

    def net(features):  # (sample, matrix, 2p) -> gains (sample, matrix, p + r)
        return torch.tanh(features @ w1 + b1) @ w2 + b2

    zs = (us * ss[..., None, :]) @ vhs
    features_pair = torch.cat([torch.log1p(ss), torch.log1p(torch.cat([sa, ss[..., r:]], -1))], -1)
    features_same = torch.cat([torch.log1p(ss), torch.log1p(ss)], -1)
    pu, pv = ua @ ua.transpose(-1, -2), vha.transpose(-1, -2) @ vha  # projectors onto the attribute subspace

    def combine(gains, u2, s2, vh2):
        g_s, g_a = 1.0 + gains[..., :p], gains[..., p:]
        return (us * (ss * g_s)[..., None, :]) @ vhs + (u2 * (s2 * g_a)[..., None, :]) @ vh2

    scale = zs.pow(2).sum((1, 2, 3))
    for _ in range(iterations):
        opt.zero_grad()
        same = combine(net(features_same), us[..., :r], ss[..., :r], vhs[..., :r, :])
        edit = combine(net(features_pair), ua, sa, vha)
        outside = edit - zs - pu @ (edit - zs) @ pv  # change outside the attribute subspace
        identity = ((same - zs).pow(2).sum((1, 2, 3)) + outside.pow(2).sum((1, 2, 3))) / scale
        coefficients = ua.transpose(-1, -2) @ edit @ vha.transpose(-1, -2)
        target = (coefficients - torch.diag_embed(sa)).pow(2).sum((1, 2, 3)) / sa.pow(2).sum((1, 2))
        loss = (identity_weight * identity + target).sum()  # samples are independent: a sum trains each alone
        loss.backward()
        opt.step()
    with torch.no_grad():
        return combine(net(features_pair), ua, sa, vha).float()


def at_step(latents: xr.DataArray, step: int) -> xr.DataArray:
    """The latents entering ``step`` of a trajectory (clear error if it was not recorded)."""
    steps = [int(s) for s in latents["step"].values]
    if step not in steps:
        raise ValueError(f"step {step!r} is out of range: the trajectory holds steps {steps[0]}..{steps[-1]}")
    return latents.sel(step=step, drop=True)
