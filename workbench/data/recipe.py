"""The shapes-world vocabulary, read from a TOML recipe.

The packaged recipe (the repository's ``datasets/shapes.toml``, shipped as ``workbench/datasets/``) is loaded through
``importlib.resources`` so it is found from an installed wheel as well as from the repository.

Example:
    >>> recipe = default_recipe()
    >>> recipe.image_size, recipe.colours["red"]
    (32, (230, 40, 40))
    >>> recipe.check("colour", "pink")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'pink'; valid colours: red, orange, yellow, green, cyan, blue, magenta, white
"""

from __future__ import annotations

import functools
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from workbench.data.font import FONT
from workbench.data.render import OUTLINES

KINDS = ("shape", "glyph")
RGB = tuple[int, int, int]
TEMPLATE_FIELDS = {
    "shape": {"article", "size", "colour", "shape", "position"},
    "glyph": {"article", "size", "colour", "glyph", "glyph_kind", "position"},
}
REQUIRED_TEMPLATE_FIELDS = {
    "shape": {"colour", "shape", "position"},
    "glyph": {"colour", "glyph", "position"},
}


@dataclass(frozen=True)
class Position:
    name: str
    anchor: tuple[float, float]  # (x, y) in pixels at the recipe's image_size
    phrase: str  # caption text, e.g. "on the left"; contains `name`


@dataclass(frozen=True)
class Recipe:
    """Everything the generator may draw or say; mappings are read-only and keep file order."""

    name: str
    image_size: int
    max_objects: int
    glyph_fraction: float
    colour_jitter: int
    max_footprint_overlap: float
    splits: Mapping[str, int]
    shapes: tuple[str, ...]
    glyphs: tuple[str, ...]
    colours: Mapping[str, RGB]
    positions: Mapping[str, Position]
    sizes: Mapping[str, float]  # name -> radius in pixels at image_size
    backgrounds: Mapping[str, RGB]
    background_noise: int
    templates: Mapping[str, tuple[str, ...]]  # kind -> caption templates
    separator: str
    last_separator: str

    @functools.cached_property
    def _vocabularies(self) -> dict[str, tuple[str, ...]]:
        # Built once per recipe (it is immutable): labelling a split looks names up ~20 times a scene.
        return {
            "kind": KINDS,
            "shape": self.shapes,
            "glyph": self.glyphs,
            "colour": tuple(self.colours),
            "position": tuple(self.positions),
            "size": tuple(self.sizes),
            "background": tuple(self.backgrounds),
        }

    def vocabulary(self, field: str) -> tuple[str, ...]:
        """The valid names of a label field, in code order (the int label is the index)."""
        vocabularies = self._vocabularies
        if field not in vocabularies:
            raise ValueError(f"unknown label field {field!r}; valid fields: {', '.join(vocabularies)}")
        return vocabularies[field]

    def check(self, field: str, value: str) -> str:
        """Return `value` if it is a valid `field` name, else raise listing the valid ones."""
        valid = self.vocabulary(field)
        if value not in valid:
            raise ValueError(f"unknown {field} {value!r}; valid {field}s: {', '.join(valid)}")
        return value

    def code(self, field: str, value: str) -> int:
        """The integer label of a name, e.g. ``code("colour", "red") == 0``."""
        return self.vocabulary(field).index(self.check(field, value))


@functools.cache
def default_recipe() -> Recipe:
    """The packaged shapes recipe (cached: recipes are immutable)."""
    text = resources.files("workbench").joinpath("datasets", "shapes.toml").read_text("utf-8")
    return parse_recipe(tomllib.loads(text))


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read a recipe TOML file; ``None`` gives the packaged one."""
    if path is None:
        return default_recipe()
    return parse_recipe(tomllib.loads(Path(path).read_text("utf-8")))


def parse_recipe(raw: Mapping) -> Recipe:
    """Build and validate a Recipe from parsed TOML."""
    shapes = tuple(raw["shapes"]["names"])
    unknown_shapes = [s for s in shapes if s not in OUTLINES]
    if unknown_shapes:
        raise ValueError(f"shapes {unknown_shapes} have no outline; drawable shapes: {', '.join(OUTLINES)}")
    glyphs = tuple(raw["glyphs"]["classes"])
    unknown_glyphs = [g for g in glyphs if g not in FONT]
    if unknown_glyphs:
        raise ValueError(f"glyphs {unknown_glyphs} are not in the bitmap font; it has: {''.join(FONT)}")
    positions = {
        name: Position(name, tuple(map(float, spec["anchor"])), spec["phrase"])
        for name, spec in raw["positions"].items()
    }
    for position in positions.values():
        if position.name not in position.phrase:
            raise ValueError(f"position phrase {position.phrase!r} must contain its name {position.name!r}")
    templates = {kind: tuple(raw["captions"][kind]) for kind in KINDS}
    for kind, kind_templates in templates.items():
        for template in kind_templates:
            _check_template(kind, template)
    recipe = Recipe(
        name=raw["name"],
        image_size=int(raw["image_size"]),
        max_objects=int(raw["max_objects"]),
        glyph_fraction=float(raw["glyph_fraction"]),
        colour_jitter=int(raw["colour_jitter"]),
        max_footprint_overlap=float(raw["max_footprint_overlap"]),
        splits=MappingProxyType({k: int(v) for k, v in raw["splits"].items()}),
        shapes=shapes,
        glyphs=glyphs,
        colours=MappingProxyType({k: _rgb(v) for k, v in raw["colours"].items()}),
        positions=MappingProxyType(positions),
        sizes=MappingProxyType({k: float(v) for k, v in raw["sizes"].items()}),
        backgrounds=MappingProxyType({k: _rgb(v) for k, v in raw["background"]["tones"].items()}),
        background_noise=int(raw["background"]["noise"]),
        templates=MappingProxyType(templates),
        separator=raw["captions"]["separator"],
        last_separator=raw["captions"]["last_separator"],
    )
    if not 1 <= recipe.max_objects <= len(recipe.positions):
        raise ValueError(f"max_objects must be between 1 and the number of positions ({len(recipe.positions)})")
    return recipe


def _rgb(value: list[int]) -> RGB:
    if len(value) != 3 or not all(0 <= c <= 255 for c in value):
        raise ValueError(f"colour {value} is not an RGB triple in 0..255")
    return (int(value[0]), int(value[1]), int(value[2]))


def _check_template(kind: str, template: str) -> None:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    fields = set(names)
    unknown = fields - TEMPLATE_FIELDS[kind]
    missing = REQUIRED_TEMPLATE_FIELDS[kind] - fields
    if unknown or missing or len(names) != len(fields):
        # Each field once: a caption span must point at a single word.
        raise ValueError(
            f"{kind} caption template {template!r}: unknown fields {sorted(unknown)}, missing {sorted(missing)}, "
            f"fields must not repeat; allowed: {sorted(TEMPLATE_FIELDS[kind])}"
        )


@dataclass(frozen=True)
class ObjectSpec:
    """What one object is, in recipe vocabulary; ``name`` is a shape name or a glyph character."""

    kind: str  # "shape" or "glyph"
    name: str
    colour: str
    position: str
    size: str
    template: int = 0  # which of the recipe's caption templates for this kind describes it
