"""Studies on the reference models: segmentation scored against baselines, editing against the rendered target."""

import numpy as np
import pytest

import workbench as wb
import xarray as xr

from workbench.analysis.segmentation import score_mask
from workbench.studies.attention.editing import METHODS, foreground, run_edits, score_edits
from workbench.studies.attention.protocol import baseline_scores, edit_pairs, scenes_of, select_on_validation, strip_positions
from workbench.studies.attention.segmentation import object_tokens, segmentation_scores
from workbench.data import generate


@pytest.fixture(scope="module")
def scenes():
    return generate(6, split="test", seed=3)


def test_object_tokens_point_at_the_name_words(mmdit, scenes):
    tokens = object_tokens(mmdit, [str(c) for c in scenes.caption.values], scenes.span.sel(role="name").values)
    strings = mmdit.text_tokens([str(c) for c in scenes.caption.values])
    for i in range(scenes.sizes["sample"]):
        for obj in range(int(scenes.n_objects.values[i])):
            kind = int(scenes.kind.values[i, obj])
            vocabulary = scenes.kind.attrs["classes"]
            name_var = "shape" if vocabulary[kind] == "shape" else "glyph"
            name = scenes[name_var].attrs["classes"][int(scenes[name_var].values[i, obj])]
            if not tokens[i][obj]:  # a three-object caption longer than the encoder's 24 tokens
                assert len(strings[i]) == mmdit.max_tokens and f"{name}</w>" not in strings[i]
                continue
            words = "".join(strings[i][t] for t in tokens[i][obj]).replace("</w>", "").replace('"', "")
            assert words.lower() == name.lower()


@pytest.mark.parametrize("name", ["toy-mmdit", "toy-unet"])
def test_segmentation_scores_a_grid_of_layers_timesteps_and_thresholds(name, scenes):
    model = wb.load(name)
    scores = segmentation_scores(model, scenes, timesteps=(200, 600), batch=3, thresholds=("otsu", "0.5"))
    expected_variants = ["image->text", "text->image", "output"] if name == "toy-mmdit" else ["image->text"]
    assert list(scores.variant.values) == expected_variants
    assert scores.iou.dims == ("object", "variant", "layer", "timestep", "threshold")
    named = sum(bool(t) for per_image in object_tokens(model, [str(c) for c in scenes.caption.values],
                                                         scenes.span.sel(role="name").values) for t in per_image)
    assert scores.sizes["object"] == named >= int(scenes.n_objects.sum()) - 1
    assert not bool(scores.iou.sel(variant="image->text").isnull().any())
    assert not bool(scores.aggregate_iou.isnull().any())
    # The prior is scored on exactly these objects, and knowing the position beats not knowing it.
    known, unknown = baseline_scores(scenes, scores), baseline_scores(scenes, scores, position_known=False)
    assert known.sizes["object"] == scores.sizes["object"]
    assert float(known.prior_iou.mean("object").max()) > float(unknown.prior_iou.mean("object").max())
    assert float(known.prior_iou.mean("object").max()) > float(known.whole_iou.mean())


def test_a_perfect_map_scores_one_and_thresholds_differ():
    truth = np.zeros((32, 32), bool)
    truth[10:20, 4:12] = True
    for threshold in ("otsu", "0.5"):
        assert score_mask(truth.astype(float), truth, threshold) == (1.0, 1.0)
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    assert score_mask(ramp, truth, "0.2")[0] != score_mask(ramp, truth, "0.7")[0]
    assert score_mask(np.zeros((32, 32)), truth, "0.5") == (0.0, float(1 - truth.mean()))


def test_position_words_are_stripped_and_name_spans_follow(scenes):
    stripped = strip_positions(scenes)
    for i in range(scenes.sizes["sample"]):
        caption = str(stripped.caption.values[i])
        assert not any(f" {w}" in caption for w in ("on the left", "on the right", "at the top", "at the bottom",
                                                    "in the centre"))
        for j in range(int(scenes.n_objects.values[i])):
            old = scenes.span.sel(role="name").values[i, j]
            new = stripped.span.sel(role="name").values[i, j]
            assert str(scenes.caption.values[i])[old[0]:old[1]] == caption[new[0]:new[1]]
        assert (stripped.span.sel(role="position").values[i] == -1).all()


def _cells(values: dict, obj: int = 4) -> xr.Dataset:
    """Synthetic per-object scores: every object scores ``values[(layer, timestep)]``."""
    iou = np.zeros((obj, 1, 2, 2, 1))
    for (layer, t), v in values.items():
        iou[:, 0, layer, t, 0] = v
    dims = ("object", "variant", "layer", "timestep", "threshold")
    agg = ("object", "variant", "threshold")
    return xr.Dataset({"iou": (dims, iou), "pixel_accuracy": (dims, iou), "aggregate_iou": (agg, iou[:, :, 0, 0]),
                       "aggregate_accuracy": (agg, iou[:, :, 0, 0])},
                      coords={"object": np.arange(obj), "variant": ["image->text"], "layer": ["a", "b"],
                              "timestep": [100, 500], "threshold": ["otsu"]})


def test_selection_is_made_on_validation_and_reported_on_test(scenes):
    val = _cells({(0, 0): 0.5, (1, 1): 0.2})
    test = _cells({(0, 0): 0.3, (1, 1): 0.6})  # the best test cell is not the best validation cell
    base = xr.Dataset({"prior_iou": (("object", "sigma", "threshold"), np.full((4, 1, 1), 0.4)),
                       "prior_accuracy": (("object", "sigma", "threshold"), np.full((4, 1, 1), 0.9)),
                       **{f"{k}_{m}": ("object", np.zeros(4)) for k in ("whole", "background")
                          for m in ("iou", "accuracy")}},
                      coords={"object": np.arange(4), "sigma": [2.0], "threshold": ["otsu"]})
    out = select_on_validation(val, base, test, base)
    row = out["rows"][0]
    assert row["method"] == "image->text" and row["setting"] == "layer a, timestep 100, threshold otsu"
    assert row["test_miou"] == pytest.approx(0.3) and row["best_on_test"] == pytest.approx(0.6)
    gap = out["prior_gap"]
    assert gap["difference"] == pytest.approx(-0.1) and gap["loses_to_prior"] and not gap["beats_prior"]


def test_reusing_every_piece_of_the_same_prompt_reproduces_the_source(mmdit):
    pairs = [{"source": "a red circle on the left", "target": "a red circle on the left"}]
    for method in ("image q,k", "image->image + text->image"):
        source, edited = run_edits(mmdit, pairs, method, steps=4, reuse_steps=4)
        np.testing.assert_allclose(edited, source, atol=1e-5)


def test_edits_are_scored_against_the_rendered_target_scene():
    """The rendered target scene itself is a perfect edit; returning the source unchanged fails
    every shape and glyph edit and loses mask IoU on shape edits."""
    from workbench.models.judge import load_judge

    pairs = edit_pairs(6, seed=1)
    assert [p["change"] for p in pairs] == ["colour", "shape", "glyph"] * 2
    rendered = [scenes_of(p) for p in pairs]
    sources = np.stack([s.image for s, _ in rendered]).astype(np.float32) / 255
    targets = np.stack([t.image for _, t in rendered]).astype(np.float32) / 255
    judge = load_judge()
    perfect = score_edits(judge, pairs, sources, targets)
    assert perfect["edit_success"] == 1.0 and perfect["target_iou"] > 0.95
    unchanged = score_edits(judge, pairs, sources, sources)
    assert unchanged["edit_success"] == 0.0 and unchanged["background_psnr"] == 60.0
    shape = [i for i, p in enumerate(pairs) if p["change"] == "shape"]
    kept = score_edits(judge, [pairs[i] for i in shape], sources[shape], sources[shape])
    assert kept["target_iou"] < 0.9  # the old outline is not the target's


def test_reusing_attention_changes_the_edit(mmdit):
    pairs = edit_pairs(3, seed=1)
    _, swapped = run_edits(mmdit, pairs, "prompt-swap", steps=6)
    _, reused = run_edits(mmdit, pairs, "image q,k", steps=6, reuse_steps=6)
    assert not np.allclose(swapped, reused)
    with pytest.raises(KeyError, match="choose from"):
        run_edits(mmdit, pairs, "no-such-method")
    assert set(METHODS) >= {"prompt-swap", "image->image", "image q,k"}


def test_foreground_finds_an_object_on_a_plain_background():
    image = np.full((1, 32, 32, 3), 0.1, dtype=np.float32)
    image[0, 10:20, 5:15] = [0.9, 0.1, 0.1]
    mask = foreground(image)
    assert mask.sum() == 100 and mask[0, 10:20, 5:15].all()
