"""The probing study's protocol. Per label, the usable images are split once into train / validation /
test (``SPLIT``, stratified by class, fixed by ``SEED``: ``analysis.probe.split_indices``, which
``probe`` calls); each probe's weight decay, each label's peak (site and timestep:
``analysis.probe.peaks``) and the site shown per timestep (:func:`chosen_per_timestep`) are chosen
on validation and reported on test. The baseline every accuracy is read against is chance: the test
share of the most frequent class (``probe`` computes it); the optimistic figure beside it,
``best_test``, is what picking on test would have claimed. (A probe on the input pixels, a stronger
baseline, is not measured.)
"""

from __future__ import annotations

import xarray as xr

from ...analysis.probe import probe

#: the shapes-world labels probed
LABELS = ("shape", "colour", "glyph", "position")
#: train / validation / test fractions, and the seed of the split and of the probes' initialisation
SPLIT = (0.6, 0.2, 0.2)
SEED = 0


def probe_grid(features: xr.Dataset) -> xr.Dataset:
    """Every label x site x timestep x probe kind of a feature store, under this protocol."""
    return probe(features, list(LABELS), split=SPLIT, seed=SEED)


def chosen_per_timestep(grid: xr.Dataset, label: str, kind: str = "linear") -> xr.DataArray:
    """Test accuracy, per timestep, of the site with the best validation accuracy at that timestep
    (the first site on ties)."""
    acc = grid.accuracy.sel(label=label, probe=kind)
    val = grid.val_accuracy.sel(label=label, probe=kind)
    return acc.isel(site=val.fillna(-1).argmax("site"))
