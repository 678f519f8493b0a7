"""Tiny CogVideoX denoiser (``CogVideoXTransformer3DModel``, 1.0 layout: sin-cos positions, no
temporal patching): joint attention over [text | video] tokens."""

from __future__ import annotations

from typing import Any

from ._parts import T5_D_MODEL, TinyDenoiser
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_COGVIDEOX: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=16,
    text_embed_dim=T5_D_MODEL,  # T5-v1.1-XXL: 4096
    num_layers=2,
    sample_width=VIDEO_LATENT_SIZE,
    sample_height=VIDEO_LATENT_SIZE,
    # pixel frames whose latent has VIDEO_FRAMES frames: (frames - 1) // compression + 1
    sample_frames=(VIDEO_FRAMES - 1) * 4 + 1,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=8,  # the sin-cos table covers this many text positions
)


def _cogvideox_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    return dict(
        hidden_states=randn(b, VIDEO_FRAMES, cfg["in_channels"], VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
        encoder_hidden_states=randn(b, text_len, cfg["text_embed_dim"]),
        timestep=t.long(),
    )


DENOISERS = (TinyDenoiser("cogvideox", "CogVideoXTransformer3DModel", _COGVIDEOX, _cogvideox_inputs),)
