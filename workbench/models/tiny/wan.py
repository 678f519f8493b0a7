"""Tiny Wan 2.1/2.2 text-to-video denoiser (``WanTransformer3DModel``): video self-attention with
(frame, y, x) rotary positions, cross-attention to umT5 text; and its pipeline (``WanPipeline``)
with a tiny umT5 encoder, a real T5 tokenizer and a tiny causal 3-D VAE (``AutoencoderKLWan``,
2x spatial and 2x causal temporal compression, so 5 frames of 16 x 16 px are 3 latent frames of 8 x 8)."""

from __future__ import annotations

from typing import Any

from ._parts import SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, build_seeded
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_WAN: dict[str, Any] = dict(
    patch_size=(1, 2, 2),  # as released: no temporal patching
    num_attention_heads=2,
    attention_head_dim=12,  # rotary split as released: 4 dims (frame), 4 (y), 4 (x)
    in_channels=4,
    out_channels=4,
    text_dim=T5_D_MODEL,  # umT5-XXL: 4096
    freq_dim=16,
    ffn_dim=48,
    num_layers=2,
    rope_max_seq_len=32,
)


def _wan_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    return dict(
        hidden_states=randn(b, cfg["in_channels"], VIDEO_FRAMES, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
        timestep=t.long(),
        encoder_hidden_states=randn(b, text_len, cfg["text_dim"]),
    )


_TEXT_LEN = 16  # max_sequence_length (Wan: 512)


def _vae(seed: int):
    from diffusers import AutoencoderKLWan

    return build_seeded(
        lambda: AutoencoderKLWan(base_dim=8, z_dim=_WAN["in_channels"], dim_mult=[1, 2], num_res_blocks=1,
                                 temperal_downsample=[True], latents_mean=[0.0] * _WAN["in_channels"],
                                 latents_std=[1.0] * _WAN["in_channels"], scale_factor_temporal=2, scale_factor_spatial=2),
        seed,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer
    from ._parts import t5_encoder

    tokenizer = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"], umt5=True),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # the causal VAE keeps the first frame and halves the rest: (frames - 1) // 2 + 1 latent frames
    return dict(prompt=prompt, height=height, width=width, num_frames=2 * (VIDEO_FRAMES - 1) + 1,
                guidance_scale=guidance_scale, max_sequence_length=_TEXT_LEN)


DENOISERS = (TinyDenoiser("wan", "WanTransformer3DModel", _WAN, _wan_inputs),)
PIPELINES = (
    TinyPipeline("wan", "WanPipeline", "wan", _components, vae=_vae, call_kwargs=_call,
                 size=(2 * VIDEO_LATENT_SIZE, 2 * VIDEO_LATENT_SIZE)),
)
