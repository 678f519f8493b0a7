"""Images for plotly widgets: PNG data URIs, and heatmap placement over an image.

A ``go.Image`` given ``z`` ships every pixel to the browser as a JSON list of numbers; given
``source`` (a PNG data URI) it ships a few kilobytes and the browser decodes it. Widgets update
images on every slider move, so they always use ``source``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_data_uri(image: np.ndarray) -> str:
    """An (H, W, 3) float image in [0, 1] (or uint8) as a ``data:image/png;base64,...`` string."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(image[..., :3]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid_placement(grid_shape: tuple[int, int], image_shape: tuple[int, int] | None) -> dict:
    """``x0, dx, y0, dy`` for a heatmap of ``grid_shape`` cells so that it covers an image of
    ``image_shape`` pixels exactly (an image's pixel i is centred at coordinate i, spanning
    i - 0.5 .. i + 0.5); without an image, one unit per cell."""
    rows, cols = grid_shape
    if image_shape is None:
        return dict(x0=0, dx=1, y0=0, dy=1)
    height, width = image_shape
    dy, dx = height / rows, width / cols
    return dict(x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy)
