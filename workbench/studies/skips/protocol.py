"""The skip-connection study's protocol: the prompts the spectra and dynamics are recorded on, the
judged prompt families FreeU is scored on (the quality study's, :mod:`..quality.protocol`), the
validation and test streams, the rule that picks a FreeU cell on validation, and the baseline it
is reported against: the plain model (b = s = 1), scored on the same test prompts and noise.
The feature-reuse (caching) benchmark scores its variants with the same families.
"""

from __future__ import annotations

from ..quality.protocol import prompt_families, score

#: judged family -> the accuracy (``quality.protocol.score``'s key) it is scored by
FAMILIES = {"single": "shape_and_colour", "glyph": "glyph"}

#: prompt stream and first noise seed of each split: the FreeU grid is scored on validation, and
#: only the baseline and the cell chosen there on test
SPLITS = {"validation": {"prompts_seed": 1, "noise_seed": 1000}, "test": {"prompts_seed": 0, "noise_seed": 0}}

#: the FreeU grid's cell that is the plain model: the baseline, never a candidate
PLAIN = "b=1.0,s=1.0"


def recorded_prompts(n: int, seed: int = 1) -> list[str]:
    """The prompts spectra and dynamics are recorded on: half single objects, half glyphs (the
    quality benchmark's phrasing)."""
    families = prompt_families(max(n, 2), seed=seed)
    return [c for c, _ in families["single"][: (n + 1) // 2]] + [c for c, _ in families["glyph"][: n // 2]]


def judged_prompts(n: int, split: str) -> dict:
    """The judged families (``FAMILIES``) of ``split``: family -> [(caption, objects)]."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    families = prompt_families(n, seed=SPLITS[split]["prompts_seed"])
    return {family: families[family] for family in FAMILIES}


def cell(b: float, s: float) -> str:
    """A FreeU grid cell's name (b1 = b2 = b, s1 = s2 = s)."""
    return f"b={float(b)},s={float(s)}"


def cell_factors(name: str) -> tuple[float, float]:
    """(b, s) of a cell name."""
    b, s = (float(part.split("=")[1]) for part in name.split(","))
    return b, s


def accuracies(family_items: dict, verdicts: dict) -> dict:
    """Each judged family's accuracy (percent): ``family_items`` family -> [(caption, objects)],
    ``verdicts`` family -> the judge's verdict on its images."""
    return {key: score(family, [objects for _, objects in family_items[family]], verdicts[family])[key]
            for family, key in FAMILIES.items()}


def select_on_validation(validation: dict[str, dict]) -> tuple[str, list[str]]:
    """The best FreeU cell by the mean of the two accuracies on validation (the plain model is the
    baseline, not a candidate; ties go to the first cell in grid order), and every cell tied with it."""
    mean = {k: (v["shape_and_colour"] + v["glyph"]) / 2 for k, v in validation.items() if k != PLAIN}
    if not mean:
        raise ValueError("the FreeU grid has no cell besides the plain model (b = s = 1) to choose from")
    best = max(mean, key=mean.get)
    return best, [k for k, v in mean.items() if v == mean[best]]
