"""The probing study's protocol. Per label, the usable images are split once into train / validation /
test (``SPLIT``, stratified by class, fixed by ``SEED``: ``analysis.probe.split_indices``, which
``probe`` calls); each probe's weight decay, each label's peak (site and timestep:
``analysis.probe.peaks``) and the site shown per timestep (:func:`chosen_per_timestep`) are chosen
on validation and reported on test. The baseline every accuracy is read against is chance: the test
share of the most frequent class (``probe`` computes it), and, stronger, the same probes on the
input pixels themselves (:func:`pixel_features`: what can be read off the clean image with no model
at all, pooled to 2 x 2 as the model features are, and unpooled); the optimistic figure beside the
peaks, ``best_test``, is what picking on test would have claimed.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ...analysis.probe import probe
from ...features.config import DatasetSpec
from ...features.image_sources import ImageSource
from ...features.pooling import pool_tensor

#: the shapes-world labels probed
LABELS = ("shape", "colour", "glyph", "position")
#: train / validation / test fractions, and the seed of the split and of the probes' initialisation
SPLIT = (0.6, 0.2, 0.2)
SEED = 0
#: the images the published grids were probed on (``workbench extract --dataset shapes --split test
#: --limit 1000 --max-objects 1``, docs/features.md)
IMAGES = DatasetSpec(kind="shapes", split="test", limit=1000, seed=0, max_objects=1)
#: the pixel baseline's "sites": pooled like the model features (adaptive, 2 x 2), and every pixel
PIXEL_SITES = {"pixels 2x2": 2, "pixels": None}


def probe_grid(features: xr.Dataset) -> xr.Dataset:
    """Every label x site x timestep x probe kind of a feature store, under this protocol."""
    return probe(features, list(LABELS), split=SPLIT, seed=SEED)


def chosen_per_timestep(grid: xr.Dataset, label: str, kind: str = "linear") -> xr.DataArray:
    """Test accuracy, per timestep, of the site with the best validation accuracy at that timestep
    (the first site on ties)."""
    acc = grid.accuracy.sel(label=label, probe=kind)
    val = grid.val_accuracy.sel(label=label, probe=kind)
    return acc.isel(site=val.fillna(-1).argmax("site"))


def pixel_features(source: ImageSource, size: int = 32) -> xr.Dataset:
    """The baseline's features: the clean images of ``source`` (pixels in [0, 1]) laid out as a
    feature store (``image``, ``timestep`` = [0], features...), one variable per ``PIXEL_SITES``,
    with the source's labels, for :func:`probe_grid`."""
    images, failures = source.load(range(len(source)), size)
    if failures:
        raise ValueError(f"{len(failures)} images of {source.description} could not be read, e.g. {failures[0]}")
    pixels = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)  # (image, channel, y, x)
    data = {}
    for site, pooled in PIXEL_SITES.items():
        values, dims = (pool_tensor(pixels, ("channel", "y", "x"), "adaptive", pooled) if pooled
                        else (pixels, ("channel", "y", "x")))
        data[site] = (("image", "timestep", *dims), values.numpy()[:, None])
    for name in LABELS:
        label = source.labels[name]
        data[name] = ("image", label.codes.astype(np.int64), {"classes": list(label.classes)})
    data["valid"] = ("image", np.ones(len(source), bool))
    return xr.Dataset(data, coords={"image": np.arange(len(source)), "timestep": [0]},
                      attrs={"sites": list(PIXEL_SITES), "model": "input pixels (no model)",
                             "images": source.description, "images_sha1": source.digest()})
