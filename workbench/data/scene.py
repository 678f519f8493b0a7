"""One shapes-world scene: draw a layout (random or constrained), paint it, caption it.

``scene_layout`` gives the same scene's ground truth without painting it (objects, caption,
spans, background tone): labelling a large split that way costs a small fraction of rendering it.

Determinism: a scene depends only on its seed, its constraints, its image size and the recipe.
The seed feeds a numpy ``SeedSequence`` split into two streams, one for the layout (what, where)
and one for the paint (background, noise, colour jitter). Every draw is a fixed-size block of
``Generator.random`` uniforms turned into choices by hand, because bounded-integer draws may
consume a variable amount of the stream. So constraining one attribute never moves anything
else: ``make_scene([dict(shape="circle", colour="red")], seed=3)`` and the same call with
``colour="blue"`` give the same position, size, background and noise - an attribute-edit pair.

Example:
    >>> scene = make_scene([dict(shape="circle", colour="red", position="left", size="large")], seed=0)
    >>> scene.caption in ("a red circle on the left", "a large red circle on the left")
    True
    >>> scene.image.shape, scene.masks.shape
    ((32, 32, 3), (1, 32, 32))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from workbench.data.captions import Span, describe
from workbench.data.recipe import KINDS, ObjectSpec, Recipe, default_recipe
from workbench.data.render import background, footprint, glyph_mask, shape_mask

OBJECT_KEYS = ("kind", "shape", "glyph", "colour", "position", "size", "template")
MIN_IMAGE_SIZE = 16  # a glyph is at least 7 px tall; in smaller images objects could not sit apart
_MAX_LAYOUT_ATTEMPTS = 100
# Columns of the per-object block of uniforms drawn for every layout attempt.
_KIND, _NAME, _COLOUR, _SIZE, _TEMPLATE = range(5)


@dataclass(frozen=True, eq=False)
class Layout:
    """What a scene shows, without its pixels: ``make_scene`` with the same arguments paints it."""

    objects: tuple[ObjectSpec, ...]  # in drawing order: later objects lie on top
    caption: str
    spans: tuple[dict[str, Span], ...]  # per object: role -> (start, end) in caption
    background: str  # name of the background tone


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene with its ground truth."""

    image: np.ndarray  # (size, size, 3) uint8
    masks: np.ndarray  # (n_objects, size, size) bool; each pixel belongs to the top-most object only
    objects: tuple[ObjectSpec, ...]  # in drawing order: later objects lie on top
    caption: str
    spans: tuple[dict[str, Span], ...]  # per object: role -> (start, end) in caption
    background: str  # name of the background tone


def make_scene(
    objects: Sequence[Mapping] | None = None,
    seed: int | Sequence[int] = 0,
    size: int | None = None,
    recipe: Recipe | None = None,
) -> Scene:
    """Render a scene; ``objects`` constrains it, one dict per object, anything left out is drawn.

    Dict keys: kind ("shape"/"glyph"), shape or glyph (implies the kind), colour, position, size,
    template (index of the caption template). ``objects=None`` draws 1..max_objects objects.
    Positions within a scene are distinct. Random layouts keep objects' footprints apart;
    a fully specified layout is drawn as asked, later objects over earlier ones.

    Example:
        >>> spec = dict(glyph="K", position="top", template=0)
        >>> pair = [make_scene([spec | dict(colour=c)], seed=5) for c in ("red", "blue")]
        >>> [s.caption for s in pair]
        ['the letter "K" in red at the top', 'the letter "K" in blue at the top']
        >>> bool((pair[0].masks == pair[1].masks).all())
        True
    """
    recipe, size, layout_rng, paint_rng = _streams(seed, size, recipe)
    specs = _draw_requested(objects, layout_rng, size, recipe)
    image, masks, background_name = _paint(specs, paint_rng, size, recipe)
    caption, spans = describe(specs, recipe)
    return Scene(image, masks, specs, caption, spans, background_name)


def scene_layout(
    objects: Sequence[Mapping] | None = None,
    seed: int | Sequence[int] = 0,
    size: int | None = None,
    recipe: Recipe | None = None,
) -> Layout:
    """The ground truth of ``make_scene(objects, seed, size, recipe)`` without painting it.

    Example:
        >>> spec = [dict(glyph="K", colour="red", position="top", template=0)]
        >>> scene_layout(spec, seed=5).caption == make_scene(spec, seed=5).caption
        True
    """
    recipe, size, layout_rng, paint_rng = _streams(seed, size, recipe)
    specs = _draw_requested(objects, layout_rng, size, recipe)
    caption, spans = describe(specs, recipe)
    return Layout(specs, caption, spans, _background_tone(paint_rng, recipe))


def _streams(seed, size, recipe) -> tuple[Recipe, int, np.random.Generator, np.random.Generator]:
    """The recipe, the checked image size, and the layout and paint random streams of ``seed``."""
    recipe = recipe or default_recipe()
    size = recipe.image_size if size is None else size
    if not isinstance(size, (int, np.integer)) or size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size must be an integer >= {MIN_IMAGE_SIZE}, got {size!r}")
    layout_seed, paint_seed = np.random.SeedSequence(_entropy(seed)).spawn(2)
    return recipe, int(size), np.random.default_rng(layout_seed), np.random.default_rng(paint_seed)


def _draw_requested(objects, rng: np.random.Generator, size: int, recipe: Recipe) -> tuple[ObjectSpec, ...]:
    """The objects: the requested ones (checked) or a random count of random ones."""
    count_draw = rng.random()  # drawn even when unused, so both paths consume alike
    if objects is None:
        requests = [{}] * (1 + int(count_draw * recipe.max_objects))
    else:
        requests = _check_requests(objects, recipe)
    return _draw_layout(requests, rng, size, recipe)


def _entropy(seed: int | Sequence[int]) -> list[int]:
    entropy = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not entropy or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in entropy):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, got {seed!r}")
    return [int(s) for s in entropy]


def _check_requests(objects: Sequence[Mapping], recipe: Recipe) -> list[dict]:
    """Validate object constraints; returns them as dicts with the kind filled in where implied."""
    if not 1 <= len(objects) <= len(recipe.positions):
        raise ValueError(f"a scene holds 1 to {len(recipe.positions)} objects (one per position), got {len(objects)}")
    requests = []
    for obj in objects:
        unknown = set(obj) - set(OBJECT_KEYS)
        if unknown:
            raise ValueError(f"unknown object keys {sorted(unknown)}; valid keys: {', '.join(OBJECT_KEYS)}")
        request = dict(obj)
        named_kinds = [kind for kind in KINDS if kind in request]
        if len(named_kinds) > 1:
            raise ValueError(f"an object is a shape or a glyph, not both: {obj}")
        if named_kinds and request.setdefault("kind", named_kinds[0]) != named_kinds[0]:
            raise ValueError(f"object {obj} names a {named_kinds[0]} but has kind {request['kind']!r}")
        for field in ("kind", "shape", "glyph", "colour", "position", "size"):
            if field in request:
                recipe.check(field, request[field])
        requests.append(request)
    positions = [r["position"] for r in requests if "position" in r]
    if len(positions) != len(set(positions)):
        raise ValueError(f"positions within a scene must be distinct, got {positions}")
    return requests


def _draw_layout(requests: list[dict], rng: np.random.Generator, size: int, recipe: Recipe) -> tuple[ObjectSpec, ...]:
    """Fill in every unconstrained attribute; redraw while random placements overlap too much."""
    positions = tuple(recipe.positions)
    taken = {r["position"] for r in requests if "position" in r}
    layout_is_fixed = all("position" in r and "size" in r for r in requests)
    for _ in range(_MAX_LAYOUT_ATTEMPTS):
        uniforms = rng.random((len(requests), 5))
        position_order = np.argsort(rng.random(len(positions)), kind="stable")
        free_positions = (positions[i] for i in position_order if positions[i] not in taken)
        specs = tuple(_draw_object(r, u, free_positions, recipe) for r, u in zip(requests, uniforms, strict=True))
        if layout_is_fixed or _footprints_apart(specs, size, recipe):
            return specs
    raise ValueError(
        f"no placement of {requests} keeps objects apart; give every object a position and size to draw overlaps"
    )


def _draw_object(request: dict, u: np.ndarray, free_positions: Iterator[str], recipe: Recipe) -> ObjectSpec:
    kind = request.get("kind") or ("glyph" if u[_KIND] < recipe.glyph_fraction else "shape")
    templates = recipe.templates[kind]
    template = request.get("template", int(u[_TEMPLATE] * len(templates)))
    if not (isinstance(template, (int, np.integer)) and 0 <= template < len(templates)):
        raise ValueError(f"template must be an index below {len(templates)} for a {kind}: {templates}")
    return ObjectSpec(
        kind=kind,
        name=request.get(kind) or _pick(recipe.glyphs if kind == "glyph" else recipe.shapes, u[_NAME]),
        colour=request.get("colour") or _pick(tuple(recipe.colours), u[_COLOUR]),
        position=request.get("position") or next(free_positions),
        size=request.get("size") or _pick(tuple(recipe.sizes), u[_SIZE]),
        template=int(template),
    )


def _pick(names: Sequence[str], uniform: float) -> str:
    return names[min(int(uniform * len(names)), len(names) - 1)]


def _placement(obj: ObjectSpec, size: int, recipe: Recipe) -> tuple[tuple[float, float], float]:
    """Centre (x, y) and radius in pixels of an object in a `size`-pixel image."""
    scale = size / recipe.image_size
    anchor = recipe.positions[obj.position].anchor
    return (anchor[0] * scale, anchor[1] * scale), recipe.sizes[obj.size] * scale


def _footprints_apart(specs: Sequence[ObjectSpec], size: int, recipe: Recipe) -> bool:
    """Whether no two drawn footprints share more than the allowed fraction of the smaller one.

    Footprints depend on kind, position and size, never on the shape, glyph or colour, so editing
    one of those keeps the layout.
    """
    boxes = [footprint(obj.kind, *_placement(obj, size, recipe)) for obj in specs]
    for a, b in combinations(boxes, 2):
        width = min(a[2], b[2]) - max(a[0], b[0])
        height = min(a[3], b[3]) - max(a[1], b[1])
        smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
        if width > 0 and height > 0 and width * height > recipe.max_footprint_overlap * smaller:
            return False
    return True


def _background_tone(rng: np.random.Generator, recipe: Recipe) -> str:
    """The background tone: the paint stream's first draw (so ``scene_layout`` knows it unpainted)."""
    return _pick(tuple(recipe.backgrounds), rng.random())


def _paint(
    specs: Sequence[ObjectSpec], rng: np.random.Generator, size: int, recipe: Recipe
) -> tuple[np.ndarray, np.ndarray, str]:
    """Paint objects over a noisy background in order; returns image, per-object masks, tone name."""
    background_name = _background_tone(rng, recipe)
    noise_draws = rng.random((size, size, 3))
    jitter_draws = rng.random((len(specs), 3))
    image = background(recipe.backgrounds[background_name], recipe.background_noise, noise_draws)

    jitter = recipe.colour_jitter
    owner = np.full((size, size), -1, dtype=np.int8)
    for index, (obj, jitter_draw) in enumerate(zip(specs, jitter_draws, strict=True)):
        centre, radius = _placement(obj, size, recipe)
        if obj.kind == "shape":
            drawn = shape_mask(obj.name, centre, radius, size)
        else:
            drawn = glyph_mask(obj.name, centre, radius, size)
        offset = np.floor(jitter_draw * (2 * jitter + 1)).astype(np.int16) - jitter
        image[drawn] = np.clip(np.asarray(recipe.colours[obj.colour], dtype=np.int16) + offset, 0, 255)
        owner[drawn] = index
    masks = owner[None, :, :] == np.arange(len(specs), dtype=np.int8)[:, None, None]
    return image, masks, background_name
