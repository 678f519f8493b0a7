"""Issue-4 studies on the reference models: segmentation scoring and attention-reuse editing."""

import numpy as np
import pytest

import workbench as wb
from workbench.analysis.editing import METHODS, edit_pairs, foreground, run_edits, score_edits
from workbench.analysis.segmentation import best_cells, object_tokens, segmentation_scores
from workbench.data import generate


@pytest.fixture(scope="module")
def mmdit():
    return wb.load("toy-mmdit")


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
def test_segmentation_scores_a_grid_of_layers_and_timesteps(name, scenes):
    model = wb.load(name)
    scores = segmentation_scores(model, scenes, timesteps=(200, 600), batch=3)
    expected_variants = ["image->text", "text->image", "output"] if name == "toy-mmdit" else ["image->text"]
    assert list(scores.variant.values) == expected_variants
    assert scores.miou.dims == ("variant", "layer", "timestep")
    captions = [str(c) for c in scenes.caption.values]
    named = sum(bool(t) for per_image in object_tokens(model, captions, scenes.span.sel(role="name").values)
                for per_image_obj in [per_image] for t in per_image_obj)
    assert int(scores.objects.max()) == named >= int(scenes.n_objects.sum()) - 1
    assert float(scores.miou.min()) >= 0 and float(scores.miou.max()) <= 1
    assert best_cells(scores)[0]["miou"] == pytest.approx(float(scores.miou.sel(variant="image->text").max()))


def test_reusing_every_piece_of_the_same_prompt_reproduces_the_source(mmdit):
    pairs = [{"source": "a red circle on the left", "target": "a red circle on the left"}]
    for method in ("image q,k", "image->image + text->image"):
        source, edited = run_edits(mmdit, pairs, method, steps=4, reuse_steps=4)
        np.testing.assert_allclose(edited, source, atol=1e-5)


def test_reusing_attention_changes_the_edit_and_scores_are_bounded(mmdit):
    from workbench.models.judge import load_judge

    pairs = edit_pairs(4, seed=1)
    assert [p["change"] for p in pairs] == ["colour", "shape", "colour", "shape"]
    assert all(p["source"] != p["target"] for p in pairs)
    source, swapped = run_edits(mmdit, pairs, "prompt-swap", steps=6)
    _, reused = run_edits(mmdit, pairs, "image q,k", steps=6, reuse_steps=6)
    assert not np.allclose(swapped, reused)
    scores = score_edits(load_judge(), pairs, source, reused)
    assert set(scores) == {"edit_success", "mask_iou", "background_change"}
    assert 0 <= scores["edit_success"] <= 1 and 0 <= scores["mask_iou"] <= 1
    with pytest.raises(KeyError, match="choose from"):
        run_edits(mmdit, pairs, "no-such-method")
    assert set(METHODS) >= {"prompt-swap", "image->image", "image q,k"}


def test_foreground_finds_an_object_on_a_plain_background():
    image = np.full((1, 32, 32, 3), 0.1, dtype=np.float32)
    image[0, 10:20, 5:15] = [0.9, 0.1, 0.1]
    mask = foreground(image)
    assert mask.sum() == 100 and mask[0, 10:20, 5:15].all()
