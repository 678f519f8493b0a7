"""Image-similarity scores shared by every study: one PSNR and one masked SSIM.

Images are float arrays in [0, 1] shaped (..., H, W, 3); masks are boolean (..., H, W). These are
pure functions over arrays: no model runs here.
"""

from __future__ import annotations

import numpy as np
import torch


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None, cap: float | None = None) -> np.ndarray:
    """Per-image PSNR (dB) of ``a`` against ``b``, over the pixels ``where`` (all pixels if None).

    Identical images give infinity, or ``cap`` when one is given (studies that average PSNRs cap it,
    so one unchanged image cannot make a mean infinite)."""
    squared = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean(-1)
    if where is None:
        mse = squared.mean((-2, -1))
    else:
        where = np.asarray(where, dtype=bool)
        if where.shape[-2:] != squared.shape[-2:]:
            raise ValueError(f"mask of shape {where.shape} does not cover images of shape {np.shape(a)}: "
                             "give one boolean (..., H, W) mask per image")
        mse = (squared * where).sum((-2, -1)) / np.maximum(where.sum((-2, -1)), 1)
    with np.errstate(divide="ignore"):
        value = np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-300)), np.inf)
    return value if cap is None else np.minimum(value, cap)


def psnr_outside(images: np.ndarray, reference: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """PSNR (dB) over the pixels outside ``masks`` (..., H, W), per image; identical gives infinity."""
    return psnr(images, reference, ~np.asarray(masks, dtype=bool))


def ssim_outside(images: np.ndarray, reference: np.ndarray, masks: np.ndarray, window: int = 7) -> np.ndarray:
    """Mean SSIM (uniform ``window``, grey level, images in [0, 1]) over pixels outside ``masks``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float64).mean(-1))
    y = torch.as_tensor(np.asarray(reference, dtype=np.float64).mean(-1))
    keep = torch.as_tensor(~np.asarray(masks, dtype=bool))
    shape = x.shape
    x, y = x.reshape(-1, 1, *shape[-2:]), y.reshape(-1, 1, *shape[-2:]).expand_as(x.reshape(-1, 1, *shape[-2:]))
    keep = keep.reshape(-1, 1, *shape[-2:]).expand_as(x)

    def mean(t):
        return torch.nn.functional.avg_pool2d(t, window, stride=1, padding=window // 2, count_include_pad=False)

    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    score = (ssim * keep).sum((-2, -1)) / keep.sum((-2, -1)).clamp(min=1)
    return score.reshape(shape[:-2]).numpy()
