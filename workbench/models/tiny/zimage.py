"""Tiny Z-Image (``ZImageTransformer2DModel``, ``ZImagePipeline``): refiner blocks for the image
and the caption apart, then single-stream blocks over [image | caption]; a Qwen3 text encoder (its
penultimate hidden state, padding dropped) and a FLUX-style AutoencoderKL. The denoiser takes and
returns its latents as a list of per-sample ``(channels, 1, height, width)`` tensors."""

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
    qwen3_causal_lm,
)

_TEXT_LEN = 64  # max_sequence_length (Z-Image: 512); the chat template alone is about 15 tokens

_ZIMAGE: dict[str, Any] = dict(
    all_patch_size=(2,),  # 8 x 8 = 64 image tokens (a multiple of the 32 Z-Image pads every stream to)
    all_f_patch_size=(1,),
    in_channels=16,  # the FLUX VAE's latent channels, as in Z-Image
    dim=32,
    n_layers=2,  # Z-Image-Turbo: 30
    n_refiner_layers=1,  # per stream (Z-Image: 2)
    n_heads=2,
    n_kv_heads=2,
    cap_feat_dim=QWEN3_HIDDEN,
    axes_dims=[4, 6, 6],  # RoPE over (caption position / frame, row, col); sums to the head dim 16
    axes_lens=[256, 64, 64],
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = LATENT_SIZE
    return dict(
        x=[randn(cfg["in_channels"], 1, s, s) for _ in range(b)],
        t=t / 1000.0,  # the pipeline passes (1000 - t) / 1000: time runs from noise (0) to image (1)
        # The pipeline drops each prompt's padding, so captions come as a list, one length each;
        # these (8 and 6 tokens) both pad to the 32 Z-Image rounds every caption up to.
        cap_feats=[randn(max(text_len - 2 * i, 1), cfg["cap_feat_dim"]) for i in range(b)],
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_qwen2_tokenizer

    tokenizer = build_qwen2_tokenizer(model_max_length=QWEN3_CONFIG["max_position_embeddings"])
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        tokenizer=tokenizer,
        text_encoder=qwen3_causal_lm(tokenizer, seed + SEED_OFFSETS["llm"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # ZImagePipeline computes cond + s (cond - uncond) and guides whenever s > 0: the usual scale g
    # (uncond + g (cond - uncond), off at 1) is s = g - 1.
    return dict(prompt=prompt, height=height, width=width, guidance_scale=max(guidance_scale - 1.0, 0.0),
                max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("zimage", "ZImageTransformer2DModel", _ZIMAGE, _inputs),)
PIPELINES = (TinyPipeline("zimage", "ZImagePipeline", "zimage", _components, vae="flux", call_kwargs=_call),)
