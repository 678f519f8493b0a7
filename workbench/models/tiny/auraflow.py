"""Tiny AuraFlow (``AuraFlowTransformer2DModel``, ``AuraFlowPipeline``): joint blocks then
single-stream blocks, register tokens."""

from __future__ import annotations

from typing import Any

from ._parts import LATENT_SIZE, SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, t5_encoder

_AURAFLOW: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_mmdit_layers=1,
    num_single_dit_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=T5_D_MODEL,  # UMT5 embeddings
    caption_projection_dim=32,  # must equal the inner dim: captions join the register tokens
    pos_embed_max_size=64,  # position table, in patches (8 x 8 at the default size)
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        timestep=t / 1000.0,  # AuraFlowPipeline passes t / 1000
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer

    tokenizer = build_t5_tokenizer()
    return dict(
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"], umt5=True),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.73),
    )


DENOISERS = (TinyDenoiser("auraflow", "AuraFlowTransformer2DModel", _AURAFLOW, _inputs),)
PIPELINES = (TinyPipeline("auraflow", "AuraFlowPipeline", "auraflow", _components, vae="sd"),)
