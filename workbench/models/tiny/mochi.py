"""Tiny Mochi 1 denoiser (``MochiTransformer3DModel``): asymmetric joint attention over
[video | T5 text], run one sample at a time over each sample's unpadded text tokens."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import T5_D_MODEL, TinyDenoiser
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_MOCHI: dict[str, Any] = dict(
    patch_size=2,  # spatial 2 x 2 patches, as released
    num_attention_heads=2,
    attention_head_dim=8,  # rotary over (frame, y, x) from learned frequencies: head_dim / 2 per axis
    num_layers=2,  # the last block is context_pre_only, as in the released 48
    pooled_projection_dim=16,  # the text stream's width (Mochi 1: 1536, video 3072)
    in_channels=4,  # Mochi 1: 12
    text_embed_dim=T5_D_MODEL,  # T5-v1.1-XXL: 4096; the caption attention pool has 8 heads of it
    time_embed_dim=16,
    max_sequence_length=8,
)


def _mochi_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    return dict(
        hidden_states=randn(b, cfg["in_channels"], VIDEO_FRAMES, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
        encoder_hidden_states=randn(b, text_len, cfg["text_embed_dim"]),
        timestep=t.long(),
        # every token kept here; tests/test_video.py pads some to reach the per-sample path's dropped tokens
        encoder_attention_mask=torch.ones(b, text_len, dtype=torch.long),
    )


DENOISERS = (TinyDenoiser("mochi", "MochiTransformer3DModel", _MOCHI, _mochi_inputs),)
