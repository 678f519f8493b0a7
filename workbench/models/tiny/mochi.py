"""Tiny Mochi 1 denoiser (``MochiTransformer3DModel``): asymmetric joint attention over
[video | T5 text], run one sample at a time over each sample's unpadded text tokens; and its
pipeline (``MochiPipeline``) with a tiny T5 encoder, a real T5 tokenizer and a tiny
``AutoencoderKLMochi`` (12 latent channels, 8x spatial and 6x temporal, as the pipeline hard-codes:
13 frames of 32 x 32 px are 3 latent frames of 4 x 4, 2 x 2 tokens each)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, build_seeded
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_MOCHI: dict[str, Any] = dict(
    patch_size=2,  # spatial 2 x 2 patches, as released
    num_attention_heads=2,
    attention_head_dim=8,  # rotary over (frame, y, x) from learned frequencies: head_dim / 2 per axis
    num_layers=2,  # the last block is context_pre_only, as in the released 48
    pooled_projection_dim=16,  # the text stream's width (Mochi 1: 1536, video 3072)
    in_channels=12,  # as released (MochiPipeline reshapes the VAE's latent statistics to 12 channels)
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


_TEXT_LEN = 16  # max_sequence_length (Mochi: 256)
_SIZE = 32  # pixels: 4 x 4 latents (the pipeline's VAE factor is 8), so 2 x 2 tokens per frame
_FRAMES = 13  # (13 - 1) // 6 + 1 = 3 latent frames


def _vae(seed: int):
    from diffusers import AutoencoderKLMochi

    # 32 channels: its group norms have 32 groups; one layer per block, no attention
    return build_seeded(lambda: AutoencoderKLMochi(encoder_block_out_channels=(32,) * 4, decoder_block_out_channels=(32,) * 4,
                                                   layers_per_block=(1,) * 5, add_attention_block=(False,) * 5), seed)


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer
    from ._parts import t5_encoder

    tokenizer = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000),
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    return dict(prompt=prompt, height=height, width=width, num_frames=_FRAMES, guidance_scale=guidance_scale,
                max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("mochi", "MochiTransformer3DModel", _MOCHI, _mochi_inputs),)
PIPELINES = (TinyPipeline("mochi", "MochiPipeline", "mochi", _components, vae=_vae, call_kwargs=_call, size=(_SIZE, _SIZE)),)
