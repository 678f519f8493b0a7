"""Tiny Lumina 2 (``Lumina2Transformer2DModel``, ``Lumina2Pipeline``): refiner blocks for the image
and the caption apart, then joint blocks over each sample's [valid text | image] tokens; a Gemma 2
text encoder (its penultimate hidden state) and a FLUX-style AutoencoderKL."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import (
    GEMMA2_HIDDEN,
    LATENT_SIZE,
    SEED_OFFSETS,
    TinyDenoiser,
    TinyPipeline,
    eight_x_vae,
    gemma2_model,
)

# The pipeline's default system prompt alone is about 80 tokens of the tiny Gemma vocabulary.
_TEXT_LEN = 128  # max_sequence_length (Lumina 2: 256)

_LUMINA2: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    patch_size=2,  # 8 x 8 = 64 image tokens
    in_channels=16,  # the FLUX VAE's latent channels, as in Lumina-Image 2.0
    hidden_size=32,
    num_layers=2,  # Lumina-Image 2.0: 26
    num_refiner_layers=1,  # per stream (Lumina-Image 2.0: 2)
    num_attention_heads=2,
    num_kv_heads=1,  # grouped-query attention, as released (24 heads, 8 key/value heads)
    multiple_of=16,
    axes_dim_rope=(4, 6, 6),  # RoPE over (caption position, row, col); sums to the head dim 16
    axes_lens=(300, 64, 64),
    cap_feat_dim=GEMMA2_HIDDEN,
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    # Every sample pads its last two text tokens: the caption refiner masks them out, and the joint
    # blocks hold the valid tokens only. (Samples of different valid lengths would put their image
    # tokens at different offsets, which hooks/lumina2.py refuses.)
    mask = torch.ones(b, text_len, dtype=torch.long)
    mask[:, text_len - 2:] = 0
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        timestep=t / 1000.0,  # the pipeline passes 1 - t / 1000: Lumina runs time from noise (0) to image (1)
        encoder_hidden_states=randn(b, text_len, cfg["cap_feat_dim"]),
        encoder_attention_mask=mask,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_gemma_tokenizer

    tokenizer = build_gemma_tokenizer()
    return dict(
        tokenizer=tokenizer,  # Lumina2Pipeline sets padding_side = "right" itself
        text_encoder=gemma2_model(tokenizer, seed + SEED_OFFSETS["llm"]),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0),
    )


def _vae(seed: int) -> torch.nn.Module:
    # Lumina2Pipeline hard-codes vae_scale_factor = 8 whatever the VAE.
    return eight_x_vae("flux", seed)


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale,
                max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("lumina2", "Lumina2Transformer2DModel", _LUMINA2, _inputs),)
PIPELINES = (TinyPipeline("lumina2", "Lumina2Pipeline", "lumina2", _components, vae=_vae, call_kwargs=_call,
                          size=(8 * LATENT_SIZE, 8 * LATENT_SIZE)),)
