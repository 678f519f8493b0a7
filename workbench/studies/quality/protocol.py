"""The quality study's protocol: the judged prompt families (single objects, glyphs, two objects,
and the held-out triples), how the judge's verdict scores them, the seeds quality is reported on
(test) and chosen on (validation), and the targets. The skip and caching studies score with the same
families.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...data import make_scene
from ...data.holdout import held_out_combinations, held_out_glyphs, held_out_shapes
from ...data.recipe import default_recipe
from ...models.judge import NONE


TEST_SEEDS = (0, 1)  # what quality is reported on


VALIDATION_SEED = 7  # what candidate weights are chosen on


def prompt_families(n: int = 200, seed: int = 0, n_held_out: int | None = None) -> dict[str, list[tuple[str, list[dict]]]]:
    """Family -> list of (caption, objects), each object a dict(name, colour, position)."""
    recipe = default_recipe()
    rng = np.random.default_rng(seed)
    positions, colours = list(recipe.positions), list(recipe.colours)
    held_out = held_out_combinations()

    def caption(objects: list[dict]) -> str:
        specs = [{("glyph" if o["name"] in recipe.glyphs else "shape"): o["name"], "colour": o["colour"],
                  "position": o["position"], "template": 0} for o in objects]
        return make_scene(specs, seed=0).caption

    def take(triples: list[tuple[str, str, str]], count: int) -> list[dict]:
        """``count`` triples in a seeded order, cycling when there are fewer."""
        order = rng.permutation(len(triples))
        return [dict(zip(("name", "colour", "position"), triples[order[i % len(triples)]], strict=True))
                for i in range(count)]

    trained = lambda names: [t for t in itertools.product(names, colours, positions) if t not in held_out]  # noqa: E731
    single = take(trained(recipe.shapes), n)
    glyph = take(trained(recipe.glyphs), n)
    names = list(recipe.shapes) + list(recipe.glyphs)
    two = []
    while len(two) < n:  # pairs of trained triples (held-out ones are their own family)
        p1, p2 = rng.choice(len(positions), size=2, replace=False)
        pair = [dict(name=names[rng.integers(len(names))], colour=colours[rng.integers(len(colours))],
                     position=positions[p]) for p in (p1, p2)]
        if not any((o["name"], o["colour"], o["position"]) in held_out for o in pair):
            two.append(pair)
    n_held_out = n if n_held_out is None else n_held_out
    families = {
        "single": [(caption([o]), [o]) for o in single],
        "glyph": [(caption([o]), [o]) for o in glyph],
        "two": [(caption(objs), objs) for objs in two],
    }
    if n_held_out > 0:
        families["single_held_out"] = [(caption([o]), [o]) for o in take(list(held_out_shapes()), n_held_out)]
        families["glyph_held_out"] = [(caption([o]), [o]) for o in take(list(held_out_glyphs()), n_held_out)]
    return families


def single_and_glyph_captions(n: int, seed: int = 0) -> list[str]:
    """The first ``n // 2`` captions of the single-object family, then the first ``n // 2`` of the glyph
    family (prompt stream ``seed``): the prompts the peers' methods are measured on (DAAM in
    ``attention/daam.py``, T-GATE and DeepCache in ``skips/peers.py``)."""
    families = prompt_families(n, seed=seed)
    return [caption for family in ("single", "glyph") for caption, _ in families[family][: n // 2]]


def score(family: str, objects: list[list[dict]], verdict: dict) -> dict:
    """Per-family rates from the judge's verdict on images generated for ``objects``."""
    family = family.removesuffix("_held_out")  # scored like the in-distribution family
    positions = list(verdict["name"])
    at_pos, anywhere, name_ok, colour_ok, position_ok, objects_ok = [], [], [], [], [], []
    for i, objs in enumerate(objects):
        right = []
        for o in objs:
            seen = [(verdict["name"][p][i], verdict["colour"][p][i]) for p in positions]
            here = (verdict["name"][o["position"]][i], verdict["colour"][o["position"]][i])
            right.append(here == (o["name"], o["colour"]))
            if family != "two":
                anywhere.append((o["name"], o["colour"]) in seen if family == "single"
                                else any(n == o["name"] for n, _ in seen))
                name_ok.append(any(n == o["name"] for n, _ in seen))
                colour_ok.append(any(n != NONE and c == o["colour"] for n, c in seen))
                position_ok.append(here[0] != NONE)
                at_pos.append(here == (o["name"], o["colour"]) if family == "single" else here[0] == o["name"])
        objects_ok.extend(right)
        if family == "two":
            at_pos.append(all(right))
    pct = lambda v: round(100 * float(np.mean(v)), 1)  # noqa: E731
    if family == "two":
        return {"both_right_at_positions": pct(at_pos), "objects_right_at_position": pct(objects_ok), "n": len(objects)}
    key = "shape_and_colour" if family == "single" else "glyph"
    return {key: pct(anywhere), f"{key}_at_position": pct(at_pos), "name": pct(name_ok), "colour": pct(colour_ok),
            "object_at_position": pct(position_ok), "n": len(objects)}


#: Issue 9's targets: (family, rate) -> percent.
TARGETS = {("single", "shape_and_colour"): 97.0, ("glyph", "glyph"): 90.0, ("two", "both_right_at_positions"): 60.0}


def validation_score(result: dict) -> float:
    """The mean of the target rates, in percent: candidate weights are chosen by it, on the
    validation seed (``select_weights``)."""
    return sum(result[family][rate] for family, rate in TARGETS) / len(TARGETS)
