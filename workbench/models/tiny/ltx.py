"""Tiny LTX-Video denoiser (``LTXVideoTransformer3DModel``, 0.9.x): tokens packed by the caller
(patch 1 x 1 x 1 as released), video self-attention, masked cross-attention to T5 text."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import T5_D_MODEL, TinyDenoiser
from ._video import VIDEO_TOKEN_GRID

_LTX: dict[str, Any] = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=16,
    cross_attention_dim=32,  # = inner dim
    num_layers=2,
    caption_channels=T5_D_MODEL,  # T5-v1.1-XXL: 4096
)


def _ltx_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    frames, height, width = VIDEO_TOKEN_GRID
    # every text token is real; a caller tests padding by zeroing the end of the mask, as the
    # pipeline's T5 mask does
    mask = torch.ones(b, text_len, dtype=torch.long)
    return dict(
        hidden_states=randn(b, frames * height * width, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["caption_channels"]),
        timestep=t.long(),
        encoder_attention_mask=mask,
        num_frames=frames,
        height=height,
        width=width,
    )


DENOISERS = (TinyDenoiser("ltx", "LTXVideoTransformer3DModel", _LTX, _ltx_inputs),)
