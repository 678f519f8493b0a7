"""The localization study on any model (issue 25, item 3): text pairs from a prompt file, scored
by a reader other than the judge, on tiny SD3 / SDXL / FLUX pipelines and a checkpoint folder.

Random weights draw no text, so scores mean nothing here: what is checked is the mechanics (pairs,
variants, the scorer's verdicts landing in the store), resuming, and the settings guard."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.studies.localization.job import open_sweep, run_job

PROMPTS = 'a sign that says "CAT"\na sign that says "DOG"\n# a comment\na poster reading "SUN"\na poster reading "MAP"\n'
SMALL = dict(pairs=2, steps=1, starts=[0], n_cells=2, per_cell=1, chunk=1, batch=16, max_range=1, progress=False,
             shares=False)


class AlwaysDog:
    """A user's reader that says "DOG" on every image, counting the images it saw."""

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return ["dog"] * len(images)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text(PROMPTS)
    return path


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    """A user's local checkpoint: a tiny SD3 pipeline saved with save_pretrained."""
    from workbench.models.tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("checkpoint") / "my-sd3"
    tiny_pipeline("sd3").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["sd3-folder", "sdxl", "flux"])
def test_text_study_runs_and_resumes_on_any_model(family, prompt_file, tmp_path, request):
    model = str(request.getfixturevalue("sd3_folder")) if family == "sd3-folder" else f"tiny-{family}"
    out, reader = tmp_path / "study.zarr", AlwaysDog()
    run_job(model, out, prompts=prompt_file, scorer=reader, screen=False, **SMALL)
    grid, focus = open_sweep(out, "grid"), open_sweep(out, "focus")
    # 2 cells, one per template, each pairing its two texts (one order, drawn); cells alternate the split
    pairs = [set(p) for p in zip(grid["target_text"].values, grid["source_text"].values)]
    assert pairs == [{"CAT", "DOG"}, {"SUN", "MAP"}] and list(grid["template"].values) == [
        'a sign that says "{}"', 'a poster reading "{}"']
    assert set(grid["split"].values) == {"validation", "test"} and grid.attrs["scorer"] == "AlwaysDog"
    assert grid.sizes["variant"] == grid.sizes["layer"] + 1  # each text layer, then all of them, from step 0
    assert "swap_success" not in grid  # a pipeline cannot swap prompts mid-schedule: no such baseline
    # the reader's verdicts, stored as it gave them: "dog" is the source text DOG, nothing else
    assert (grid["read"] == "dog").all() and (grid["target_read"] == "dog").all()
    assert (grid["success"] == (grid["source_text"] == "DOG")).all()
    assert np.isnan(grid["layer_share"]).all()  # shares=False
    assert grid["image"].values.any() and focus.sizes["variant"] >= 1 and "chosen" in focus.attrs
    seen = reader.seen
    assert seen == 2 * (grid.sizes["variant"] + 2) + 2 * (focus.sizes["variant"] + 2)  # + target and source

    # resume: a finished job reruns nothing; a lost chunk is recomputed alone, to the same values
    run_job(model, out, prompts=prompt_file, scorer=reader, screen=False, **SMALL)
    assert reader.seen == seen
    before = grid["image"].values.copy()
    next(iter(sorted((out.parent / "study.zarr.job").glob("grid-00001-*.done")))).unlink()
    run_job(model, out, prompts=prompt_file, scorer=reader, screen=False, **SMALL)
    assert reader.seen == seen + grid.sizes["variant"] + 2
    assert np.array_equal(open_sweep(out, "grid")["image"].values, before)
    with pytest.raises(ValueError, match="started with other settings"):
        run_job(model, out, prompts=prompt_file, scorer=reader, screen=False, **(SMALL | {"steps": 2}))


def test_text_study_refuses_what_it_cannot_score(prompt_file, tmp_path):
    with pytest.raises(ValueError, match="text prompts need a scorer that reads text"):
        run_job("tiny-sdxl", tmp_path / "a.zarr", prompts=prompt_file, scorer="judge", **SMALL)
    with pytest.raises(ValueError, match="scorer 'AlwaysDog' needs text pairs: pass --prompts"):
        run_job("tiny-sdxl", tmp_path / "b.zarr", scorer=AlwaysDog(), **SMALL)
    bad = tmp_path / "bad.txt"
    bad.write_text('a sign that says "CAT"\na sign without quotes\n')
    with pytest.raises(ValueError, match=r"prompt line 2 \('a sign without quotes'\) must hold exactly one"):
        run_job("tiny-sdxl", tmp_path / "c.zarr", prompts=bad, scorer=AlwaysDog(), **SMALL)
    lonely = tmp_path / "lonely.txt"
    lonely.write_text('a sign that says "CAT"\na poster reading "SUN"\n')
    with pytest.raises(ValueError, match="no two prompts share a template"):
        run_job("tiny-sdxl", tmp_path / "d.zarr", prompts=lonely, scorer=AlwaysDog(), **SMALL)


@pytest.mark.slow
def test_cli_localize_tiny_sd3_with_ocr(prompt_file, tmp_path, capsys):
    """The command line as a user types it, with the OCR scorer, screening included."""
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR scorer's extra: pip install 'workbench[ocr]'")
    from workbench.cli.main import main

    out = tmp_path / "sd3.zarr"
    argv = ["localize", "--model", "tiny-sd3", "--prompts", str(prompt_file), "--scorer", "ocr", "--out", str(out),
            "--pairs", "2", "--steps", "1", "--starts", "0", "--cells", "2", "--per-cell", "1", "--chunk", "1",
            "--max-range", "1", "--no-shares"]
    assert main(argv) == 2  # random weights draw no text the reader can read back: nothing qualifies
    assert "no pair qualified: the ocr scorer read too few of the model's texts" in capsys.readouterr().err
    assert main(argv[:-1] + ["--no-screen", "--no-shares", "--out", str(tmp_path / "all.zarr")]) == 0
    grid = open_sweep(tmp_path / "all.zarr", "grid")
    assert grid.sizes["pair"] == 2 and grid.attrs["scorer"] == "ocr" and grid.attrs["model"] == "tiny-sd3"
    assert grid["success"].dtype == bool and grid["read"].dtype.kind == "U"
