"""Tiny Wan 2.1/2.2 text-to-video denoiser (``WanTransformer3DModel``): video self-attention with
(frame, y, x) rotary positions, cross-attention to umT5 text."""

from __future__ import annotations

from typing import Any

from ._parts import T5_D_MODEL, TinyDenoiser
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_WAN: dict[str, Any] = dict(
    patch_size=(1, 2, 2),  # as released: no temporal patching
    num_attention_heads=2,
    attention_head_dim=12,  # rotary split as released: 4 dims (frame), 4 (y), 4 (x)
    in_channels=4,
    out_channels=4,
    text_dim=T5_D_MODEL,  # umT5-XXL: 4096
    freq_dim=16,
    ffn_dim=48,
    num_layers=2,
    rope_max_seq_len=32,
)


def _wan_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    return dict(
        hidden_states=randn(b, cfg["in_channels"], VIDEO_FRAMES, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
        timestep=t.long(),
        encoder_hidden_states=randn(b, text_len, cfg["text_dim"]),
    )


DENOISERS = (TinyDenoiser("wan", "WanTransformer3DModel", _WAN, _wan_inputs),)
