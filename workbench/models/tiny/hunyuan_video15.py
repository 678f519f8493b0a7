"""Tiny HunyuanVideo 1.5 denoiser (``HunyuanVideo15Transformer3DModel``): joint
attention over [video | image, byT5, MLLM context] tokens, patch 1 x 1 x 1 as released."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import TinyDenoiser
from ._video import VIDEO_TOKEN_GRID

_HUNYUAN_VIDEO15: dict[str, Any] = dict(
    in_channels=9,  # latent 4 + image-condition latent 4 + its mask 1 (released: 32 + 32 + 1)
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    patch_size=1,
    patch_size_t=1,
    text_embed_dim=32,  # Qwen2.5-VL hidden: 3584
    text_embed_2_dim=16,  # byT5 hidden: 1472
    image_embed_dim=16,  # SigLIP: 1152
    rope_axes_dim=(4, 6, 6),  # frame, y, x: sums to attention_head_dim
    target_size=64,
    task_type="t2v",
)
#: byT5 glyph tokens and image-condition tokens of the tiny context
BYT5_LEN, IMAGE_TOKENS = 4, 5


def _hunyuan_video15_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    frames, height, width = VIDEO_TOKEN_GRID
    return dict(
        hidden_states=randn(b, cfg["in_channels"], frames, height, width),
        timestep=t,
        encoder_hidden_states=randn(b, text_len, cfg["text_embed_dim"]),
        encoder_attention_mask=torch.ones(b, text_len),
        encoder_hidden_states_2=randn(b, BYT5_LEN, cfg["text_embed_2_dim"]),
        encoder_attention_mask_2=torch.ones(b, BYT5_LEN),
        # image-conditioning tokens, all valid; zeros would mean text-to-video, whose image tokens the
        # denoiser masks out of the attention (tests pass zeros to check that path)
        image_embeds=randn(b, IMAGE_TOKENS, cfg["image_embed_dim"]),
    )


DENOISERS = (TinyDenoiser("hunyuan_video15", "HunyuanVideo15Transformer3DModel", _HUNYUAN_VIDEO15, _hunyuan_video15_inputs),)
