"""Attention maps scored as segmentation masks: pure functions over arrays (no model runs here).

A map becomes a mask by a threshold (Otsu's, or a fixed fraction of the map's range) and is scored
by IoU and pixel accuracy against a true mask. The study that records the maps, its baselines and
its selection on validation live in :mod:`workbench.studies.attention`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

#: "otsu", or a fraction of the map's range (min-max normalised) above which a pixel is the object
THRESHOLDS = ("otsu", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")
#: widths (pixels at the image size) of the position prior's Gaussian
SIGMAS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0)


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The threshold maximising the between-class variance of ``values``."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.cumsum()
    total = weight[-1]
    mean_below = np.cumsum(hist * centres) / np.maximum(weight, 1)
    mean_above = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between))])


def binarise(heat: np.ndarray, threshold: str) -> np.ndarray:
    """The mask of ``heat`` at one of ``THRESHOLDS``; a flat map selects nothing."""
    if threshold == "otsu":
        return heat > otsu_threshold(heat)
    low, high = float(heat.min()), float(heat.max())
    if high <= low:
        return np.zeros(heat.shape, dtype=bool)
    return (heat - low) / (high - low) > float(threshold)


def mask_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, pixel accuracy) of a boolean mask against the true one."""
    union = np.logical_or(predicted, truth).sum()
    iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
    return iou, float((predicted == truth).mean())


def score_mask(heat: np.ndarray, truth: np.ndarray, threshold: str = "otsu") -> tuple[float, float]:
    """(IoU, pixel accuracy) of ``heat`` thresholded at ``threshold`` against a boolean mask."""
    return mask_scores(binarise(heat, threshold), truth)


def threshold_scores(heat: np.ndarray, truth: np.ndarray, thresholds) -> np.ndarray:
    return np.array([score_mask(heat, truth, t) for t in thresholds])  # (threshold, 2)


def gaussian_map(anchors: list[tuple[float, float]], sigma: float, size: int) -> np.ndarray:
    """(size, size) sum of isotropic Gaussians of width ``sigma`` at pixel-centre anchors (x, y)."""
    centres = np.arange(size) + 0.5
    heat = np.zeros((size, size))
    for x, y in anchors:
        heat += np.exp(-((centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2) / (2 * sigma**2))
    return heat


def cell_means(scores: xr.Dataset) -> xr.Dataset:
    """Mean scores over objects per cell: what the saved results and heatmaps hold."""
    return scores.mean("object").assign_attrs(scores.attrs, objects=scores.sizes["object"])
