"""Tiny Sana (``SanaTransformer2DModel``, ``SanaPipeline``): linear (ReLU-kernel) self-attention
over image tokens, softmax cross-attention to Gemma 2 text, a deep-compression autoencoder
(``AutoencoderDC``). The self-attention has no softmax matrix: ``hooks/sana.py`` says so."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import GEMMA2_HIDDEN, LATENT_SIZE, SEED_OFFSETS, TinyDenoiser, TinyPipeline, build_seeded, gemma2_model

_LATENT_CHANNELS = 4  # DC-AE f32c32: 32
_TEXT_LEN = 16  # max_sequence_length (Sana: 300)

_SANA: dict[str, Any] = dict(
    in_channels=_LATENT_CHANNELS,
    out_channels=_LATENT_CHANNELS,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,  # Sana-1600M: 20
    num_cross_attention_heads=2,
    cross_attention_head_dim=16,
    cross_attention_dim=32,
    caption_channels=GEMMA2_HIDDEN,
    sample_size=LATENT_SIZE,
    patch_size=2,  # 8 x 8 = 64 image tokens (Sana: patch 1 on 32x-compressed latents)
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    mask = torch.ones(b, text_len, dtype=torch.long)
    mask[1:, text_len - 2:] = 0  # later samples carry two padded text tokens: the masked-key path
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        encoder_hidden_states=randn(b, text_len, cfg["caption_channels"]),
        encoder_attention_mask=mask,
        timestep=t,
    )


def _vae(seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderDC

    return build_seeded(
        lambda: AutoencoderDC(
            latent_channels=_LATENT_CHANNELS, attention_head_dim=8,
            encoder_block_types=("ResBlock", "ResBlock"), decoder_block_types=("ResBlock", "ResBlock"),
            encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
            encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), ()), decoder_qkv_multiscales=((), ()), scaling_factor=0.41407,
        ),
        seed,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_gemma_tokenizer

    tokenizer = build_gemma_tokenizer()
    tokenizer.padding_side = "right"  # as SanaPipeline sets it before encoding
    return dict(
        tokenizer=tokenizer,
        text_encoder=gemma2_model(tokenizer, seed + SEED_OFFSETS["llm"]),
        scheduler=diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                                        use_flow_sigmas=True, flow_shift=3.0),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # Sana prepends a long "complex human instruction" to every prompt; without it the text axis
    # is the prompt alone. Resolution binning only knows the released sizes.
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale,
                complex_human_instruction=None, max_sequence_length=_TEXT_LEN,
                use_resolution_binning=False, clean_caption=False)


DENOISERS = (TinyDenoiser("sana", "SanaTransformer2DModel", _SANA, _inputs),)
PIPELINES = (TinyPipeline("sana", "SanaPipeline", "sana", _components, vae=_vae, call_kwargs=_call),)
