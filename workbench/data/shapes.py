"""Shapes-world datasets: reproducible splits as xarray, stored in zarr, served to torch.

Sample ``i`` of split ``s`` is ``make_scene(seed=(seed, SPLITS.index(s), i))``: any sample can be
regenerated on its own, a split can be written in pieces, and no two splits share a random stream.

Storage is one zarr store read and written through xarray, because that makes a split
self-describing and consistent with the rest of the workbench (captures are xarray too):
images, masks, labels, captions and caption spans share named dims (``sample``, ``obj``, ``y``,
``x``, ``rgb``, ``role``, ``bound``), so masks line up with images and with recorded attention
maps without index bookkeeping; the vocabularies (and colour RGB values, position anchors, size
radii) travel in variable attrs, so integer labels decode without the recipe; chunks along
``sample`` give lazy, partial reads of large splits. A folder of PNG + JSON files would need its
own index and mask format; ``.npz`` has no lazy reads or attributes.

Variables (``obj`` is padded to the most objects a scene may hold; padding is -1 / False / ""):
    image     (sample, y, x, rgb)        uint8
    mask      (sample, obj, y, x)        bool: the pixels each object shows (top-most wins)
    n_objects (sample)                   int8
    kind, shape, glyph, colour, position, size, template
              (sample, obj)              int8 codes into attrs["classes"]; shape is -1 for a
                                         glyph and glyph -1 for a shape
    background (sample)                  int8 code of the background tone
    caption   (sample)                   str
    span      (sample, obj, role, bound) int16 character (start, end) in the caption of each
                                         object's name/colour/size/position word; -1 if unsaid

Example:
    >>> ds = generate(4, split="val", seed=1)
    >>> dict(ds.sizes)
    {'sample': 4, 'y': 32, 'x': 32, 'rgb': 3, 'obj': 3, 'role': 4, 'bound': 2}
    >>> item = ShapesDataset(ds)[0]
    >>> item["image"].shape, item["n_objects"] == int(ds.n_objects[0])
    (torch.Size([3, 32, 32]), True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from workbench.data.captions import ROLES
from workbench.data.recipe import Recipe, default_recipe
from workbench.data.scene import Layout, Scene, make_scene, scene_layout

SPLITS = ("train", "val", "test")
LABELS = ("kind", "shape", "glyph", "colour", "position", "size")
_ATTR_WORLD = "shapes"  # marks a store as a shapes-world split, checked by open_shapes


def sample_scene(
    index: int, split: str = "train", seed: int = 0, size: int | None = None, recipe: Recipe | None = None
) -> Scene:
    """The scene stored at position `index` of `split` (generated on its own).

    Example:
        >>> sample_scene(7, "test").caption == generate(1, "test", start=7).caption.item()
        True
    """
    return make_scene(seed=_sample_seed(index, split, seed), size=size, recipe=recipe)


def _sample_seed(index: int, split: str, seed: int) -> tuple[int, int, int]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"sample index must be a non-negative integer, got {index!r}")
    return seed, SPLITS.index(split), int(index)


def generate(
    n: int,
    split: str = "train",
    seed: int = 0,
    size: int | None = None,
    recipe: Recipe | None = None,
    start: int = 0,
    pixels: bool = True,
) -> xr.Dataset:
    """Samples ``start .. start + n - 1`` of a split as an in-memory Dataset.

    ``pixels=False``: the same Dataset without ``image`` and ``mask`` (and their ``y``, ``x``,
    ``rgb`` coordinates), drawn without painting a pixel: labels and captions of a split at a
    fraction of the cost, for code that renders images batch by batch later (``sample_scene``).

    Example:
        >>> generate(2, seed=3).caption.values.tolist() == generate(2, seed=3).caption.values.tolist()
        True
        >>> sorted(set(generate(2)) - set(generate(2, pixels=False)))
        ['image', 'mask']
    """
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    recipe = recipe or default_recipe()
    sample = np.arange(start, start + n)
    if pixels:
        ds = scenes_to_dataset([sample_scene(int(i), split, seed, size, recipe) for i in sample], recipe, sample)
    else:
        size = recipe.image_size if size is None else size
        layouts = [scene_layout(seed=_sample_seed(int(i), split, seed), size=size, recipe=recipe) for i in sample]
        variables, coords, attrs = _label_parts(layouts, recipe, sample, size)
        ds = xr.Dataset(variables, coords=coords, attrs=attrs)
    ds.attrs.update(split=split, seed=seed)
    return ds


def scenes_to_dataset(
    scenes: Sequence[Scene], recipe: Recipe | None = None, sample: Sequence[int] | None = None
) -> xr.Dataset:
    """Stack scenes (e.g. hand-made ``make_scene`` prompts for a study) into one Dataset.

    Example:
        >>> pair = [make_scene([dict(shape="circle", colour=c)], seed=2) for c in ("red", "blue")]
        >>> scenes_to_dataset(pair).colour.values[:, 0].tolist()
        [0, 5]
    """
    recipe = recipe or default_recipe()
    if not scenes:
        raise ValueError("need at least one scene")
    size = scenes[0].image.shape[0]
    if any(s.image.shape[0] != size for s in scenes):
        raise ValueError("all scenes must have the same image size")
    variables, coords, attrs = _label_parts(scenes, recipe, sample, size)
    masks = np.zeros((len(scenes), len(coords["obj"]), size, size), dtype=bool)
    for i, scene in enumerate(scenes):
        masks[i, : len(scene.objects)] = scene.masks
    pixels = {
        "image": (("sample", "y", "x", "rgb"), np.stack([s.image for s in scenes])),
        "mask": (("sample", "obj", "y", "x"), masks, {"description": "pixels each object shows; top-most wins"}),
    }
    pixel_coords = {
        "y": np.arange(size),
        "x": np.arange(size),
        # Object (variable-length) strings: zarr v3 has a specified string type for them,
        # while fixed-width numpy strings are stored with an unstable, warned-about encoding.
        "rgb": np.array(["r", "g", "b"], dtype=object),
    }
    coords = {"sample": coords.pop("sample"), "obj": coords.pop("obj"), **pixel_coords, **coords}  # stored order
    return xr.Dataset({**pixels, **variables}, coords=coords, attrs=attrs)


def _label_parts(
    layouts: Sequence[Layout | Scene], recipe: Recipe, sample: Sequence[int] | None, size: int
) -> tuple[dict, dict, dict]:
    """Everything but the pixels: the variables (labels, captions, spans), coordinates and
    attributes of a Dataset of these scenes (or scene layouts)."""
    n = len(layouts)
    n_obj = max(recipe.max_objects, max(len(s.objects) for s in layouts))
    labels = {field: np.full((n, n_obj), -1, dtype=np.int8) for field in (*LABELS, "template")}
    spans = np.full((n, n_obj, len(ROLES), 2), -1, dtype=np.int16)
    for i, scene in enumerate(layouts):
        for j, (obj, obj_spans) in enumerate(zip(scene.objects, scene.spans, strict=True)):
            labels["kind"][i, j] = recipe.code("kind", obj.kind)
            labels[obj.kind][i, j] = recipe.code(obj.kind, obj.name)
            labels["colour"][i, j] = recipe.code("colour", obj.colour)
            labels["position"][i, j] = recipe.code("position", obj.position)
            labels["size"][i, j] = recipe.code("size", obj.size)
            labels["template"][i, j] = obj.template
            for r, role in enumerate(ROLES):
                spans[i, j, r] = obj_spans.get(role, (-1, -1))

    scale = size / recipe.image_size
    label_attrs = {field: {"classes": list(recipe.vocabulary(field))} for field in LABELS}
    label_attrs["colour"]["rgb"] = [list(rgb) for rgb in recipe.colours.values()]
    label_attrs["position"]["anchor_xy"] = [[c * scale for c in p.anchor] for p in recipe.positions.values()]
    label_attrs["position"]["phrase"] = [p.phrase for p in recipe.positions.values()]
    label_attrs["size"]["radius"] = [r * scale for r in recipe.sizes.values()]
    variables = {
        "n_objects": ("sample", np.array([len(s.objects) for s in layouts], dtype=np.int8)),
        **{field: (("sample", "obj"), labels[field], label_attrs[field]) for field in LABELS},
        "template": (("sample", "obj"), labels["template"], {"description": "caption template index per kind"}),
        "background": (
            "sample",
            np.array([recipe.code("background", s.background) for s in layouts], dtype=np.int8),
            {"classes": list(recipe.backgrounds), "rgb": [list(rgb) for rgb in recipe.backgrounds.values()]},
        ),
        "caption": ("sample", np.array([s.caption for s in layouts], dtype=object)),
        "span": (("sample", "obj", "role", "bound"), spans, {"description": "character span in caption; -1 if unsaid"}),
    }
    coords = {
        "sample": np.arange(n) if sample is None else np.asarray(sample),
        "obj": np.arange(n_obj),
        "role": np.array(ROLES, dtype=object),
        "bound": np.array(["start", "end"], dtype=object),
    }
    attrs = {"world": _ATTR_WORLD, "recipe": recipe.name, "image_size": size}
    return variables, coords, attrs


def write_shapes(
    path: str | os.PathLike,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    size: int | None = None,
    recipe: Recipe | None = None,
    block: int = 1000,
) -> Path:
    """Generate a split into a new zarr store at `path` (overwritten), `block` samples at a time.

    ``n`` defaults to the recipe's size for the split. Memory holds one block, and each block
    is one zarr chunk along ``sample``.

    Example:
        >>> import tempfile
        >>> path = write_shapes(tempfile.mkdtemp() + "/val.zarr", split="val", n=3)
        >>> open_shapes(path).sizes["sample"]
        3
    """
    recipe = recipe or default_recipe()
    if split not in SPLITS:  # checked before n so that the default lookup below cannot fail
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    n = recipe.splits[split] if n is None else n
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(block, (int, np.integer)) or block <= 0:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    path = Path(path)
    for start in range(0, n, block):
        ds = generate(min(block, n - start), split, seed, size, recipe, start=start)
        if start == 0:
            encoding = {name: {"chunks": (block, *var.shape[1:])} for name, var in ds.data_vars.items()}
            ds.to_zarr(path, mode="w", encoding=encoding, consolidated=False)
        else:
            ds.to_zarr(path, append_dim="sample", consolidated=False)
    return path


def open_shapes(path: str | os.PathLike) -> xr.Dataset:
    """Open a split written by `write_shapes`, lazily (dask-backed; call ``.load()`` for memory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no shapes store at {path}")
    ds = xr.open_zarr(path, consolidated=False)
    if ds.attrs.get("world") != _ATTR_WORLD:
        raise ValueError(f"{path} is not a shapes-world store (attrs['world'] != {_ATTR_WORLD!r})")
    return ds


class ShapesDataset(torch.utils.data.Dataset):
    """Torch view of a shapes split: image in [-1, 1], caption, and the first object's labels.

    The first object is the one the caption names first. Each label comes as an int code
    (``-1`` where it does not apply: ``glyph`` for a shape, ``shape`` for a glyph) and as a
    name (``"colour_name"`` etc., ``""`` where it does not apply). Images, captions and labels
    are loaded into memory once: they are small, and reading single samples from zarr would
    decompress a whole chunk per item.

    Example:
        >>> item = ShapesDataset(generate(2, seed=0))[1]
        >>> sorted(item)[:6]
        ['caption', 'colour', 'colour_name', 'glyph', 'glyph_name', 'image']
        >>> float(item["image"].min()) >= -1.0 and float(item["image"].max()) <= 1.0
        True
    """

    def __init__(self, source: xr.Dataset | str | os.PathLike):
        ds = source if isinstance(source, xr.Dataset) else open_shapes(source)
        self.images = ds["image"].values
        self.captions = ds["caption"].values
        self.n_objects = ds["n_objects"].values
        self.labels = {field: ds[field].values[:, 0] for field in LABELS}
        self.classes = {field: list(ds[field].attrs["classes"]) for field in LABELS}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 127.5 - 1.0
        item = {"image": image, "caption": str(self.captions[index]), "n_objects": int(self.n_objects[index])}
        for field in LABELS:
            code = int(self.labels[field][index])
            item[field] = code
            item[f"{field}_name"] = self.classes[field][code] if code >= 0 else ""
        return item
