"""Probing: how well a label can be read off each site at each timestep.

For every label x site x timestep, a linear probe (softmax regression) and a small MLP (one
hidden ReLU layer) are trained on the pooled features of a feature store. Images are split once,
per label, into train / validation / test with a fixed seed (stratified by class, so that rare
classes appear in every part): probes train on train, their weight decay is chosen on
validation, ``peaks`` picks each label's best site and timestep on validation too, and the grid
reports accuracy on test, beside chance (the test share of the most
frequent class). Features are standardised with train statistics only.

Probes are trained in torch, full batch with Adam for a fixed number of steps, and *many at
once*: for one site, the probes of every timestep and every weight decay are one batched model
(independent weights, one ``matmul``), which makes a whole grid take seconds on a CPU where
fitting them one by one with scikit-learn took minutes. Initialisation is seeded, so a grid is
reproducible on the same machine and thread count.

Images whose features are missing (``valid`` False: unreadable) or whose label does not apply
(code -1, e.g. ``shape`` of a glyph) are left out of that label's probes.

Example:
    >>> from workbench.features import open_features
    >>> grid = probe(open_features("feats.zarr"), ["shape", "colour"])     # doctest: +SKIP
    >>> grid.accuracy.dims                                                 # doctest: +SKIP
    ('label', 'site', 'timestep', 'probe')
    >>> peaks(grid)                                                        # doctest: +SKIP
    >>> heatmap(grid).show()                                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import zlib
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..style import PAGE_WIDTH, style, wrap

PROBES = ("linear", "mlp")
PANEL_PX = 260  # a heatmap panel's width when the page has room
ROW_GAP_PX = 80  # between rows of panels: x tick labels, the axis title and the next row's title
#: Weight decays (L2 penalty on the weights, added to the mean cross-entropy) tried per probe
#: kind; the one with the best validation accuracy is reported.
WEIGHT_DECAYS = {"linear": (1e-4, 1e-3, 1e-2), "mlp": (1e-4, 1e-2)}
#: Adam steps: enough for standardised features to converge (the MLP, which can overfit a
#: small train split, is stopped earlier; its weight decay is chosen on validation).
STEPS = {"linear": 300, "mlp": 200}
#: Training rows per step. Up to this many the probes train full batch (on the small splits
#: probing uses, mini-batches of 256 converged visibly worse in the same number of steps);
#: beyond it, steps see this many rows, so a step's cost stops growing with the dataset.
BATCH = 2048
LEARNING_RATE = 1e-2


def feature_sites(features: xr.Dataset) -> list[str]:
    """The site variables of a feature store, in the order the job listed them."""
    listed = features.attrs.get("sites")
    names = [s for s in (listed or features.data_vars) if s in features.data_vars]
    return [s for s in names if features[s].dims[:2] == ("image", "timestep")]


def split_indices(labels: np.ndarray, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0):
    """Positions of ``labels`` split into (train, val, test), stratified by class, fixed by ``seed``.

    >>> train, val, test = split_indices(np.repeat([0, 1], 10), seed=0)
    >>> len(train), len(val), len(test)
    (12, 4, 4)
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split must be three fractions (train, val, test) summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(fractions[1] * len(members)))
        n_test = int(round(fractions[2] * len(members)))
        if len(members) - n_val - n_test < 1:  # a class needs a training example before anything else
            n_val, n_test = 0, max(0, len(members) - 1)
        n_train = len(members) - n_val - n_test
        parts[0].extend(members[:n_train])
        parts[1].extend(members[n_train : n_train + n_val])
        parts[2].extend(members[n_train + n_val :])
    return tuple(np.sort(np.asarray(p, dtype=int)) for p in parts)


def train_probes(kind: str, X: torch.Tensor, y: torch.Tensor, train: np.ndarray, decays: Sequence[float],
                 set_seeds: Sequence[int] | None = None, seed: int = 0, hidden: int = 32,
                 steps: int | None = None) -> Callable[[np.ndarray], torch.Tensor]:
    """Train ``S x H`` independent probes at once: one per feature set ``X[s]`` (``X`` is
    ``(S, N, D)``, standardised) and weight decay ``decays[h]``, on rows ``train``.

    The weight decays share each feature set's input: their weights sit side by side in one
    ``(D, H * out)`` matrix per set, so a step is one batched matmul per layer. Each step sees
    :data:`BATCH` training rows (all of them when there are fewer), cycling through seeded
    permutations. ``set_seeds`` seed each set's MLP initialisation on its own, so that a probe's
    result does not depend on which other sets it was trained beside.
    Returns ``predict(rows) -> (S, H, len(rows))`` class predictions.
    """
    n_sets, _, dim = X.shape
    n_decays, n_classes = len(decays), int(y.max()) + 1
    steps = steps or STEPS[kind]
    set_seeds = list(range(n_sets)) if set_seeds is None else list(set_seeds)

    if kind == "linear":  # zero init: the convex problem has one optimum, reached from anywhere
        weights = [torch.zeros(n_sets, dim, n_decays * n_classes), torch.zeros(n_sets, 1, n_decays * n_classes)]
    else:  # PyTorch's default Linear initialisation, one generator per set
        first, second = [], []
        for set_seed in set_seeds:
            generator = torch.Generator().manual_seed(int(set_seed))
            first.append((torch.rand(dim, n_decays * hidden, generator=generator) * 2 - 1) / dim**0.5)
            second.append((torch.rand(n_decays, hidden, n_classes, generator=generator) * 2 - 1) / hidden**0.5)
        weights = [torch.stack(first), torch.zeros(n_sets, 1, n_decays * hidden),
                   torch.stack(second), torch.zeros(n_sets, 1, n_decays, n_classes)]
    for w in weights:
        w.requires_grad_(True)

    def logits(inputs):  # (S, n, D) -> (S, n, H, C)
        if kind == "linear":
            return (inputs @ weights[0] + weights[1]).view(n_sets, -1, n_decays, n_classes)
        h = torch.relu(inputs @ weights[0] + weights[1]).view(n_sets, -1, n_decays, hidden)
        return torch.einsum("snhk,shkc->snhc", h, weights[2]) + weights[3]

    def penalty():  # squared weights (not biases) per (set, decay)
        first = weights[0].view(n_sets, dim, n_decays, -1).pow(2).sum((1, 3))
        return first if kind == "linear" else first + weights[2].pow(2).sum((2, 3))

    decay = torch.tensor(list(decays), dtype=X.dtype).view(1, -1)
    batches = _batches(np.asarray(train), steps, seed)
    optimiser = torch.optim.Adam(weights, lr=LEARNING_RATE)
    with torch.enable_grad():
        for rows in batches:
            optimiser.zero_grad()
            out = logits(X[:, rows])
            targets = y[rows].view(1, -1, 1).expand(n_sets, -1, n_decays).reshape(-1)
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, n_classes), targets, reduction="none")
            loss = loss.view(n_sets, -1, n_decays).mean(1) + 0.5 * decay * penalty()
            loss.sum().backward()  # independent probes: summing their losses trains each on its own
            optimiser.step()

    @torch.no_grad()
    def predict(rows: np.ndarray) -> torch.Tensor:
        return logits(X[:, rows]).argmax(-1).permute(0, 2, 1)

    return predict


def _batches(train: np.ndarray, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of training rows: the whole set each step if it is small, else
    :data:`BATCH` rows at a time through a fresh seeded permutation per epoch."""
    if len(train) <= BATCH:
        return [train] * steps
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(train)
        out += [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]  # full batches only
    return out[:steps]


def probe(
    features: xr.Dataset,
    labels: str | Sequence[str],
    *,
    sites: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    probes: Sequence[str] = PROBES,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    hidden: int = 32,
) -> xr.Dataset:
    """Probe accuracy per label x site x timestep x probe kind, as a Dataset.

    Variables: ``accuracy`` (test), ``val_accuracy``, ``weight_decay`` (chosen on validation),
    ``chance`` and ``n_train`` / ``n_val`` / ``n_test`` per label. ``features`` is an
    ``open_features`` Dataset (or any Dataset with ``(image, timestep, ...)`` site variables,
    ``valid`` and int label variables).
    """
    labels = [labels] if isinstance(labels, str) else list(labels)
    probes = list(probes)
    unknown_probes = sorted(set(probes) - set(PROBES))
    if unknown_probes:
        raise ValueError(f"unknown probe kind(s) {unknown_probes}; valid: {', '.join(PROBES)}")
    all_sites = feature_sites(features)
    sites = list(sites) if sites is not None else all_sites
    missing = [s for s in sites if s not in all_sites]
    if missing:
        raise KeyError(f"sites {missing} are not in this feature store; it holds: {', '.join(all_sites)}")
    for label in labels:
        if label not in features.data_vars or features[label].dims != ("image",):
            have = [v for v in features.data_vars if features[v].dims == ("image",) and "classes" in features[v].attrs]
            raise KeyError(f"label {label!r} is not in this feature store; its labels are: {', '.join(have)}")
    timesteps = list(features["timestep"].values) if timesteps is None else list(timesteps)
    valid = features["valid"].values if "valid" in features else np.ones(features.sizes["image"], bool)

    shape = (len(labels), len(sites), len(timesteps), len(probes))
    accuracy, val_accuracy, chosen = (np.full(shape, np.nan) for _ in range(3))
    chance, counts = np.full(len(labels), np.nan), np.zeros((len(labels), 3), dtype=int)
    prepared = []  # per label: usable images, class ids, split
    for a, label in enumerate(labels):
        codes = features[label].values.astype(int)
        keep = np.flatnonzero(valid & (codes >= 0))
        if len(np.unique(codes[keep])) < 2:
            raise ValueError(f"label {label!r} has fewer than two classes among the usable images; nothing to probe")
        _, y = np.unique(codes[keep], return_inverse=True)  # contiguous class ids among those present
        parts = split_indices(y, split, seed)
        counts[a] = [len(p) for p in parts]
        chance[a] = np.bincount(y[parts[2]]).max() / max(1, len(parts[2]))
        prepared.append((keep, torch.from_numpy(y), parts))
    n_t = len(timesteps)
    for group in _groups_by_width(features, sites):
        # Sites of equal feature width train together: (sites x timesteps) feature sets, one batch.
        values = np.concatenate([_feature_sets(features, site, timesteps) for site in group])  # (G*T, image, D)
        at = [sites.index(site) for site in group]
        for a, (keep, y, parts) in enumerate(prepared):
            X = torch.from_numpy(np.ascontiguousarray(values[:, keep], dtype=np.float32))
            mean, std = X[:, parts[0]].mean(1, keepdim=True), X[:, parts[0]].std(1, keepdim=True)
            X = (X - mean) / (std + 1e-6)  # train statistics only
            for d, kind in enumerate(probes):
                decays = WEIGHT_DECAYS[kind]
                set_seeds = [_set_seed(seed, site, t) for site in group for t in timesteps]
                predict = train_probes(kind, X, y, parts[0], decays, set_seeds=set_seeds, seed=seed, hidden=hidden)
                val = _accuracy(predict, parts[1], y, (len(X), len(decays)))  # (G*T, H)
                test = _accuracy(predict, parts[2], y, (len(X), len(decays)))
                best = np.nan_to_num(val, nan=-1).argmax(axis=1)  # first best on ties: the smallest decay
                pick = np.arange(len(X))
                accuracy[a, at, :, d] = test[pick, best].reshape(len(group), n_t)
                val_accuracy[a, at, :, d] = val[pick, best].reshape(len(group), n_t)
                chosen[a, at, :, d] = np.asarray(decays)[best].reshape(len(group), n_t)
    coords = {"label": labels, "site": sites, "timestep": timesteps, "probe": probes}
    dims = ("label", "site", "timestep", "probe")
    return xr.Dataset(
        {
            "accuracy": (dims, accuracy, {"description": "test accuracy of the probe chosen on validation"}),
            "val_accuracy": (dims, val_accuracy),
            "weight_decay": (dims, chosen, {"description": "L2 penalty chosen on validation"}),
            "chance": ("label", chance, {"description": "test share of the most frequent class"}),
            "n_train": ("label", counts[:, 0]),
            "n_val": ("label", counts[:, 1]),
            "n_test": ("label", counts[:, 2]),
        },
        coords=coords,
        attrs={
            "model": features.attrs.get("model", ""),
            "pooling": features.attrs.get("pooling", ""),
            "split": list(split),
            "seed": seed,
            "mlp_hidden": hidden,
            "steps": json.dumps(STEPS),
        },
    )


def _set_seed(seed: int, site: str, timestep) -> int:
    """A probe's own initialisation seed: from the grid's seed, its site and its timestep."""
    return int(np.random.SeedSequence([seed, zlib.crc32(site.encode()), int(timestep)]).generate_state(1)[0])


def _feature_sets(features: xr.Dataset, site: str, timesteps) -> np.ndarray:
    """A site's features as ``(timestep, image, flattened feature)``."""
    values = features[site].sel(timestep=timesteps).values
    return values.reshape(values.shape[0], len(timesteps), -1).swapaxes(0, 1)


def _groups_by_width(features: xr.Dataset, sites: list[str]) -> list[list[str]]:
    widths: dict[int, list[str]] = {}
    for site in sites:
        width = int(np.prod([features.sizes[d] for d in features[site].dims[2:]], dtype=np.int64))
        widths.setdefault(width, []).append(site)
    return list(widths.values())


def _accuracy(predict, rows: np.ndarray, y: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    if len(rows) == 0:
        return np.full(shape, np.nan)
    return (predict(rows) == y[rows]).float().mean(-1).numpy()


def peaks(grid: xr.Dataset) -> pd.DataFrame:
    """Where each label peaks, per probe kind: the site and timestep with the best *validation*
    accuracy, and that cell's test accuracy (the figure to report), validation accuracy, chance,
    and ``best_test``: the highest test accuracy in the grid, what picking the cell on test would
    have claimed (it is optimistic: the pick and the figure share their noise).

    Ties go to the earliest site and timestep in the grid's order."""
    rows = []
    for label in grid["label"].values:
        for kind in grid["probe"].values:
            acc = grid["accuracy"].sel(label=label, probe=kind)
            val = grid["val_accuracy"].sel(label=label, probe=kind)
            flat = int(np.nanargmax(np.where(np.isnan(acc.values), np.nan, val.values)))
            s, t = np.unravel_index(flat, acc.shape)
            rows.append({
                "label": str(label), "probe": str(kind), "site": str(acc["site"].values[s]),
                "timestep": int(acc["timestep"].values[t]), "accuracy": float(acc.values[s, t]),
                "val_accuracy": float(val.values[s, t]), "best_test": float(np.nanmax(acc.values)),
                "chance": float(grid["chance"].sel(label=label)),
            })
    return pd.DataFrame(rows)


def heatmap(grid: xr.Dataset, probe: str | None = None, title: str | None = None):
    """A plotly figure: one heatmap (site x timestep, test accuracy) per label (rows) and probe
    kind (columns; or only ``probe``). Hover shows accuracy, chance and the validation accuracy."""
    return compare({"": grid}, probe=probe, title=title)


def compare(grids: dict[str, xr.Dataset], probe: str | None = None, title: str | None = None):
    """Heatmaps of several grids side by side (e.g. ``{"toy-unet": g1, "toy-mmdit": g2}``): one
    row per label, one column per model x probe kind, one shared colour scale from 0 to 1."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    first = next(iter(grids.values()))
    labels = [str(v) for v in first["label"].values]
    kinds = [probe] if probe is not None else [str(v) for v in first["probe"].values]
    columns = [(name, kind) for name in grids for kind in kinds]
    titles = [
        " ".join(x for x in (name, kind, label) if x) for label in labels for name, kind in columns
    ]
    # Laid out in px, then given to plotly as shares of its plot area (the figure less its left and
    # right margins: spacing given as a share of the whole figure once left the second model's row
    # labels 80 px short, printed over the first panel). Row labels sit left of a panel that starts
    # a model (the first one's in the left margin); grids with the same sites share the first's.
    same_sites = len({tuple(map(str, g["site"].values)) for g in grids.values()}) == 1
    labelled = [c == 0 or (not same_sites and name != columns[c - 1][0]) for c, (name, _) in enumerate(columns)]
    label_px = 6 * max(len(str(s)) for g in grids.values() for s in g["site"].values) + 14  # 10 px ticks: ~5.3 px a character
    gaps = [0] + [label_px if labelled[c] else 24 for c in range(1, len(columns))]
    colorbar_px = 90  # the right margin holds the shared colour bar and its title
    width = min(label_px + len(columns) * PANEL_PX + sum(gaps) + colorbar_px, PAGE_WIDTH)
    plot_px = width - label_px - colorbar_px
    panel_px = (plot_px - sum(gaps)) / len(columns)
    domains, left = [], 0.0
    for gap in gaps:
        left += gap
        domains.append((left / plot_px, min(1.0, (left + panel_px) / plot_px)))
        left += panel_px
    # Rows: each panel's x tick labels and axis title, then the next row's title, fit in ROW_GAP_PX.
    panel_h = 22 * len(first["site"]) + 10
    plot_h = len(labels) * panel_h + (len(labels) - 1) * ROW_GAP_PX
    fig = make_subplots(rows=len(labels), cols=len(columns),
                        subplot_titles=[wrap(t, int(panel_px), 11) for t in titles],
                        vertical_spacing=ROW_GAP_PX / plot_h if len(labels) > 1 else 0.0)
    for r, label in enumerate(labels, start=1):
        for c, (name, kind) in enumerate(columns, start=1):
            grid = grids[name]
            acc = grid["accuracy"].sel(label=label, probe=kind)
            val = grid["val_accuracy"].sel(label=label, probe=kind)
            chance = float(grid["chance"].sel(label=label))
            fig.add_trace(
                go.Heatmap(
                    z=acc.values, x=[str(t) for t in acc["timestep"].values], y=[str(s) for s in acc["site"].values],
                    zmin=0.0, zmax=1.0, colorscale="Viridis", showscale=(r == 1 and c == 1),
                    text=np.vectorize(lambda v: f"{v:.2f}")(acc.values), texttemplate="%{text}",
                    customdata=val.values,
                    hovertemplate=(f"{label}, {kind}<br>site %{{y}}<br>t = %{{x}}<br>test %{{z:.3f}}"
                                   f"<br>val %{{customdata:.3f}}<br>chance {chance:.3f}<extra>{name}</extra>"),
                ),
                row=r, col=c,
            )
            fig.update_xaxes(title_text="timestep", type="category", row=r, col=c)
            fig.update_yaxes(showticklabels=labelled[c - 1], tickfont=dict(size=10), row=r, col=c)
            k = (r - 1) * len(columns) + c  # plotly's subplot number: xaxis, xaxis2, ... row by row
            fig.layout[f"xaxis{k if k > 1 else ''}"].domain = domains[c - 1]
            fig.layout.annotations[k - 1].x = sum(domains[c - 1]) / 2  # its title, over the moved panel
    fig.update_annotations(font_size=11)
    fig.update_traces(colorbar=dict(thickness=14, x=1.0, xanchor="left", xpad=8))
    fig.update_layout(margin=dict(l=label_px, r=colorbar_px, b=50))
    return style(fig, title=title or "Probe accuracy (test split)", width=width, height=plot_h + 50,
                 colorbar_title="test accuracy",
                 how_to_read="Each cell: test accuracy of a probe reading the label from that site's features at that "
                             "timestep (hover: validation accuracy and chance); bright = the feature holds the label.")
