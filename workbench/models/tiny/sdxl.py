"""Tiny SDXL (``UNet2DConditionModel`` with ``text_time`` added conditions, ``StableDiffusionXLPipeline``)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import CLIP_G_HIDDEN, CLIP_L_HIDDEN, LATENT_SIZE, SEED_OFFSETS, TinyDenoiser, TinyPipeline, clip_text_encoder
from .unet import unet_inputs

# No attention at the top level, cross-attention to [CLIP-L | CLIP-G] hidden states joined on
# channels, and the "text_time" added conditions (pooled CLIP-G + 6 size ids).
_SDXL: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
    attention_head_dim=(2, 2),  # heads per level (the diffusers naming quirk, as for "unet")
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,  # each of the 6 time ids -> 8 sinusoidal dims
    projection_class_embeddings_input_dim=6 * 8 + CLIP_G_HIDDEN,  # time ids + pooled CLIP-G
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    kwargs = unet_inputs(cfg, b, text_len, randn, t)
    kwargs["added_cond_kwargs"] = {
        "text_embeds": randn(b, CLIP_G_HIDDEN),
        "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * b),
    }
    return kwargs


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer(pad_token="!")  # SDXL's bigG tokenizer pads with "!"
    return dict(
        text_encoder=clip_text_encoder("clip_l", tokenizer, seed + SEED_OFFSETS["clip_l"], False),
        text_encoder_2=clip_text_encoder("clip_g", tokenizer_2, seed + SEED_OFFSETS["clip_g"], True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=diffusers.EulerDiscreteScheduler(  # SDXL's betas
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            steps_offset=1, timestep_spacing="leading",
        ),
        add_watermarker=False,
    )


DENOISERS = (TinyDenoiser("sdxl", "UNet2DConditionModel", _SDXL, _inputs),)
PIPELINES = (TinyPipeline("sdxl", "StableDiffusionXLPipeline", "sdxl", _components, vae="sd", denoiser_argument="unet"),)
