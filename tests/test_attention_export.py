"""Word-map selection (steps, heads, layers), export to PNG/GIF + metadata.json, and validate()."""

import json

import numpy as np
import pytest
import xarray as xr
from PIL import Image

import workbench as wb

PROMPT = "a red circle on the left"


@pytest.fixture(scope="module")
def run(mmdit):
    with wb.record(mmdit, ["transformer_blocks.*.attn.probs"]) as rec:
        images = mmdit.generate([PROMPT], steps=3, seed=0)
    return rec, images


def test_word_maps_select_steps_heads_and_layers(run):
    rec, _ = run
    every = wb.attention.word_maps(rec)
    assert every.attrs["sites"] == [f"transformer_blocks.{i}.attn.probs" for i in range(4)]
    assert every.attrs["steps"] == [0, 1, 2] and every.attrs["heads"] == [0, 1, 2]
    assert every.attrs["prompt"] == PROMPT and every.attrs["model"]
    one = wb.attention.word_maps(rec, steps=[2], heads=[1], layers=[3])
    assert one.attrs["sites"] == ["transformer_blocks.3.attn.probs"] and one.attrs["layers"] == 1
    # The selection is the average it says: head 1, step 2, block 3's image->text columns, per word.
    probs = rec["transformer_blocks.3.attn.probs"].isel(sample=0).sel(branch="cond", step=2).isel(head=1)
    image_to_text = probs.isel(query=(probs.query_kind == "image").values, key=(probs.key_kind == "text").values)
    red = [i for i, t in enumerate(image_to_text.key_token.values) if str(t).startswith("red")]
    expected = image_to_text.isel(key=red).sum("key").values.reshape(8, 8)
    np.testing.assert_allclose(one.sel(word="red").values, expected / expected.sum(), rtol=1e-5)
    assert not np.allclose(one.sel(word="red").values, every.sel(word="red").values)


@pytest.mark.parametrize("selection, message", [
    ({"heads": [7]}, "valid heads are 0..2"),
    ({"steps": [5]}, "valid steps are 0..2"),
    ({"layers": [4]}, "positions 0..3"),
    ({"layers": [0], "method": "daam"}, "heads= and layers= select for method='mean'"),
])
def test_word_maps_name_a_wrong_selection(run, selection, message):
    with pytest.raises(ValueError, match=message):
        wb.attention.word_maps(run[0], **selection)


def test_export_writes_maps_overlays_and_metadata(run, tmp_path):
    rec, images = run
    maps = wb.attention.word_maps(rec, steps=[1, 2])
    folder = wb.attention.export(maps, tmp_path / "maps", images[0], settings={"seed": 0, "steps": 3})
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["prompt"] == PROMPT and meta["steps"] == [1, 2] and len(meta["sites"]) == 4
    assert meta["settings"] == {"seed": 0, "steps": 3} and meta["versions"]["torch"] != "not installed"
    assert list(meta["files"]) == list(maps.word.values)
    red_map, red_overlay = meta["files"]["red"]
    picture = np.asarray(Image.open(folder / red_map))
    assert picture.shape == (256, 256, 3)
    # The map's brightest cell is drawn in the ramp's top colour (yellow), its weakest in the bottom one.
    cell = np.unravel_index(int(maps.sel(word="red").values.argmax()), (8, 8))
    assert tuple(picture[cell[0] * 32 + 16, cell[1] * 32 + 16]) == (252, 232, 36)
    overlay = np.asarray(Image.open(folder / red_overlay)).astype(int)
    assert overlay.shape == (256, 256, 3) and not np.array_equal(overlay, picture)


def test_export_writes_one_gif_frame_per_video_frame(tmp_path):
    rng = np.random.default_rng(0)
    maps = xr.DataArray(rng.random((2, 3, 4, 4)), dims=("word", "frame", "y", "x"), coords={"word": ["a", "cat"]},
                        attrs={"sites": ["blocks.0.attn1.probs"], "prompt": "a cat"})
    video = rng.random((3, 16, 16, 3))
    folder = wb.attention.export(maps, tmp_path, video)
    gif = Image.open(folder / "01_cat_overlay.gif")
    assert gif.n_frames == 3 and Image.open(folder / "01_cat.gif").n_frames == 3
    with pytest.raises(ValueError, match="3 frames"):
        wb.attention.export(maps, tmp_path / "bad", video[:2])


def test_validate_passes_real_rows_and_points_at_a_broken_one(run):
    rec, _ = run
    report = wb.attention.validate(rec)
    assert report["ok"].all() and list(report.index) == [f"transformer_blocks.{i}.attn.probs" for i in range(4)]
    broken = {name: rec[name].copy() for name in rec}
    broken["transformer_blocks.2.attn.probs"][0, 1, 2, 1, 40, 5] += 0.25  # sample 0, cond, step 2, head 1, query 40
    report = wb.attention.validate(broken)
    row = report.loc["transformer_blocks.2.attn.probs"]
    assert not row["ok"] and row["max_error"] == pytest.approx(0.25, abs=1e-4)
    assert row["worst_row"] == "sample 0, branch cond, step 2, head 1, query 40"
    assert report.drop("transformer_blocks.2.attn.probs")["ok"].all()
    with pytest.raises(ValueError, match="no whole attention rows"):
        wb.attention.validate({"latent.x0": rec["transformer_blocks.0.attn.probs"].sum("key")})
