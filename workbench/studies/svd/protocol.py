"""The SVD study's protocol: attribute pairs (prompt B differs from prompt A in one attribute,
same position, template and noise seed) in separate seed streams for validation, test and
calibration; how the judge reads an edit (success, other attributes preserved, background PSNR);
the settings each editing method is selected over on validation.
"""

from __future__ import annotations

import numpy as np

from ...analysis.metrics import psnr
from ...data import make_scene
from ...data.recipe import default_recipe
from ...models.judge import CROP
from ..attention.editing import foreground


ATTRIBUTES = ("colour", "shape", "size", "glyph")


FIELD = {"colour": "colour", "shape": "name", "glyph": "name", "size": "size"}


READ_FIELDS = ("colour", "name", "size")


SWAP_CONDITIONS = (("per_channel", "values"), ("per_channel", "vectors"), ("channels", "values"),
                   ("channels", "vectors"), ("whole", "latent"))


STREAMS = {"validation": 11, "test": 12, "calibration": 13}


# -- pairs and readings ---------------------------------------------------------------------------
def attribute_pairs(attribute: str, n: int, split: str) -> list[dict]:
    """``n`` rendered scene pairs (A, B) that differ in ``attribute`` only."""
    recipe = default_recipe()
    rng = np.random.default_rng([STREAMS[split], ATTRIBUTES.index(attribute)])
    pairs = []
    for i in range(n):
        seed = (STREAMS[split], ATTRIBUTES.index(attribute), i)
        kind = "glyph" if attribute == "glyph" else "shape" if attribute == "shape" else str(rng.choice(["shape", "glyph"]))
        request = {"kind": kind}
        if attribute == "size":
            request["template"] = 1  # the template that says the size
        a = make_scene([request], seed=seed)
        obj = a.objects[0]
        spec = {"kind": obj.kind, obj.kind: obj.name, "colour": obj.colour, "position": obj.position, "size": obj.size,
                "template": obj.template}
        key = {"colour": "colour", "shape": "shape", "glyph": "glyph", "size": "size"}[attribute]
        vocabulary = recipe.vocabulary(key)
        current = spec[key]
        spec[key] = str(rng.choice([v for v in vocabulary if v != current]))
        b = make_scene([spec], seed=seed)
        assert b.objects[0].position == obj.position and b.objects[0].size == spec["size"]
        truth = lambda o: {"colour": o.colour, "name": o.name, "size": o.size}  # noqa: E731
        pairs.append({"source": a.caption, "target": b.caption, "attribute": attribute, "position": obj.position,
                      "truth_source": truth(obj), "truth_target": truth(b.objects[0]),
                      "image_source": a.image, "image_target": b.image, "mask": a.masks.any(0) | b.masks.any(0),
                      "spans_source": dict(a.spans[0]), "spans_target": dict(b.spans[0])})
    return pairs


def object_area(images: np.ndarray, positions: list[str]) -> np.ndarray:
    """Foreground pixels in the judge's crop around each image's object anchor."""
    recipe = default_recipe()
    fg = foreground(images)
    areas = []
    for mask, position in zip(fg, positions):
        x, y = (int(round(c)) for c in recipe.positions[position].anchor)
        h = CROP // 2
        areas.append(mask[max(0, y - h):y + h, max(0, x - h):x + h].sum())
    return np.array(areas)


def calibrate_size(n: int = 400) -> tuple[float, float]:
    """The area threshold between small and large objects, chosen on rendered scenes (a stream of
    its own), and its accuracy there: the judge reads names and colours, not sizes."""
    scenes = [make_scene([{}], seed=(STREAMS["calibration"], i)) for i in range(n)]
    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255
    areas = object_area(images, [s.objects[0].position for s in scenes])
    large = np.array([s.objects[0].size == "large" for s in scenes])
    candidates = np.unique(areas) + 0.5
    accuracy = [((areas >= c) == large).mean() for c in candidates]
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


class Reader:
    """Colour and name from the judge at the pair's position; size from the foreground area."""

    def __init__(self, judge, size_threshold: float):
        self.judge, self.size_threshold = judge, size_threshold

    def __call__(self, images: np.ndarray, positions: list[str]) -> dict[str, np.ndarray]:
        verdict = self.judge.judge(np.asarray(images, dtype=np.float32))
        idx = range(len(positions))
        return {"colour": np.array([verdict["colour"][p][i] for i, p in zip(idx, positions)]),
                "name": np.array([verdict["name"][p][i] for i, p in zip(idx, positions)]),
                "size": np.where(object_area(images, positions) >= self.size_threshold, "large", "small")}


def edit_scores(readings: dict, source_readings: dict, pairs: list[dict], edits: np.ndarray,
                sources: np.ndarray) -> dict:
    """Attribute success (the edit reads as the target's truth), other attributes preserved (read
    as in the source image) and background PSNR against the source, outside both objects' true
    masks (dilated by 2 px for the generator's blur and jitter)."""
    attribute = pairs[0]["attribute"]
    field = FIELD[attribute]
    target = np.array([p["truth_target"][field] for p in pairs])
    success = readings[field] == target
    others = [f for f in READ_FIELDS if f != field]
    preserved = np.all([readings[f] == source_readings[f] for f in others], axis=0)
    masks = np.stack([_dilate(p["mask"], 2) for p in pairs])
    background = psnr(edits, sources, ~masks)
    return {"success": success, "preserved": preserved, "background_psnr": background}


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def summarise(scores: dict) -> dict:
    return {"success": float(np.mean(scores["success"])), "preserved": float(np.mean(scores["preserved"])),
            "success_and_preserved": float(np.mean(scores["success"] & scores["preserved"])),
            "background_psnr": float(np.mean(scores["background_psnr"])), "n": int(len(scores["success"]))}


GRID = {"svd-edit": [{"step": k, "rank": r} for k in (1, 2, 3, 5) for r in (1, 4, 8)],
        "slerp": [{"step": k} for k in (1, 2, 3, 5)],
        "sdedit": [{"step": k} for k in (1, 2, 3, 5, 7)],
        "kv-patch": [{"step": k} for k in (0, 1, 2, 3, 5, 7)]}  # step: the first patched step


LATENT_METHODS = ("svd-edit", "slerp", "sdedit")  # method_images: edits of the recorded trajectories


KV = "kv-patch"  # text K/V of the attribute prompt at every text layer (runs.text_kv_edits)


METHODS = ("prompt-swap", "svd-edit", "slerp", "sdedit", "attention-reuse", KV)


def saved_setting(settings: dict, key: str):
    """A saved run's setting ``key`` (runs before a setting existed are read as they ran)."""
    if key == "swap_pairs" and "swap_pairs" not in settings:  # before --swap-pairs: P2 used every property pair
        return settings.get("prop_pairs")
    return settings.get(key)
