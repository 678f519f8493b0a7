"""Word maps to files a researcher can put in a paper or open without Python: one PNG map and one
overlay on the generated image per word (one GIF per word, a frame per video frame, for video
maps), and a ``metadata.json`` that says where they came from (versions, model, prompt, sites,
steps, heads and the settings of the call)."""

from __future__ import annotations

import json
import re
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image

# A perceptually ordered dark-blue -> green -> yellow ramp (five anchors, interpolated): dark is
# little attention, yellow is the most. Written here so that export needs no plotting library.
_RAMP = np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]])
EXPORT_PIXELS = 256  # side of the written images: the toy models' 8 x 8 maps are unreadable at 1:1
OVERLAY_ALPHA = 0.55  # weight of the map over the image in an overlay
_PACKAGES = ("workbench", "torch", "diffusers", "transformers", "numpy", "xarray")


def colourise(values: np.ndarray) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 colours, scaled to the map's own range (0 at its minimum)."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=float)
    position = scaled * (len(_RAMP) - 1)
    below = np.clip(np.floor(position).astype(int), 0, len(_RAMP) - 2)
    frac = (position - below)[..., None]
    return ((_RAMP[below] * (1 - frac) + _RAMP[below + 1] * frac) * 255).round().astype(np.uint8)


def _enlarge(rgb: np.ndarray, side: int = EXPORT_PIXELS) -> Image.Image:
    # Nearest: each latent cell stays a visible square rather than a blur that suggests more detail.
    return Image.fromarray(rgb).resize((side, side), Image.NEAREST)


def _overlay(map_rgb: np.ndarray, image: np.ndarray) -> Image.Image:
    base = _enlarge((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    return Image.blend(base.convert("RGB"), _enlarge(map_rgb), OVERLAY_ALPHA)


def _file_stem(word: str, index: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", word).strip("_") or "word"
    return f"{index:02d}_{safe}"  # the index keeps words that differ only in punctuation apart


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def export(maps: xr.DataArray, folder, image: np.ndarray | None = None, *, settings: dict | None = None) -> Path:
    """Write ``maps`` (from ``word_maps``: dims (word, y, x) or (word, frame, y, x)) to ``folder``.

    Per word: ``NN_word.png`` (the map, coloured from its minimum to its maximum) and, when
    ``image`` is given (the generated image, (H, W, 3) in [0, 1]; (frame, H, W, 3) for video),
    ``NN_word_overlay.png``. Video maps are written as ``NN_word.gif`` (and ``NN_word_overlay.gif``),
    one GIF frame per video frame. ``metadata.json`` holds the package versions, what the maps
    average (model, prompt, sites, steps, heads, branch, method: from ``maps.attrs``), the files
    written and ``settings`` (anything else worth keeping, e.g. the run's seed and step count).
    Returns the folder."""
    expected = [("word", "y", "x"), ("word", "frame", "y", "x")]
    if tuple(maps.dims) not in expected:
        raise ValueError(f"export takes word_maps(...) output with dims (word, y, x) or (word, frame, y, x); got {maps.dims}")
    video = "frame" in maps.dims
    if image is not None:
        image = np.asarray(image)
        wanted = (maps.sizes["frame"],) if video else ()
        if image.ndim != len(wanted) + 3 or image.shape[:len(wanted)] != wanted or image.shape[-1] != 3:
            raise ValueError(f"image must be {'(frame, H, W, 3) with ' + str(wanted[0]) + ' frames' if video else '(H, W, 3)'} "
                             f"in [0, 1]; got shape {image.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    for index, word in enumerate(maps.word.values.tolist()):
        stem = _file_stem(str(word), index)
        values = maps.sel(word=word).values
        written = []
        if video:
            coloured = [colourise(frame) for frame in values]
            pictures = {f"{stem}.gif": [_enlarge(c) for c in coloured]}
            if image is not None:
                pictures[f"{stem}_overlay.gif"] = [_overlay(c, img) for c, img in zip(coloured, image)]
            for name, frames in pictures.items():
                frames[0].save(folder / name, save_all=True, append_images=frames[1:], duration=250, loop=0)
                written.append(name)
        else:
            coloured = colourise(values)
            _enlarge(coloured).save(folder / f"{stem}.png")
            written.append(f"{stem}.png")
            if image is not None:
                _overlay(coloured, image).save(folder / f"{stem}_overlay.png")
                written.append(f"{stem}_overlay.png")
        files[str(word)] = written
    meta = {
        "versions": _versions(),
        "model": maps.attrs.get("model", ""),
        "prompt": maps.attrs.get("prompt", ""),
        "sample": maps.attrs.get("sample"),
        "sites": list(maps.attrs.get("sites", [])),
        "steps": maps.attrs.get("steps"),
        "heads": maps.attrs.get("heads"),
        "branch": maps.attrs.get("branch"),
        "method": maps.attrs.get("method"),
        "grid": {dim: int(maps.sizes[dim]) for dim in maps.dims if dim != "word"},
        "colours": "each map scaled from its own minimum (dark) to its maximum (yellow)",
        "files": files,
        "settings": dict(settings or {}),
    }
    (folder / "metadata.json").write_text(json.dumps(_plain(meta), indent=2))
    return folder


def _plain(value):
    """numpy scalars and arrays in attrs -> JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
