"""Tiny FLUX.1-dev (``FluxTransformer2DModel``, ``FluxPipeline``)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import CLIP_L_HIDDEN, LATENT_SIZE, SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, clip_text_encoder, t5_encoder

_FLUX: dict[str, Any] = dict(
    patch_size=1,  # patching happens in the pipeline: 2x2 latent patches are packed into channels
    in_channels=64,  # 16 latent channels x 2 x 2 -> 64; 16 x 16 latents -> 8 x 8 = 64 image tokens
    out_channels=None,  # = in_channels
    num_layers=2,  # double-stream (MM-DiT) blocks; FLUX.1: 19
    num_single_layers=2,  # single-stream blocks over [text; image]; FLUX.1: 38
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=T5_D_MODEL,  # T5 embeddings only (CLIP only gives the pooled vector)
    pooled_projection_dim=CLIP_L_HIDDEN,  # CLIPTextModel pooler output
    guidance_embeds=True,  # FLUX.1-dev: distilled guidance, `guidance_scale` is an input
    axes_dims_rope=(4, 6, 6),  # RoPE dims per (text id, row, col) axis; must sum to attention_head_dim
)


def packed_image_ids(h: int, w: int, axes: int = 3) -> torch.Tensor:
    """Position ids ``(_, row, col[, ...])`` of an ``h x w`` grid of packed latent tokens."""
    ids = torch.zeros(h, w, axes)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, axes)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    h = w = LATENT_SIZE // 2  # packed 2x2 patches
    return dict(
        hidden_states=randn(b, h * w, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        pooled_projections=randn(b, cfg["pooled_projection_dim"]),
        timestep=t / 1000.0,  # FluxPipeline passes t / 1000
        img_ids=packed_image_ids(h, w),
        txt_ids=torch.zeros(text_len, 3),
        guidance=torch.full((b,), 3.5),
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000,
            shift=3.0,
            use_dynamic_shifting=True,  # the shift mu depends on the number of image tokens
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
        text_encoder=clip_text_encoder("clip_l", tokenizer, seed + SEED_OFFSETS["clip_l"], False),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(tokenizer_2, seed + SEED_OFFSETS["t5"]),
        tokenizer_2=tokenizer_2,
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # Classifier-free guidance is `true_cfg_scale` plus a negative prompt; `guidance_scale` only
    # feeds the distilled guidance embedding.
    kwargs = dict(prompt=prompt, height=height, width=width, guidance_scale=3.5, true_cfg_scale=guidance_scale)
    if guidance_scale > 1.0:
        kwargs["negative_prompt"] = ""
    return kwargs


def small_default_sample_size(pipe) -> None:
    """FluxPipeline hard-codes ``default_sample_size = 128`` latents in ``__init__``."""
    pipe.default_sample_size = LATENT_SIZE


DENOISERS = (TinyDenoiser("flux", "FluxTransformer2DModel", _FLUX, _inputs),)
PIPELINES = (
    TinyPipeline("flux", "FluxPipeline", "flux", _components, vae="flux", call_kwargs=_call, finish=small_default_sample_size),
)
