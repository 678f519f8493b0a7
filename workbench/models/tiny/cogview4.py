"""Tiny CogView4 (``CogView4Transformer2DModel``, ``CogView4Pipeline``): joint attention over
[text | image] with shared projections, 2-D rotary positions on the image tokens, SDXL-style size
conditions, a GLM text encoder (``GlmModel``, its second-to-last hidden state) and a 16-channel
AutoencoderKL.

The tokenizer is :func:`workbench.models.tokenizers.build_glm4_tokenizer` (byte-level BPE,
``[gMASK] <sop>`` prefix, left padding, as GLM-4's).
"""

from __future__ import annotations

from typing import Any

import torch

from ._parts import LATENT_SIZE, SEED_OFFSETS, TinyDenoiser, TinyPipeline, build_seeded

_GLM_HIDDEN = 16  # GLM-4-9B: 4096
_LATENT_CHANNELS = 16  # as released

_COGVIEW4: dict[str, Any] = dict(
    patch_size=2,  # 16 x 16 latents -> 8 x 8 = 64 image tokens
    in_channels=_LATENT_CHANNELS,
    out_channels=_LATENT_CHANNELS,
    num_layers=2,  # CogView4-6B: 28
    attention_head_dim=16,  # rotary: 4 frequencies for rows, 4 for columns (as released: head_dim / 4 each)
    num_attention_heads=2,
    text_embed_dim=_GLM_HIDDEN,
    time_embed_dim=16,
    condition_dim=8,  # each size condition is a 2 x condition_dim sin-cos embedding
    sample_size=LATENT_SIZE,  # the pipeline's default size: sample_size * vae_scale_factor = 32 px
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    size = torch.tensor([[2 * LATENT_SIZE, 2 * LATENT_SIZE]] * b, dtype=torch.float32)  # pixels, as the pipeline passes them
    return dict(
        hidden_states=randn(b, cfg["in_channels"], LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=randn(b, text_len, cfg["text_embed_dim"]),
        timestep=t,  # the pipeline passes the scheduler's timestep (0-1000)
        original_size=size,
        target_size=size.clone(),
        crop_coords=torch.zeros(b, 2),
    )


def _text_encoder(tokenizer, seed: int) -> torch.nn.Module:
    from transformers import GlmConfig, GlmModel

    config = GlmConfig(
        vocab_size=len(tokenizer), hidden_size=_GLM_HIDDEN, intermediate_size=2 * _GLM_HIDDEN, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return build_seeded(lambda: GlmModel(config), seed)


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_glm4_tokenizer

    tokenizer = build_glm4_tokenizer()
    return dict(
        # CogView4's released scheduler: shift from the image length (mu), linear time shift
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, use_dynamic_shifting=True, base_shift=0.25, max_shift=0.75,
            base_image_seq_len=256, time_shift_type="linear"),
        tokenizer=tokenizer,
        text_encoder=_text_encoder(tokenizer, seed + SEED_OFFSETS["llm"]),
    )


DENOISERS = (TinyDenoiser("cogview4", "CogView4Transformer2DModel", _COGVIEW4, _inputs),)
PIPELINES = (TinyPipeline("cogview4", "CogView4Pipeline", "cogview4", _components, vae="sd3"),)
