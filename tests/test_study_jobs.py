"""The studies' resumable jobs (docs/design.md, "Floors"): items written to a zarr store under the
rules of every store-writing job; interrupted after k items, a rerun computes only the rest and ends
with what an uninterrupted run gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from workbench.store.items import ItemStore
from workbench.store.jobs import JobInterrupted


class Interrupting:
    """``compute`` that counts its calls and raises Ctrl-C (KeyboardInterrupt) at call ``stop_at``."""

    def __init__(self, compute, stop_at: int | None = None):
        self.compute, self.stop_at, self.calls = compute, stop_at, []

    def __call__(self, *args, **kwargs):
        if self.stop_at is not None and len(self.calls) + 1 == self.stop_at:
            raise KeyboardInterrupt
        self.calls.append(args)
        return self.compute(*args, **kwargs)


def _item(key: str) -> xr.Dataset:
    rng = np.random.default_rng(sum(map(ord, key)))
    return xr.Dataset({"score": (("object", "layer"), rng.random((3, 2)).astype(np.float32)),
                       "word": ("object", np.array(["red", "circle", key], dtype=object))},
                      coords={"layer": ["a.0", "a.1"]}, attrs={"model": "m", "n": 3})


def test_items_resume_after_an_interruption_and_equal_an_uninterrupted_run(tmp_path):
    keys = ["k0", "k1", "k2", "k3"]
    whole = ItemStore(tmp_path / "whole.zarr", identity={"n": 4}, resume="again").run(keys, _item, progress=False)
    first = Interrupting(_item, stop_at=3)
    with pytest.raises(JobInterrupted, match="(?s)2 of 4 chunks are done.*Resume with:\n  again"):
        ItemStore(tmp_path / "cut.zarr", identity={"n": 4}, resume="again").run(keys, first, progress=False)
    assert [c[0] for c in first.calls] == ["k0", "k1"]
    second = Interrupting(_item)
    store = ItemStore(tmp_path / "cut.zarr", identity={"n": 4}, resume="again")
    resumed = store.run(keys, second, progress=False)
    assert [c[0] for c in second.calls] == ["k2", "k3"] and (store.computed, store.loaded) == (2, 2)
    for key in keys:
        xr.testing.assert_identical(resumed[key], whole[key])
        xr.testing.assert_identical(resumed[key], _item(key))  # read back as it was made (order, dtypes, attrs)
        assert list(resumed[key].data_vars) == ["score", "word"] and resumed[key].word.dtype == object
    assert xr.open_zarr(tmp_path / "cut.zarr" / "k2").score.shape == (3, 2)  # plain zarr, consolidated


def test_items_refuse_another_identity_and_recompute_damage(tmp_path):
    store = ItemStore(tmp_path / "s.zarr", identity={"steps": 2, "models": ("a",)}, resume="again")
    store.run(["x", "y"], _item, progress=False)
    with pytest.raises(ValueError, match="steps: 2 in the store, 3 now"):
        ItemStore(tmp_path / "s.zarr", identity={"steps": 3, "models": ["a"]}, resume="again")
    chunk = next((tmp_path / "s.zarr" / "y" / "score").glob("0.0"))
    chunk.write_bytes(chunk.read_bytes() + b"damage")
    again = Interrupting(_item)
    ItemStore(tmp_path / "s.zarr", identity={"steps": 2, "models": ["a"]}, resume="again").run(
        ["x", "y"], again, progress=False)
    assert [c[0] for c in again.calls] == ["y"]  # only the damaged item
    with pytest.raises(ValueError, match="must be a non-empty name without '/'"):
        store.run(["a/b"], _item, progress=False)


# -- the skip study ------------------------------------------------------------------------------
def test_freeu_grid_resumes_after_an_interruption(tmp_path, monkeypatch, unet):
    from workbench.studies.skips import job

    grid = dict(b_values=[1.0, 1.2], s_values=[1.0], n_val=1, n_test=1, steps=1, progress=False, model=unet)
    whole = job.freeu_grid(**grid, path=tmp_path / "whole.json", work=tmp_path / "whole.zarr")
    counted = Interrupting(job.judged, stop_at=2)
    monkeypatch.setattr(job, "judged", counted)
    with pytest.raises(JobInterrupted, match="1 of 2 chunks are done"):
        job.freeu_grid(**grid, path=tmp_path / "cut.json", work=tmp_path / "cut.zarr")
    assert len(counted.calls) == 1 and not (tmp_path / "cut.json").exists()
    counted.stop_at, counted.calls = None, []
    resumed = job.freeu_grid(**grid, path=tmp_path / "cut.json", work=tmp_path / "cut.zarr")
    assert len(counted.calls) == 3  # the other validation cell, then the plain model and the chosen cell on test
    assert resumed == whole == json.loads((tmp_path / "cut.json").read_text())
    assert resumed["best_on_validation"] == "b=1.2,s=1.0"  # the plain model is the baseline, never chosen


def test_spectra_items_are_the_recorded_datasets(tmp_path):
    from workbench.studies.skips import job

    saved = job.recordings("spectra", ["tiny-sd"], 1, 1, tmp_path / "s.json", tmp_path / "s.zarr", progress=False)
    direct = job.spectra("tiny-sd", job.recorded_prompts(1), 1)
    xr.testing.assert_identical(xr.Dataset.from_dict(saved["tiny-sd"]), xr.Dataset.from_dict(direct.to_dict()))


# -- the attention studies ---------------------------------------------------------------------
@pytest.mark.slow  # real attention maps, scored three times over (~5 s on an idle 2-core machine)
def test_segmentation_job_resumes_after_an_interruption(tmp_path, monkeypatch, unet):
    from workbench.studies.attention import job

    monkeypatch.setenv("WORKBENCH_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    study = dict(name="toy-unet", images=1, timesteps=(500,), batch=1, progress=False, model=unet)
    whole = job.run_segmentation(**study, work=tmp_path / "whole")
    counted = Interrupting(job.batch_scores, stop_at=2)
    monkeypatch.setattr(job, "batch_scores", counted)
    with pytest.raises(JobInterrupted, match="1 of 2 chunks are done"):  # at the first caption kind's test split
        job.run_segmentation(**study, work=tmp_path / "cut")
    counted.stop_at, counted.calls = None, []
    resumed = job.run_segmentation(**study, work=tmp_path / "cut")
    assert len(counted.calls) == 3  # the first caption kind's test split, then both splits of the second
    for result in (whole, resumed):
        for kind in result["results"].values():
            kind.pop("seconds")
    assert json.dumps(resumed) == json.dumps(whole)
    assert (tmp_path / "results" / "segmentation_toy-unet_no-positions.html").exists()


def test_editing_job_resumes_and_equals_the_run_in_memory(tmp_path, monkeypatch, mmdit):
    from workbench.models.judge import load_judge
    from workbench.studies.attention import job
    from workbench.studies.attention.editing import compare_methods

    judge = load_judge()
    study = dict(pairs=2, steps=2, reuse_steps=1, methods=("prompt-swap", "image q,k"), batch=1, progress=False,
                 model=mmdit, judge=judge)
    counted = Interrupting(job.run_edits, stop_at=3)
    monkeypatch.setattr(job, "run_edits", counted)
    with pytest.raises(JobInterrupted, match="2 of 4 chunks are done"):  # at the second method's first batch
        job.run_editing(**study, work=tmp_path)
    counted.stop_at, counted.calls = None, []
    resumed = job.run_editing(**study, work=tmp_path)
    assert len(counted.calls) == 2
    in_memory = compare_methods(mmdit, judge, n_pairs=2, methods=study["methods"], steps=2, reuse_steps=1, batch=1)
    xr.testing.assert_equal(resumed, in_memory)
    assert resumed.attrs["steps"] == 2 and resumed.attrs["reuse_steps"] == 1


# -- the SVD study ------------------------------------------------------------------------------
@pytest.mark.slow  # the properties stage end to end, three times (~7 s a run on the loaded shared machine)
def test_svd_properties_resume_after_an_interruption(tmp_path, monkeypatch, mmdit):
    from workbench.studies.svd import job

    def argv(work):
        return ["toy-mmdit", "--steps", "2", "--prop-pairs", "1", "--val-pairs", "1", "--test-pairs", "1",
                "--real-pairs", "1", "--swap-pairs", "1", "--swap-steps", "1", "--stages", "properties",
                "--work", str(tmp_path / work), "--out", str(tmp_path / work)]

    job.main(argv("whole"))
    whole = json.loads((tmp_path / "whole" / "svd_toy-mmdit.json").read_text())
    counted = Interrupting(job.runs.trajectory, stop_at=3)  # two trajectories an item: stops in the second item
    monkeypatch.setattr(job.runs, "trajectory", counted)
    with pytest.raises(JobInterrupted, match="1 of 2 chunks are done"):
        job.main(argv("cut"))
    counted.stop_at = None
    job.main(argv("cut"))
    resumed = json.loads((tmp_path / "cut" / "svd_toy-mmdit.json").read_text())
    assert resumed["runs"][-1]["chunks_loaded"] == 1
    assert resumed["runs"][-1]["chunks_computed"] == whole["runs"][-1]["chunks_computed"] - 1
    for key in ("render_rate", "P1", "P2", "P3"):
        assert resumed[key] == whole[key], key
    with pytest.raises(ValueError, match="steps: 2 in the store, 3 now"):
        job.main(argv("cut")[:2] + ["3"] + argv("cut")[3:])


# -- the quality study --------------------------------------------------------------------------
def test_quality_job_resumes_after_an_interruption_and_refuses_other_settings(tmp_path, monkeypatch, unet):
    from workbench.models.judge import load_judge
    from workbench.studies.quality import job

    study = dict(models=["toy-unet"], n=2, steps=2, batch=2, seed=0, guidance=None, n_held_out=0, progress=False,
                 loaded={"toy-unet": unet}, judge=load_judge())
    whole = job.run(**study, work=tmp_path / "whole")  # items: single, glyph, two (one batch of 2 prompts each)
    counted = Interrupting(job.generate_batch, stop_at=2)
    monkeypatch.setattr(job, "generate_batch", counted)
    with pytest.raises(JobInterrupted, match="(?s)1 of 3 chunks are done.*Resume with"):
        job.run(**study, work=tmp_path / "cut")
    counted.stop_at, counted.calls = None, []
    resumed = job.run(**study, work=tmp_path / "cut")
    assert [call[1] for call in counted.calls] == [
        [caption for caption, _ in job.prompt_families(2, 0, 0)[family]] for family in ("glyph", "two")]
    for result in (whole, resumed):
        for family in ("single", "glyph", "two"):
            assert result["toy-unet"][family].pop("seconds") > 0
    assert resumed == whole
    stored = {p.name for p in (tmp_path / "cut" / "quality.zarr").iterdir() if not p.name.startswith(".")}
    for key in stored:
        xr.testing.assert_identical(xr.open_zarr(tmp_path / "cut" / "quality.zarr" / key).image.load(),
                                    xr.open_zarr(tmp_path / "whole" / "quality.zarr" / key).image.load())
    assert len(stored) == 3
    with pytest.raises(ValueError, match="steps: 2 in the store, 3 now"):
        job.run(**{**study, "steps": 3}, work=tmp_path / "cut")
    with pytest.raises(ValueError, match="seed: 0 in the store, 1 now"):
        job.run(**{**study, "seed": 1}, work=tmp_path / "cut")


def test_quality_items_of_other_weights_are_their_own(tmp_path):
    """An item's key carries a digest of the weights folder: a file changed in place gives new keys."""
    import shutil

    from workbench.models.reference import reference_dir
    from workbench.studies.quality.job import folder_digest

    folder = tmp_path / "toy-unet"
    shutil.copytree(reference_dir("toy-unet"), folder)
    assert folder_digest(folder) == folder_digest(reference_dir("toy-unet"))  # the contents, not the path
    record = folder / "reference.json"
    record.write_text(record.read_text() + " ")
    assert folder_digest(folder) != folder_digest(reference_dir("toy-unet"))
