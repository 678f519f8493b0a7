"""Tiny FLUX.2 [klein] (``Flux2Transformer2DModel``, ``Flux2KleinPipeline``): double-stream then
single-stream blocks, a Qwen3 text encoder whose three hidden states are stacked on channels, and
the FLUX.2 VAE (``AutoencoderKLFlux2``, 2x2 patchified latents with a batch-norm)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import (
    LATENT_SIZE,
    QWEN3_CONFIG,
    QWEN3_HIDDEN,
    SEED_OFFSETS,
    TinyDenoiser,
    TinyPipeline,
    build_seeded,
    qwen3_causal_lm,
)

_LATENT_CHANNELS = 8  # FLUX.2: 32; the transformer sees 2x2 patches packed into 4x the channels
_TEXT_LAYERS = (1, 2, 3)  # hidden states stacked as prompt embeddings (Klein: 9, 18, 27)
_TEXT_LEN = 24  # max_sequence_length (Klein: 512); the chat template alone is about 20 tokens

_FLUX2: dict[str, Any] = dict(
    patch_size=1,
    in_channels=4 * _LATENT_CHANNELS,  # 16 x 16 latents -> 8 x 8 = 64 packed image tokens
    num_layers=1,  # double-stream blocks (Klein 4B: 5)
    num_single_layers=1,  # single-stream blocks (Klein 4B: 20)
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=len(_TEXT_LAYERS) * QWEN3_HIDDEN,
    timestep_guidance_channels=16,
    axes_dims_rope=(4, 4, 4, 4),  # RoPE over (t, row, col, layer) ids; sums to attention_head_dim
    guidance_embeds=False,  # Klein base is not guidance-distilled: CFG runs as two calls per step
)


def grid_ids(h: int, w: int) -> torch.Tensor:
    """FLUX.2 position ids ``(t, row, col, layer)`` of an ``h x w`` grid of packed latent tokens."""
    return torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1)).float()


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    h = w = LATENT_SIZE // 2
    txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text_len)).float()
    return dict(
        hidden_states=randn(b, h * w, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        timestep=t / 1000.0,  # the pipeline passes t / 1000
        img_ids=grid_ids(h, w),
        txt_ids=txt_ids,
    )


def _vae(seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderKLFlux2

    return build_seeded(
        lambda: AutoencoderKLFlux2(
            block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=_LATENT_CHANNELS,
            norm_num_groups=4, sample_size=2 * LATENT_SIZE,
        ),
        seed,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_qwen2_tokenizer

    tokenizer = build_qwen2_tokenizer(model_max_length=QWEN3_CONFIG["max_position_embeddings"])
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        tokenizer=tokenizer,
        text_encoder=qwen3_causal_lm(tokenizer, seed + SEED_OFFSETS["llm"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale,
                max_sequence_length=_TEXT_LEN, text_encoder_out_layers=_TEXT_LAYERS)


def _small_default(pipe) -> None:
    pipe.default_sample_size = LATENT_SIZE  # hard-coded to 128 in Flux2KleinPipeline.__init__


DENOISERS = (TinyDenoiser("flux2", "Flux2Transformer2DModel", _FLUX2, _inputs),)
PIPELINES = (
    TinyPipeline("flux2-klein", "Flux2KleinPipeline", "flux2", _components, vae=_vae, call_kwargs=_call,
                 finish=_small_default),
)
