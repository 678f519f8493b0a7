"""Probing: the split, the grid's shape, probes that find an easy label and not noise,
determinism, errors; the heatmaps; the CLI; and the probing notebook, executed headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from workbench.analysis.probe import compare, heatmap, peaks, probe, split_indices

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_features(n: int = 240, seed: int = 0) -> xr.Dataset:
    """A feature store in miniature: ``clear`` carries the label ``colour`` linearly (at timestep
    100; at 500 it is noise), ``noise`` never does; ``shape`` is a second label, -1 on a quarter
    of the images (does not apply), and two images are invalid."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 4, n)
    shape = np.where(rng.random(n) < 0.25, -1, rng.integers(0, 3, n))
    directions = rng.normal(size=(4, 16))
    informative = directions[colour] * 2.0 + rng.normal(size=(n, 16))
    clear = np.stack([informative, rng.normal(size=(n, 16))], axis=1)  # (image, timestep, channel)
    noise = rng.normal(size=(n, 2, 8, 2, 2))
    valid = np.ones(n, bool)
    valid[[3, 7]] = False
    return xr.Dataset(
        {
            "clear": (("image", "timestep", "channel_16"), clear.astype("float32")),
            "noise": (("image", "timestep", "channel_8", "py", "px"), noise.astype("float32")),
            "colour": ("image", colour, {"classes": ["red", "green", "blue", "white"]}),
            "shape": ("image", shape, {"classes": ["circle", "square", "cross"]}),
            "valid": ("image", valid),
        },
        coords={"image": np.arange(n), "timestep": [100, 500]},
        attrs={"sites": ["clear", "noise"], "model": "synthetic"},
    )


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, val, test = split_indices(labels, (0.6, 0.2, 0.2), seed=1)
    assert len(set(train) | set(val) | set(test)) == 100 and len(train) + len(val) + len(test) == 100
    for cls, count in [(0, 50), (1, 30), (2, 20)]:
        assert (labels[test] == cls).sum() == round(0.2 * count)
    again = split_indices(labels, (0.6, 0.2, 0.2), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(split_indices(labels, seed=2)[2], test)
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(labels, (0.5, 0.2, 0.2))


def test_grid_shape_and_probes_find_the_easy_label_not_noise():
    features = synthetic_features()
    grid = probe(features, ["colour", "shape"], seed=0)
    assert grid["accuracy"].dims == ("label", "site", "timestep", "probe")
    assert grid["accuracy"].shape == (2, 2, 2, 2)
    assert list(grid["site"].values) == ["clear", "noise"] and list(grid["probe"].values) == ["linear", "mlp"]
    # Invalid images and labels that do not apply are left out; the split covers the rest.
    usable_shape = int(((features["shape"] >= 0) & features["valid"]).sum())
    assert int(grid["n_train"].sel(label="shape") + grid["n_val"].sel(label="shape")
               + grid["n_test"].sel(label="shape")) == usable_shape
    colour = grid["accuracy"].sel(label="colour")
    chance = float(grid["chance"].sel(label="colour"))
    assert 0.2 < chance < 0.4
    assert (colour.sel(site="clear", timestep=100) > 0.85).all()  # both probe kinds read it
    assert (colour.sel(site="noise") < chance + 0.2).all()
    assert (colour.sel(site="clear", timestep=500) < chance + 0.2).all()
    top = peaks(grid)
    assert set(top.columns) >= {"label", "probe", "site", "timestep", "accuracy", "chance"}
    row = top[(top.label == "colour") & (top.probe == "linear")].iloc[0]
    assert (row.site, row.timestep) == ("clear", 100)
    # Fixed seeds: the same grid again, and a cell does not depend on what else is in the grid.
    again = probe(features, ["colour", "shape"], seed=0)
    np.testing.assert_array_equal(again["accuracy"].values, grid["accuracy"].values)
    alone = probe(features, "colour", sites=["clear"], timesteps=[500], probes=["mlp"], seed=0)
    assert float(alone["accuracy"].squeeze()) == float(grid["accuracy"].sel(label="colour", site="clear",
                                                                            timestep=500, probe="mlp"))


def test_peaks_pick_on_validation_and_report_test():
    """A cell that is best on test but not on validation must not be the reported peak."""
    acc = np.array([[[0.9], [0.6]]])  # (label, site, timestep): test accuracy
    val = np.array([[[0.5], [0.8]]])
    dims = ("label", "site", "timestep", "probe")
    grid = xr.Dataset({"accuracy": (dims, acc[..., None]), "val_accuracy": (dims, val[..., None]),
                       "chance": ("label", [0.2])},
                      coords={"label": ["shape"], "site": ["a", "b"], "timestep": [20], "probe": ["linear"]})
    row = peaks(grid).iloc[0]
    assert row.site == "b" and row.accuracy == 0.6 and row.val_accuracy == 0.8 and row.best_test == 0.9


def test_probe_errors_name_what_is_missing():
    features = synthetic_features(60)
    with pytest.raises(KeyError, match="label 'size'.*labels are: colour, shape"):
        probe(features, "size")
    with pytest.raises(KeyError, match="'up_blocks.9.out'"):
        probe(features, "colour", sites=["up_blocks.9.out"])
    with pytest.raises(ValueError, match="unknown probe"):
        probe(features, "colour", probes=["svm"])


def test_heatmaps_one_panel_per_label_and_probe_and_side_by_side():
    grid = probe(synthetic_features(120), ["colour", "shape"], probes=["linear"])
    fig = heatmap(grid)
    assert len(fig.data) == 2 and list(fig.data[0].y) == ["clear", "noise"]
    assert list(fig.data[0].x) == ["100", "500"]
    both = compare({"model A": grid, "model B": grid})
    assert len(both.data) == 4 and "model B linear colour" in [a.text for a in both.layout.annotations]
    # Same sites: row labels once, on the left, so the second panel's cannot print over the first.
    assert both.layout.yaxis.showticklabels and both.layout.yaxis2.showticklabels is False
    other = grid.assign_coords(site=["a much longer site name.out", "another long site name.out"])
    mixed = compare({"model A": grid, "model B": other})
    assert mixed.layout.yaxis2.showticklabels
    # domains are shares of the plot area (the figure less its margins), not of the figure
    plot_px = mixed.layout.width - mixed.layout.margin.l - mixed.layout.margin.r
    gap_px = (mixed.layout.xaxis2.domain[0] - mixed.layout.xaxis.domain[1]) * plot_px
    assert mixed.layout.margin.l >= 5.5 * len("a much longer site name.out"), "the margin must hold the row labels"
    assert gap_px >= mixed.layout.margin.l - 1, "the gap must hold the second panel's row labels as the margin does the first's"
    assert mixed.layout.width <= 900 and mixed.data[0].colorbar.title.text == "test accuracy"


def test_probe_cli_on_an_extracted_store(tmp_path, capsys):
    from workbench.cli.main import main
    from workbench.models.reference import build_components

    build_components("toy-unet", seed=0).save_pretrained(tmp_path / "toy-unet", dtype=torch.float32)
    assert main(["extract", "--model", str(tmp_path / "toy-unet"), "--dataset", "shapes", "--limit", "60",
                 "--max-objects", "1", "--sites", "up_blocks.2.out", "--timesteps", "20", "--out",
                 str(tmp_path / "f.zarr"), "--batch-size", "30", "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["probe", str(tmp_path / "f.zarr"), "--label", "position", "--probes", "linear",
                 "--html", str(tmp_path / "grid.html"), "--csv", str(tmp_path / "grid.csv")]) == 0
    out = capsys.readouterr().out
    assert "position (linear probe" in out and "peaks:" in out
    assert (tmp_path / "grid.html").stat().st_size > 1000
    import pandas as pd

    table = pd.read_csv(tmp_path / "grid.csv")
    assert list(table.columns) == ["label", "site", "timestep", "probe", "accuracy"] and len(table) == 1


# The probing notebook is executed with every other notebook by tests/test_notebooks.py.


# The report's doc tables equal what it writes from the saved grids: tests/test_study_reports.py.


def test_the_site_shown_per_timestep_is_chosen_on_validation():
    from workbench.studies.probing.protocol import chosen_per_timestep

    dims = ("label", "site", "timestep", "probe")
    # timestep 0: site a is best on validation, b on test; timestep 1: the other way round
    val = np.array([[0.9, 0.1], [0.5, 0.8]]).reshape(1, 2, 2, 1)
    test = np.array([[0.6, 0.7], [0.95, 0.4]]).reshape(1, 2, 2, 1)
    grid = xr.Dataset({"accuracy": (dims, test), "val_accuracy": (dims, val)},
                      coords={"label": ["shape"], "site": ["a", "b"], "timestep": [20, 50], "probe": ["linear"]})
    chosen = chosen_per_timestep(grid, "shape")
    assert chosen.values.tolist() == [0.6, 0.4] and chosen.site.values.tolist() == ["a", "b"]


def test_the_pixel_baseline_is_a_feature_store_of_the_images_themselves():
    from workbench.features.config import DatasetSpec
    from workbench.features.image_sources import open_source
    from workbench.studies.probing.protocol import LABELS, pixel_features

    source = open_source(DatasetSpec(kind="shapes", split="test", limit=8, seed=0, max_objects=1))
    features = pixel_features(source)
    assert features["pixels"].dims == ("image", "timestep", "channel", "y", "x")
    assert features["pixels"].shape == (8, 1, 3, 32, 32)
    assert features["pixels 2x2"].shape == (8, 1, 3, 2, 2)
    images, _ = source.load(range(8), 32)
    np.testing.assert_allclose(features["pixels"].values[:, 0].transpose(0, 2, 3, 1), images / 255, atol=1e-7)
    # each 2 x 2 cell is the mean of its 16 x 16 quadrant
    np.testing.assert_allclose(features["pixels 2x2"].values[:, 0, :, 0, 1],
                               features["pixels"].values[:, 0, :, :16, 16:].mean((-2, -1)), atol=1e-6)
    for label in LABELS:
        np.testing.assert_array_equal(features[label].values, source.labels[label].codes)
