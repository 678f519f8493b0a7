"""Tiny Chroma (``ChromaTransformer2DModel``, ``ChromaPipeline``): FLUX.1-schnell's blocks with the
per-block modulation replaced by one small "approximator" network, a T5 text encoder only, a
text attention mask, and real classifier-free guidance run as two calls per step."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import LATENT_SIZE, SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, t5_encoder
from .flux import packed_image_ids, small_default_sample_size

_CHROMA: dict[str, Any] = dict(
    patch_size=1,
    in_channels=64,  # 16 latent channels x 2 x 2, as FLUX.1
    num_layers=1,  # double-stream blocks (Chroma: 19)
    num_single_layers=1,  # single-stream blocks (Chroma: 38)
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=T5_D_MODEL,
    axes_dims_rope=(4, 6, 6),
    approximator_num_channels=16,  # Chroma: 64
    approximator_hidden_dim=32,  # Chroma: 5120
    approximator_layers=1,  # Chroma: 5
)

_TEXT_LEN = 16  # max_sequence_length (Chroma: 512)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    h = w = LATENT_SIZE // 2
    return dict(
        hidden_states=randn(b, h * w, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        timestep=t / 1000.0,
        img_ids=packed_image_ids(h, w),
        txt_ids=torch.zeros(text_len, 3),
        # [text | image] key mask as the pipeline builds it (every token kept here).
        attention_mask=torch.ones(b, text_len + h * w, dtype=torch.bool),
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer

    tokenizer = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale, max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("chroma", "ChromaTransformer2DModel", _CHROMA, _inputs),)
PIPELINES = (
    TinyPipeline("chroma", "ChromaPipeline", "chroma", _components, vae="flux", call_kwargs=_call,
                 finish=small_default_sample_size),
)
