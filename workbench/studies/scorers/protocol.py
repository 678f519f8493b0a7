"""The scorer checks' protocol: the images each scorer is checked on, none of them drawn by what is
checked. For the judge: images outside the shapes world (noise, blanks, stripes, checkerboards,
gradients) and single-object test-split prompts; its baselines are two readings that share nothing
with it (a second judge, the nearest-template reader) and the prompt itself. For the OCR reader:
texts rendered with system TrueType fonts (the project draws its own glyphs from a 5x7 bitmap and
never with these) in two conditions, clean and degraded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ...data import default_recipe, make_scene
from ...models.judge import NONE


# -- the judge ------------------------------------------------------------------------------------
def outside_world(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Images (n, 32, 32, 3) in [0, 1] that hold no shapes-world object."""
    rng = np.random.default_rng(seed)
    tones = np.array(list(default_recipe().backgrounds.values()), dtype=float)
    x = np.arange(32)
    period = rng.integers(2, 8, (n, 1, 1))
    colour_a, colour_b = rng.random((n, 1, 1, 3)), rng.random((n, 1, 1, 3))
    stripes = np.broadcast_to(np.where(((x[None, None, :] // period) % 2 == 0)[..., None], colour_a, colour_b),
                              (n, 32, 32, 3)).copy()
    checks = np.where((((x[None, :, None] // period) + (x[None, None, :] // period)) % 2 == 0)[..., None],
                      colour_a, colour_b)
    ramp = np.linspace(0, 1, 32)
    gradients = np.clip(colour_a * ramp[None, None, :, None] + colour_b * ramp[None, :, None, None], 0, 1)
    return {
        "uniform noise": rng.random((n, 32, 32, 3)),
        "gaussian noise": np.clip(0.5 + 0.25 * rng.standard_normal((n, 32, 32, 3)), 0, 1),
        "blank, random colour": np.broadcast_to(rng.random((n, 1, 1, 3)), (n, 32, 32, 3)).copy(),
        "blank, shapes-world background": np.clip((tones[rng.integers(0, len(tones), n)][:, None, None, :]
                                                   + rng.integers(-6, 7, (n, 32, 32, 3))) / 255, 0, 1),
        "stripes": stripes,
        "checkerboard": checks,
        "gradients": gradients,
    }


def single_prompts(n: int, seed: int = 0) -> list[dict]:
    """One-object scenes of the test split's kind (shapes and glyphs), for prompts."""
    out = []
    for i in range(n):
        scene = make_scene(objects=[{}], seed=(seed, 2, 50_000 + i))
        obj = scene.objects[0]
        out.append({"prompt": scene.caption, "name": obj.name, "colour": obj.colour, "position": obj.position,
                    "kind": obj.kind})
    return out


def agreement(prompts, read: dict[str, tuple[list[str], list[str]]]) -> dict:
    out = {"vs prompt": {}, "disagreement": {}}
    for reader, (names, colours) in read.items():
        out["vs prompt"][reader] = {
            "name": float(np.mean([n == p["name"] for n, p in zip(names, prompts)])),
            "colour": float(np.mean([c == p["colour"] for c, p in zip(colours, prompts)])),
            "both": float(np.mean([n == p["name"] and c == p["colour"] for n, c, p in zip(names, colours, prompts)])),
        }
    readers = list(read)
    for i, a in enumerate(readers):
        for b in readers[i + 1:]:
            (na, ca), (nb, cb) = read[a], read[b]
            name = np.array([x != y for x, y in zip(na, nb)])
            # colour only compared where both name an object: "none" has no colour
            both = np.array([x != NONE and y != NONE for x, y in zip(na, nb)])
            colour = np.array([x != y for x, y in zip(ca, cb)])[both]
            out["disagreement"][f"{a} vs {b}"] = {"name": float(name.mean()),
                                                   "colour": float(colour.mean()) if len(colour) else None,
                                                   "verdict": float(np.mean(name | np.array([x != y for x, y in zip(ca, cb)]) & both))}
    return out


# -- the OCR reader -------------------------------------------------------------------------------
FONTS = {
    "DejaVu Serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "DejaVu Sans Mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "DejaVu Sans Bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
}
SIZES = (8, 10, 12, 16, 24, 32)
KINDS = ("upper word", "lower word", "number", "code")
CANVAS = 256
WORDS = ("apple bread chair dance eagle flame grape house island jelly knife lemon magic night ocean piano "
         "queen river stone tiger umbrella violin water yellow zebra cat dog sun map pen cup box key tree "
         "bird fish rain snow wind gold salt milk rock ship door road lamp ring star moon cloud green "
         "smile train plant light sound").split()
CONDITION_NOTES = {"clean": "flat background, full contrast",
                   "degraded": "low contrast, background gradient, 1 px blur, pixel noise sd 0.06"}


def text_of(kind: str, rng: np.random.Generator) -> str:
    if kind == "upper word":
        return str(rng.choice(WORDS)).upper()
    if kind == "lower word":
        return str(rng.choice(WORDS))
    if kind == "number":
        return str(rng.integers(100, 100_000))
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: a code's I/1 and O/0 are ambiguous to any reader
    digits = "23456789"
    n = int(rng.integers(4, 7))
    chars = [str(rng.choice(list(letters))) for _ in range(n)]
    for i in rng.choice(n, size=max(1, n // 2), replace=False):
        chars[i] = str(rng.choice(list(digits)))
    return "".join(chars)


def render(text: str, font_path: str, size: int, rng: np.random.Generator, condition: str = "clean") -> np.ndarray:
    font = ImageFont.truetype(font_path, size)
    dark = bool(rng.integers(2))
    if condition == "clean":
        background = tuple(int(v) for v in (rng.integers(0, 70, 3) if dark else rng.integers(185, 256, 3)))
        ink = tuple(int(v) for v in (rng.integers(185, 256, 3) if dark else rng.integers(0, 70, 3)))
    else:  # low contrast: about 90 grey levels between ink and background instead of 115-255
        background = tuple(int(v) for v in (rng.integers(40, 90, 3) if dark else rng.integers(150, 200, 3)))
        ink = tuple(int(v) for v in (np.array(background) + (90 if dark else -90)))
    image = Image.new("RGB", (CANVAS, CANVAS), background)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = int(rng.integers(4, max(5, CANVAS - (right - left) - 4))) - left
    y = int(rng.integers(4, max(5, CANVAS - (bottom - top) - 4))) - top
    draw.text((x, y), text, font=font, fill=ink)
    if condition == "clean":
        return np.asarray(image, dtype=np.float32) / 255
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) / 255
    ramp = np.linspace(-0.12, 0.12, CANVAS, dtype=np.float32)
    pixels = pixels + (ramp[None, :, None] if rng.integers(2) else ramp[:, None, None])
    pixels = pixels + rng.normal(0, 0.06, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 1)
