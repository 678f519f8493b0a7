"""Tiny LTX-Video denoiser (``LTXVideoTransformer3DModel``, 0.9.x): tokens packed by the caller
(patch 1 x 1 x 1 as released), video self-attention, masked cross-attention to T5 text; and its
pipeline (``LTXPipeline``) with a tiny T5 encoder, a real T5 tokenizer and a tiny
``AutoencoderKLLTXVideo`` (4 x 4 pixel patches and one 2x space-time downsample: 8x spatial, 2x
temporal, so 5 frames of 32 x 32 px are 3 latent frames of 4 x 4)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, build_seeded
from ._video import VIDEO_TOKEN_GRID

_LTX: dict[str, Any] = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=16,
    cross_attention_dim=32,  # = inner dim
    num_layers=2,
    caption_channels=T5_D_MODEL,  # T5-v1.1-XXL: 4096
)


def _ltx_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    frames, height, width = VIDEO_TOKEN_GRID
    # every text token is real; a caller tests padding by zeroing the end of the mask, as the
    # pipeline's T5 mask does
    mask = torch.ones(b, text_len, dtype=torch.long)
    return dict(
        hidden_states=randn(b, frames * height * width, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["caption_channels"]),
        timestep=t.long(),
        encoder_attention_mask=mask,
        num_frames=frames,
        height=height,
        width=width,
    )


_TEXT_LEN = 16  # max_sequence_length (LTX-Video: 128)


def _vae(seed: int):
    from diffusers import AutoencoderKLLTXVideo

    one_level = dict(down_block_types=("LTXVideoDownBlock3D",), block_out_channels=(8,), decoder_block_out_channels=(8,),
                     layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
                     decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False),
                     downsample_type=("conv",), upsample_residual=(False,), upsample_factor=(1,))
    return build_seeded(lambda: AutoencoderKLLTXVideo(latent_channels=_LTX["in_channels"], **one_level), seed)


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer
    from ._parts import t5_encoder

    tokenizer = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    frames = VIDEO_TOKEN_GRID[0]
    return dict(prompt=prompt, height=height, width=width, num_frames=2 * (frames - 1) + 1,
                guidance_scale=guidance_scale, max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("ltx", "LTXVideoTransformer3DModel", _LTX, _ltx_inputs),)
PIPELINES = (
    TinyPipeline("ltx", "LTXPipeline", "ltx", _components, vae=_vae, call_kwargs=_call,
                 size=(8 * VIDEO_TOKEN_GRID[1], 8 * VIDEO_TOKEN_GRID[2])),
)
