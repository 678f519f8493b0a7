"""The shapes world: determinism, ground-truth consistency, captions, storage, torch view, errors."""

from __future__ import annotations

import hashlib
import itertools
import re
import tomllib
from importlib import resources

import numpy as np
import pytest
import torch
import xarray as xr

import workbench.data as wd
from workbench.data.font import FONT, glyph_bitmap
from workbench.data.recipe import parse_recipe
from workbench.data.render import glyph_mask

RECIPE = wd.default_recipe()


@pytest.fixture(scope="module")
def train() -> xr.Dataset:
    return wd.generate(60, split="train", seed=0)


@pytest.fixture(scope="module")
def train48() -> xr.Dataset:
    return wd.generate(12, split="train", seed=0, size=48)


# --- determinism and splits -------------------------------------------------------------------


def test_same_seed_gives_identical_data_and_another_seed_differs(train):
    xr.testing.assert_identical(train, wd.generate(60, split="train", seed=0))
    other = wd.generate(60, split="train", seed=1)
    assert not np.array_equal(train.image.values, other.image.values)
    assert train.caption.values.tolist() != other.caption.values.tolist()


def test_a_sample_regenerates_alone_and_in_pieces(train):
    scene = wd.sample_scene(17, "train", seed=0)
    assert np.array_equal(scene.image, train.image.values[17])
    assert scene.caption == train.caption.values[17]
    piece = wd.generate(5, split="train", seed=0, start=10)
    xr.testing.assert_identical(piece.drop_attrs(), train.isel(sample=slice(10, 15)).drop_attrs())


def test_labels_without_pixels_are_the_rendered_splits_labels(train, train48):
    """generate(pixels=False) draws the same scenes unpainted: every label, caption, span and
    background tone equals the rendered split's, at any image size and for constrained scenes."""
    for rendered, size in ((train, None), (train48, 48)):
        labels = wd.generate(len(rendered.sample), split="train", seed=0, size=size, pixels=False)
        xr.testing.assert_identical(labels, rendered.drop_vars(["image", "mask", "y", "x", "rgb"]))
    piece = wd.generate(7, split="test", seed=3, start=40, pixels=False)
    xr.testing.assert_identical(piece, wd.generate(7, split="test", seed=3, start=40).drop_vars(
        ["image", "mask", "y", "x", "rgb"]))
    spec = [dict(glyph="K", colour="red", position="top"), dict(shape="circle")]
    layout, scene = wd.scene_layout(spec, seed=9), wd.make_scene(spec, seed=9)
    assert (layout.objects, layout.caption, layout.spans, layout.background) == (
        scene.objects, scene.caption, scene.spans, scene.background)


def test_splits_share_no_image():
    digests = {
        split: {hashlib.sha1(img.tobytes()).hexdigest() for img in wd.generate(50, split=split).image.values}
        for split in wd.SPLITS
    }
    for a, b in itertools.combinations(wd.SPLITS, 2):
        assert not digests[a] & digests[b], (a, b)


def test_random_scenes_cover_the_vocabulary(train):
    assert set(train.n_objects.values) == {1, 2, 3}
    kinds = train.kind.values[train.kind.values >= 0]
    assert set(kinds) == {0, 1}  # shapes and glyphs
    assert (train.span.sel(role="size").values[..., 0] >= 0).any()  # size said sometimes...
    assert ((train.span.sel(role="size").values[..., 0] < 0) & (train.kind.values >= 0)).any()  # ...not always
    for sample in range(60):
        positions = train.position.values[sample, : train.n_objects.values[sample]]
        assert len(set(positions)) == len(positions)


# --- ground truth consistency -----------------------------------------------------------------


@pytest.mark.parametrize("data", ["train", "train48"])
def test_masks_are_exactly_the_painted_pixels(data, request):
    ds = request.getfixturevalue(data)
    colours = np.array(ds.colour.attrs["rgb"], dtype=int)
    tones = np.array(ds.background.attrs["rgb"], dtype=int)
    for sample in range(ds.sizes["sample"]):
        image = ds.image.values[sample].astype(int)
        masks = ds.mask.values[sample]
        n = int(ds.n_objects.values[sample])
        assert masks.sum(axis=0).max() <= 1, "objects' masks overlap"
        assert not masks[n:].any(), "padding masks must be empty"
        for obj in range(n):
            assert masks[obj].sum() > 0
            painted = image[masks[obj]]
            assert np.abs(painted - colours[ds.colour.values[sample, obj]]).max() <= RECIPE.colour_jitter
            assert (painted == painted[0]).all(), "an object is painted in one flat colour"
        outside = image[~masks.any(axis=0)]
        assert np.abs(outside - tones[ds.background.values[sample]]).max() <= RECIPE.background_noise


def test_random_layouts_keep_objects_apart():
    # Each object keeps (nearly) all the pixels it would show alone: nothing hides behind another.
    for sample in range(20):
        scene = wd.sample_scene(sample, "train")
        for obj, mask in zip(scene.objects, scene.masks, strict=True):
            spec = {obj.kind: obj.name, "colour": obj.colour, "position": obj.position, "size": obj.size}
            alone = wd.make_scene([spec]).masks[0]
            assert mask.sum() >= 0.9 * alone.sum()


def test_colours_are_well_separated_and_far_from_backgrounds():
    colours = np.array(list(RECIPE.colours.values()), dtype=float)
    tones = np.array(list(RECIPE.backgrounds.values()), dtype=float)
    assert len(colours) >= 6 and len(RECIPE.shapes) >= 4 and len(RECIPE.glyphs) >= 10
    pairwise = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(colours), 1)]
    assert pairwise.min() > 4 * RECIPE.colour_jitter
    assert np.abs(colours[:, None] - tones[None]).max(axis=-1).min() > 2 * (
        RECIPE.colour_jitter + RECIPE.background_noise
    )


def test_glyph_classes_draw_distinct_masks():
    bitmaps = {char: glyph_bitmap(char).tobytes() for char in FONT}
    assert len(set(bitmaps.values())) == len(FONT)
    for size, radius in [(32, 3.5), (32, 6.0), (48, 9.0)]:
        masks = [glyph_mask(char, (size / 2, size / 2), radius, size) for char in RECIPE.glyphs]
        assert len({m.tobytes() for m in masks}) == len(RECIPE.glyphs)
        assert all(m.sum() >= 8 for m in masks)


def test_attribute_edit_pairs_keep_the_layout():
    base = dict(position="top", template=0)
    red, blue = (wd.make_scene([base | dict(shape="circle", colour=c)], seed=4) for c in ("red", "blue"))
    assert np.array_equal(red.masks, blue.masks)
    assert np.array_equal(red.image[~red.masks[0]], blue.image[~blue.masks[0]])  # same background and noise
    assert red.caption.replace("red", "blue") == blue.caption
    circle, square = (wd.make_scene([dict(shape=s, colour="green"), {}], seed=9) for s in ("circle", "square"))
    assert [o.position for o in circle.objects] == [o.position for o in square.objects]
    assert [o.size for o in circle.objects] == [o.size for o in square.objects]
    assert circle.objects[1] == square.objects[1]


# --- captions ---------------------------------------------------------------------------------


def test_captions_follow_the_templates():
    def caption(*objects):
        return wd.make_scene(list(objects), seed=0).caption

    assert caption(dict(shape="circle", colour="red", position="left", template=0)) == "a red circle on the left"
    assert (
        caption(
            dict(shape="square", colour="blue", position="top", size="small", template=1),
            dict(shape="triangle", colour="green", position="right", template=0),
        )
        == "a small blue square at the top and a green triangle on the right"
    )
    assert caption(dict(glyph="K", colour="red", position="left", template=0)) == 'the letter "K" in red on the left'
    assert (
        caption(dict(glyph="7", colour="yellow", position="bottom", template=0))
        == 'the digit "7" in yellow at the bottom'
    )
    assert caption(dict(shape="cross", colour="orange", position="centre", template=0)).startswith("an orange cross")
    three = caption(dict(shape="circle"), dict(glyph="3"), dict(shape="diamond"))
    assert re.fullmatch(r"[^,]+, [^,]+ and [^,]+", three)


def test_caption_spans_point_at_each_objects_words(train):
    for sample in range(train.sizes["sample"]):
        caption = str(train.caption.values[sample])
        for obj in range(int(train.n_objects.values[sample])):
            spans = dict(zip(wd.ROLES, train.span.values[sample, obj], strict=True))
            word = {role: caption[start:end] for role, (start, end) in spans.items() if start >= 0}
            kind = RECIPE.vocabulary("kind")[train.kind.values[sample, obj]]
            assert word["name"] == RECIPE.vocabulary(kind)[train[kind].values[sample, obj]]
            assert word["colour"] == RECIPE.vocabulary("colour")[train.colour.values[sample, obj]]
            assert word["position"] == RECIPE.vocabulary("position")[train.position.values[sample, obj]]
            if "size" in word:
                assert word["size"] == RECIPE.vocabulary("size")[train.size.values[sample, obj]]
            if kind == "glyph":  # the glyph itself, inside its quotes
                start, end = spans["name"]
                assert caption[start - 1] == caption[end] == '"'
    assert (train.span.values[train.kind.values < 0] == -1).all()


def test_token_alignment_maps_spans_to_overlapping_tokens():
    scene = wd.make_scene(
        [dict(shape="circle", colour="red", position="left", template=0), dict(glyph="K", colour="blue", template=1)],
        seed=0,
    )
    caption = scene.caption
    # A fake tokenizer: a start token, words and quotes split apart, "circle" split in two, an end token.
    offsets = [(0, 0)]
    for match in re.finditer(r'\w+|"', caption):
        start, end = match.span()
        if match.group() == "circle":
            offsets += [(start, start + 3), (start + 3, end)]
        else:
            offsets.append((start, end))
    offsets.append((0, 0))
    tokens = [caption[start:end] for start, end in offsets]

    first = wd.token_alignment(scene.spans[0], offsets)
    assert [tokens[i] for i in first["name"]] == ["cir", "cle"]
    assert [tokens[i] for i in first["colour"]] == ["red"]
    assert [tokens[i] for i in first["position"]] == ["left"]
    second = wd.token_alignment(scene.spans[1], offsets)
    assert [tokens[i] for i in second["name"]] == ["K"]
    assert [tokens[i] for i in second["size"]] == [scene.objects[1].size]
    assert wd.token_alignment([(-1, -1), (2, 5)], offsets) == [[], first["colour"]]


# --- storage and torch ------------------------------------------------------------------------


def test_write_and_open_round_trip(tmp_path):
    path = wd.write_shapes(tmp_path / "val.zarr", split="val", n=7, seed=3, block=3)
    stored = wd.open_shapes(path)
    xr.testing.assert_identical(stored.load(), wd.generate(7, split="val", seed=3))
    assert stored.attrs["split"] == "val" and stored.colour.attrs["classes"] == list(RECIPE.colours)


def test_recipe_is_a_package_resource():
    text = resources.files("workbench").joinpath("datasets", "shapes.toml").read_text("utf-8")
    assert parse_recipe(tomllib.loads(text)) == RECIPE
    assert RECIPE.image_size == 32 and set(RECIPE.positions) == {"left", "right", "top", "bottom", "centre"}


@pytest.mark.parametrize("from_path", [False, True])
def test_torch_dataset_items(train, tmp_path, from_path):
    source = wd.write_shapes(tmp_path / "t.zarr", n=8, block=4) if from_path else train
    dataset = wd.ShapesDataset(source)
    assert len(dataset) == (8 if from_path else 60)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    item = dataset[0]
    assert item["caption"] == str(train.caption.values[0]) and item["n_objects"] == int(train.n_objects.values[0])
    assert torch.allclose((item["image"] + 1) * 127.5, torch.from_numpy(train.image.values[0]).permute(2, 0, 1).float())
    name_field = item["kind_name"]  # the first object's shape word or glyph character comes first in the caption
    assert item[f"{name_field}_name"] in item["caption"] and item["colour_name"] in item["caption"]
    assert item["shape" if name_field == "glyph" else "glyph"] == -1


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: wd.make_scene([dict(shape="hexagon")]), "valid shapes: circle, square, triangle, cross, diamond"),
        (lambda: wd.make_scene([dict(colour="pink")]), "valid colours: red, orange"),
        (lambda: wd.make_scene([dict(position="middle")]), "valid positions: left, right, top, bottom, centre"),
        (lambda: wd.make_scene([dict(glyph="?")]), "valid glyphs: 0, 1"),
        (lambda: wd.make_scene([dict(size="huge")]), "valid sizes: small, large"),
        (lambda: wd.make_scene([dict(shade="red")]), "valid keys: kind, shape, glyph"),
        (lambda: wd.make_scene([dict(shape="circle", glyph="K")]), "not both"),
        (lambda: wd.make_scene([dict(position="left"), dict(position="left")]), "distinct"),
        (lambda: wd.make_scene([]), "1 to 5 objects"),
        (lambda: wd.make_scene([dict(shape="circle", template=7)]), "template must be an index below 2"),
        (lambda: wd.make_scene(size=8), "image size must be an integer >= 16"),
        (
            lambda: wd.make_scene(
                [dict(shape="circle", position="centre", size="large"), dict(shape="cross", size="large")]
            ),
            "keeps objects apart",
        ),
        (lambda: wd.make_scene(seed=-1), "non-negative"),
        (lambda: wd.generate(0), "n must be a positive integer"),
        (lambda: wd.generate(-3), "n must be a positive integer"),
        (lambda: wd.generate(2, split="holdout"), "valid splits: train, val, test"),
        (lambda: wd.generate(2, split="holdout", pixels=False), "valid splits: train, val, test"),
        (lambda: wd.scene_layout([dict(colour="pink")]), "valid colours: red, orange"),
        (lambda: wd.scene_layout(size=8), "image size must be an integer >= 16"),
        (lambda: wd.write_shapes("/tmp/never-written.zarr", split="dev"), "valid splits: train, val, test"),
    ],
)
def test_bad_input_fails_clearly(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_open_shapes_rejects_other_stores(tmp_path):
    with pytest.raises(FileNotFoundError):
        wd.open_shapes(tmp_path / "missing.zarr")
    xr.Dataset({"a": ("x", [1, 2])}).to_zarr(tmp_path / "other.zarr", consolidated=False)
    with pytest.raises(ValueError, match="not a shapes-world store"):
        wd.open_shapes(tmp_path / "other.zarr")
