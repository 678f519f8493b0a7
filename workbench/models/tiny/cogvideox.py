"""Tiny CogVideoX denoiser (``CogVideoXTransformer3DModel``, 1.0 layout: sin-cos positions, no
temporal patching): joint attention over [text | video] tokens; and its pipeline
(``CogVideoXPipeline``) with a tiny T5 encoder, a real T5 tokenizer and a tiny
``AutoencoderKLCogVideoX`` (4x spatial, 4x temporal: 9 frames of 32 x 32 px are 3 latent frames of 8 x 8)."""

from __future__ import annotations

from typing import Any

from ._parts import SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, build_seeded
from ._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

_COGVIDEOX: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=16,
    text_embed_dim=T5_D_MODEL,  # T5-v1.1-XXL: 4096
    num_layers=2,
    sample_width=VIDEO_LATENT_SIZE,
    sample_height=VIDEO_LATENT_SIZE,
    # pixel frames whose latent has VIDEO_FRAMES frames: (frames - 1) // compression + 1
    sample_frames=(VIDEO_FRAMES - 1) * 4 + 1,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=8,  # the sin-cos table covers this many text positions
)


def _cogvideox_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    return dict(
        hidden_states=randn(b, VIDEO_FRAMES, cfg["in_channels"], VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
        encoder_hidden_states=randn(b, text_len, cfg["text_embed_dim"]),
        timestep=t.long(),
    )


def _vae(seed: int):
    from diffusers import AutoencoderKLCogVideoX

    # three levels: two 2x spatial downsamples, each also halving time (temporal_compression_ratio 4)
    return build_seeded(lambda: AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8), latent_channels=_COGVIDEOX["in_channels"], layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=_COGVIDEOX["temporal_compression_ratio"],
        sample_height=4 * VIDEO_LATENT_SIZE, sample_width=4 * VIDEO_LATENT_SIZE), seed)


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer
    from ._parts import t5_encoder

    tokenizer = build_t5_tokenizer()
    return dict(
        scheduler=diffusers.CogVideoXDDIMScheduler(),
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # the 1.0 layout's sin-cos table holds max_text_seq_length text positions: the prompt is padded to it
    return dict(prompt=prompt, height=height, width=width, num_frames=_COGVIDEOX["sample_frames"],
                guidance_scale=guidance_scale, max_sequence_length=_COGVIDEOX["max_text_seq_length"])


DENOISERS = (TinyDenoiser("cogvideox", "CogVideoXTransformer3DModel", _COGVIDEOX, _cogvideox_inputs),)
PIPELINES = (
    TinyPipeline("cogvideox", "CogVideoXPipeline", "cogvideox", _components, vae=_vae, call_kwargs=_call,
                 size=(4 * VIDEO_LATENT_SIZE, 4 * VIDEO_LATENT_SIZE)),
)
