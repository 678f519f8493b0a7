"""Decomposition, block statistics and per-word maps over recorded attention."""

import numpy as np
import pytest

import workbench as wb
from workbench.analysis.segmentation import otsu_threshold, score_mask
from workbench.attention import block_mass, decompose, entropy, locality, to_grid, word_maps, words_of


@pytest.fixture(scope="module", params=["sd3", "flux"])
def joint(request):
    model = wb.load(f"tiny-{request.param}")
    with wb.record(model, ["transformer_blocks.0.attn.probs", "transformer_blocks.*.attn.probs.image->text",
                           "transformer_blocks.*.attn.probs.text->image"]) as rec:
        images = model.generate(["a red circle on the left", "a blue square at the top"], steps=2, guidance_scale=1.0)
    return request.param, rec, images


def test_decompose_gives_four_blocks_that_tile_the_matrix(joint):
    family, rec, _ = joint
    probs = rec["transformer_blocks.0.attn.probs"]
    blocks = decompose(probs)
    assert set(blocks.data_vars) == {"image->image", "image->text", "text->image", "text->text"}
    assert blocks["image->text"].dims[-2:] == ("query_image", "key_text")
    total = sum(float(blocks[name].sum()) for name in blocks.data_vars)
    assert total == pytest.approx(float(probs.sum()), rel=1e-5)
    # rows: image queries spread their mass over image and text keys
    rows = blocks["image->image"].sum("key_image") + blocks["image->text"].sum("key_text")
    np.testing.assert_allclose(rows, 1.0, atol=1e-5)
    assert "key_text_token" in blocks["image->text"].coords


def test_block_mass_rows_sum_to_one_and_match_blocks(joint):
    _, rec, _ = joint
    probs = rec["transformer_blocks.0.attn.probs"]
    mass = block_mass(probs)
    np.testing.assert_allclose(mass.sum("key_kind"), 1.0, atol=1e-5)
    image_text = decompose(probs)["image->text"].sum("key_text").mean("query_image")
    np.testing.assert_allclose(mass.sel(query_kind="image", key_kind="text"), image_text, atol=1e-6)


def test_entropy_and_locality(joint):
    _, rec, _ = joint
    blocks = decompose(rec["transformer_blocks.0.attn.probs"])
    image_image = blocks["image->image"].rename(query_image="query", key_image="key")
    image_image = image_image.rename({c: c.replace("query_image", "query").replace("key_image", "key") for c in image_image.coords if "_image_" in c})
    h = entropy(image_image)
    assert (h >= -1e-6).all() and (h <= np.log(image_image.sizes["key"]) + 1e-5).all()
    by_distance = locality(image_image)
    np.testing.assert_allclose(by_distance.sum("distance"), image_image.sum("key").mean("query"), atol=1e-5)


def test_word_maps_cover_the_prompt_words(joint):
    family, rec, images = joint
    maps = word_maps(rec, sample=0)
    assert list(maps.word.values) == ["a", "red", "circle", "on", "the", "left"]
    assert maps.dims == ("word", "y", "x") and maps.sizes["y"] == 8
    np.testing.assert_allclose(maps.sum(("y", "x")), 1.0, atol=1e-6)
    second = word_maps(rec, sample=1)
    assert "square" in second.word.values


def test_word_maps_for_unet_cross_attention_average_resolutions():
    model = wb.load("tiny-sd")
    with wb.record(model, ["**.attn2.probs"]) as rec:
        model.generate(["a green triangle"], steps=2, guidance_scale=3.0)
    sizes = {rec[name].sizes["query"] for name in rec}
    assert len(sizes) > 1  # several resolution levels
    maps = word_maps(rec)
    assert maps.sizes["y"] == 16 and maps.attrs["layers"] == len(rec)


def test_to_grid_orders_tokens_by_position(joint):
    _, rec, _ = joint
    block = rec["transformer_blocks.0.attn.probs.image->text"].isel(sample=0, branch=0, step=0, head=0, key=0)
    grid = to_grid(block, "query")
    side = grid.sizes["y"]
    flat = block.values[(block.query_y.values * side + block.query_x.values).argsort()]
    np.testing.assert_array_equal(grid.values.ravel(), flat)


def test_words_of_groups_clip_and_sentencepiece_tokens():
    clip = ["<|startoftext|>", "a</w>", "re", "d</w>", "circle</w>", "<|endoftext|>", "<|endoftext|>"]
    assert words_of(clip) == [("a", [1]), ("red", [2, 3]), ("circle", [4])]
    t5 = ["▁a", "▁re", "d", "▁circle", "</s>", "<pad>"]
    assert words_of(t5) == [("a", [0]), ("red", [1, 2]), ("circle", [3])]
    glm = ["<|endoftext|>", "[gMASK]", "<sop>", "a", "Ġre", "d", "Ġcircle", "<|im_end|>"]  # byte-level BPE
    assert words_of(glm) == [("a", [3]), ("red", [4, 5]), ("circle", [6])]
    # a chat template (Qwen3: FLUX.2 klein, Z-Image) puts a newline token between its role and the prompt
    chat = ["<|im_start|>", "user", "Ċ", "a", "Ġred", "Ġcircle", "<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ"]
    assert words_of(chat) == [("user", [1]), ("a", [3]), ("red", [4]), ("circle", [5]), ("assistant", [9])]


def test_otsu_mask_scores_a_blob():
    truth = np.zeros((32, 32), bool)
    truth[8:20, 10:22] = True
    heat = truth * 1.0 + np.random.default_rng(0).normal(0, 0.1, truth.shape)
    assert 0.2 < otsu_threshold(heat) < 0.8  # anywhere in the gap between the two clusters
    iou, accuracy = score_mask(heat, truth)
    assert iou > 0.95 and accuracy > 0.98
    assert score_mask(np.random.default_rng(1).random((32, 32)), truth)[0] < 0.4


def test_word_maps_without_attention_says_what_to_record():
    model = wb.load("tiny-sd3")
    with wb.record(model, ["latent.x0"]) as rec:
        model.generate(["a red circle"], steps=1)
    with pytest.raises(ValueError, match="record e.g."):
        word_maps(rec)


def _word_maps(**maps) -> "xr.DataArray":
    import xarray as xr

    return xr.DataArray(np.stack(list(maps.values())).astype(float), dims=("word", "y", "x"),
                        coords={"word": list(maps)})


def test_intersection_over_area_of_hand_built_regions():
    """Regions drawn by hand: "red" fills the top-left quadrant, "circle" the left half, "sky" the
    right half, "a" is flat (no region). |A and B| / |A| is then known for every pair."""
    from workbench.attention import intersection_over_area

    left, top_left, right = np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))
    left[:, :2], top_left[:2, :2], right[:, 2:] = 1, 1, 1
    maps = _word_maps(red=top_left * 3 + 0.5, circle=left, sky=right, a=np.full((4, 4), 0.25))
    ioa = intersection_over_area(maps)
    assert ioa.dims == ("word", "other") and list(ioa.other.values) == ["red", "circle", "sky", "a"]
    assert ioa.attrs["threshold"] == 0.4
    expected = np.array([[1.0, 1.0, 0.0, 0.0],   # red lies wholly inside circle, never meets sky
                         [0.5, 1.0, 0.0, 0.0],   # half of circle's 8 cells are red's 4
                         [0.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]])  # a flat map has no region: its row is 0
    np.testing.assert_array_equal(ioa.values, expected)
    assert float(ioa.sel(word="red", other="circle")) == 1.0 and float(ioa.sel(word="circle", other="red")) == 0.5


def test_intersection_over_area_thresholds_each_map_on_its_own_range():
    """A graded map: 10, 13, 14, 20 scale to 0, 0.3, 0.4, 1; at 0.4 (DAAM's) its region is the last
    two cells, at 0.5 the last one, at 0.25 the last three. "spot" is the third cell alone."""
    from workbench.attention import intersection_over_area

    maps = _word_maps(glow=np.array([[10.0, 13.0, 14.0, 20.0]]), spot=np.array([[0.0, 0.0, 7.0, 0.0]]))
    by_threshold = {t: float(intersection_over_area(maps, threshold=t).sel(word="glow", other="spot"))
                    for t in (0.25, 0.4, 0.5)}
    assert by_threshold == pytest.approx({0.25: 1 / 3, 0.4: 0.5, 0.5: 0.0})
    assert float(intersection_over_area(maps).sel(word="spot", other="glow")) == 1.0


def test_intersection_over_area_of_video_maps_and_clear_errors():
    import xarray as xr

    from workbench.attention import intersection_over_area

    frames = np.zeros((2, 3, 2, 2))  # (word, frame, y, x)
    frames[0, 0] = 1  # "ball" fills frame 0
    frames[1, 0, 0, 0] = frames[1, 2, 1, 1] = 1  # "red": one cell in frame 0, one in frame 2
    video = xr.DataArray(frames, dims=("word", "frame", "y", "x"), coords={"word": ["ball", "red"]})
    np.testing.assert_array_equal(intersection_over_area(video).values, [[1.0, 0.25], [0.5, 1.0]])
    with pytest.raises(ValueError, match="encoder"):
        intersection_over_area(video.rename(frame="encoder"))
    with pytest.raises(ValueError, match="between 0 and 1"):
        intersection_over_area(video, threshold=40)
    with pytest.raises(ValueError, match="'word' dim"):
        intersection_over_area(video.isel(word=0))


def test_intersection_over_area_of_recorded_word_maps(joint):
    from workbench.attention import intersection_over_area

    _, rec, _ = joint
    maps = word_maps(rec)
    ioa = intersection_over_area(maps)
    assert list(ioa.word.values) == list(maps.word.values) == list(ioa.other.values)
    assert ((ioa >= 0) & (ioa <= 1)).all()
    np.testing.assert_array_equal(np.diag(ioa.values), 1.0)  # every recorded map has a region, inside itself
