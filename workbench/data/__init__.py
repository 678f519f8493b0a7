"""Data for the workbench: the shapes world, a synthetic image world with exact ground truth.

Every image comes with per-object masks, labels (shape or glyph, colour, position, size), a
caption and the caption's word spans per object, so studies can be scored against the truth.

Example:
    >>> import workbench.data as wd
    >>> scene = wd.make_scene([dict(shape="circle", colour="red", position="left", template=0)], seed=0)
    >>> scene.caption
    'a red circle on the left'
    >>> ds = wd.generate(8, split="train", seed=0)          # xarray.Dataset
    >>> wd.ShapesDataset(ds)[0]["image"].shape
    torch.Size([3, 32, 32])
"""

from workbench.data.captions import ROLES, describe, token_alignment
from workbench.data.recipe import Recipe, default_recipe, load_recipe
from workbench.data.scene import Layout, ObjectSpec, Scene, make_scene, scene_layout
from workbench.data.shapes import (
    LABELS,
    SPLITS,
    ShapesDataset,
    generate,
    open_shapes,
    sample_scene,
    scenes_to_dataset,
    write_shapes,
)

__all__ = [
    "LABELS",
    "Layout",
    "ROLES",
    "SPLITS",
    "ObjectSpec",
    "Recipe",
    "Scene",
    "ShapesDataset",
    "default_recipe",
    "describe",
    "generate",
    "load_recipe",
    "make_scene",
    "open_shapes",
    "sample_scene",
    "scene_layout",
    "scenes_to_dataset",
    "token_alignment",
    "write_shapes",
]
