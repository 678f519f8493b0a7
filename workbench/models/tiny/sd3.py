"""Tiny Stable Diffusion 3 / 3.5 (``SD3Transformer2DModel``, ``StableDiffusion3Pipeline``)."""

from __future__ import annotations

from typing import Any

from ._parts import (
    CLIP_G_HIDDEN,
    CLIP_L_HIDDEN,
    LATENT_SIZE,
    SEED_OFFSETS,
    T5_D_MODEL,
    TinyDenoiser,
    TinyPipeline,
    clip_text_encoder,
    t5_encoder,
)

_SD3: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,  # default latent size -> default image = 16 * vae_scale_factor
    patch_size=2,  # 8 x 8 = 64 image tokens
    in_channels=16,  # the SD3 VAE has 16 latent channels
    out_channels=16,
    num_layers=3,  # joint blocks; the LAST one is context_pre_only (text stream stops there)
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=T5_D_MODEL,  # prompt embeds: [CLIP-L | CLIP-G | zero pad] (77) ++ T5 (256)
    caption_projection_dim=32,  # must equal num_attention_heads * attention_head_dim
    pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,  # pooled CLIP-L ++ pooled CLIP-G = 48
    pos_embed_max_size=24,  # cropped position table, in patches (SD3: 192 for a 64-patch default)
    dual_attention_layers=(),
    qk_norm="rms_norm",  # as in SD3.5 (SD3.0 has None)
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        pooled_projections=randn(b, cfg["pooled_projection_dim"]),
        timestep=t,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer(pad_token="!")  # SD3's bigG tokenizer pads with "!"
    tokenizer_3 = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        text_encoder=clip_text_encoder("clip_l", tokenizer, seed + SEED_OFFSETS["clip_l"], True),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder("clip_g", tokenizer_2, seed + SEED_OFFSETS["clip_g"], True),
        tokenizer_2=tokenizer_2,
        text_encoder_3=t5_encoder(tokenizer_3, seed + SEED_OFFSETS["t5"]),
        tokenizer_3=tokenizer_3,
    )


DENOISERS = (
    TinyDenoiser("sd3", "SD3Transformer2DModel", _SD3, _inputs),
    # SD3.5-medium style MMDiT-X: the first blocks add a second, image-only self-attention (attn2).
    TinyDenoiser(
        "sd35", "SD3Transformer2DModel", dict(_SD3, dual_attention_layers=(0, 1)), _inputs  # SD3.5-medium: 0..12 of 24
    ),
)
PIPELINES = (
    TinyPipeline("sd3", "StableDiffusion3Pipeline", "sd3", _components, vae="sd3"),
    TinyPipeline("sd35", "StableDiffusion3Pipeline", "sd35", _components, vae="sd3"),
)
