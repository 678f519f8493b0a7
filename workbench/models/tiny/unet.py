"""Tiny U-Nets: SD 1.x (``UNet2DConditionModel``, ``StableDiffusionPipeline``) and DDPM
(``UNet2DModel``, ``DDPMPipeline``)."""

from __future__ import annotations

from typing import Any

from ._parts import CLIP_L_HIDDEN, LATENT_SIZE, SEED_OFFSETS, TinyDenoiser, TinyPipeline, clip_text_encoder

# SD 1.x style UNet with cross-attention at every level and in the mid block.
_UNET: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # 16x16 -> 8x8
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),  # 8x8 -> 16x16, eating the skips
    block_out_channels=(16, 32),
    layers_per_block=1,  # 1 resnet+attention per down level, 2 per up level (+1 for the skip)
    norm_num_groups=8,
    cross_attention_dim=CLIP_L_HIDDEN,  # CLIP-L last hidden state
    # diffusers naming quirk (issue #2011): for UNet2DConditionModel `attention_head_dim` is
    # the NUMBER of heads (SD1.5: 8). 2 heads -> 8 dims at level 0, 16 dims at level 1 / mid.
    attention_head_dim=2,
)

# DDPM style pixel-space UNet, unconditional, self-attention at the low level.
_UNET2D: dict[str, Any] = dict(
    sample_size=16,  # pixels
    in_channels=3,
    out_channels=3,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=16,  # here it really is the head dim: 32 channels -> 2 heads (also mid block)
)


def unet_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(
        sample=randn(b, cfg["in_channels"], s, s),
        timestep=t,
        encoder_hidden_states=randn(b, text_len, cfg["cross_attention_dim"]),
    )


def _unet2d_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(sample=randn(b, cfg["in_channels"], s, s), timestep=t)


def _sd_components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    return dict(
        text_encoder=clip_text_encoder("clip_l", tokenizer, seed + SEED_OFFSETS["clip_l"], False),
        tokenizer=tokenizer,
        scheduler=diffusers.DDIMScheduler(  # SD1.5's betas
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _ddpm_components(seed: int) -> dict[str, Any]:
    import diffusers

    return dict(scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000))


def _ddpm_call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    return dict(batch_size=1)  # unconditional, at the model's own sample size


DENOISERS = (
    TinyDenoiser("unet", "UNet2DConditionModel", _UNET, unet_inputs),
    TinyDenoiser("unet2d", "UNet2DModel", _UNET2D, _unet2d_inputs),
)
PIPELINES = (
    TinyPipeline("sd", "StableDiffusionPipeline", "unet", _sd_components, vae="sd", denoiser_argument="unet"),
    TinyPipeline(
        "unet2d", "DDPMPipeline", "unet2d", _ddpm_components, vae=None, denoiser_argument="unet",
        call_kwargs=_ddpm_call, size=(_UNET2D["sample_size"], _UNET2D["sample_size"]),
    ),
)
