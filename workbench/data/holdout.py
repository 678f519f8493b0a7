"""Held-out object combinations: (name, colour, position) triples that training never draws.

The quality benchmark asks for every shape x colour x position combination; a model that scores
well there may have memorised each combination rather than composed shape, colour and position.
So a fixed set of combinations is removed from training (from training round 5 on, see
``docs/reference_models.md``) and the benchmark reports them as a family of their own.

The set is chosen so that every *pair* of its attributes still occurs in training: no two
held-out triples share a (name, colour), (name, position) or (colour, position) pair. A held-out
"red circle on the left" therefore has trained "red circle"s (elsewhere), trained circles "on the
left" (in other colours) and trained red objects "on the left" (other names); only the triple is
new.

Example:
    >>> combos = held_out_combinations()
    >>> len(held_out_shapes()), len(held_out_glyphs())
    (20, 40)
    >>> is_held_out("circle", "red", "left") == (("circle", "red", "left") in combos)
    True
"""

from __future__ import annotations

import itertools

import numpy as np

from workbench.data.recipe import Recipe, default_recipe

__all__ = ["HELD_OUT_SEED", "held_out_combinations", "held_out_shapes", "held_out_glyphs", "is_held_out"]

HELD_OUT_SEED = 20_261_124  # fixed forever: changing it changes what "held out" means for trained weights
_SHAPE_SHARE = 0.10  # 20 of the 200 shape x colour x position triples
_GLYPH_SHARE = 0.05  # 40 of the 800 glyph x colour x position triples

Combination = tuple[str, str, str]  # (shape or glyph, colour, position)


def _choose(names: tuple[str, ...], recipe: Recipe, share: float, stream: int) -> tuple[Combination, ...]:
    """Greedy pick in a seeded random order: accept a triple only if none of its pairs is taken."""
    triples = list(itertools.product(names, recipe.colours, recipe.positions))
    order = np.random.default_rng((HELD_OUT_SEED, stream)).permutation(len(triples))
    wanted = round(share * len(triples))
    chosen: list[Combination] = []
    pairs: set[tuple] = set()
    for i in order:
        name, colour, position = triples[i]
        keys = {("nc", name, colour), ("np", name, position), ("cp", colour, position)}
        if keys & pairs:
            continue
        chosen.append(triples[i])
        pairs |= keys
        if len(chosen) == wanted:
            return tuple(sorted(chosen))
    raise ValueError(f"cannot hold out {wanted} triples without repeating a pair; lower the share")


def held_out_shapes(recipe: Recipe | None = None) -> tuple[Combination, ...]:
    """The held-out (shape, colour, position) triples."""
    return _held_out(recipe or default_recipe())[0]


def held_out_glyphs(recipe: Recipe | None = None) -> tuple[Combination, ...]:
    """The held-out (glyph, colour, position) triples."""
    return _held_out(recipe or default_recipe())[1]


def held_out_combinations(recipe: Recipe | None = None) -> frozenset[Combination]:
    """Every held-out triple, shapes and glyphs."""
    return _held_out(recipe or default_recipe())[2]


_CACHE: dict[int, tuple] = {}  # id(recipe) -> (shapes, glyphs, both); recipes are immutable


def _held_out(recipe: Recipe) -> tuple[tuple[Combination, ...], tuple[Combination, ...], frozenset[Combination]]:
    if id(recipe) not in _CACHE:  # sampled per training scene: compute once
        shapes = _choose(tuple(recipe.shapes), recipe, _SHAPE_SHARE, stream=0)
        glyphs = _choose(tuple(recipe.glyphs), recipe, _GLYPH_SHARE, stream=1)
        _CACHE[id(recipe)] = (shapes, glyphs, frozenset(shapes + glyphs), recipe)
    return _CACHE[id(recipe)][:3]


def is_held_out(name: str, colour: str, position: str, recipe: Recipe | None = None) -> bool:
    """Whether training (round 5 on) never draws ``name`` in ``colour`` at ``position``."""
    return (name, colour, position) in held_out_combinations(recipe)
