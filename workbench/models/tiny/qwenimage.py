"""Tiny Qwen-Image (``QwenImageTransformer2DModel``, ``QwenImagePipeline``): an MM-DiT whose text
comes from a Qwen2.5-VL language model, masked joint attention (padded text keys are masked out),
and the Qwen-Image VAE (``AutoencoderKLQwenImage``, a causal 3-D VAE used on one frame)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import LATENT_SIZE, SEED_OFFSETS, TinyDenoiser, TinyPipeline, build_seeded

_LATENT_CHANNELS = 4  # Qwen-Image: 16; the transformer sees 2x2 patches packed into 4x the channels
_QWEN25_HIDDEN = 16  # Qwen2.5-VL-7B: 3584

_QWENIMAGE: dict[str, Any] = dict(
    patch_size=2,
    in_channels=4 * _LATENT_CHANNELS,
    out_channels=_LATENT_CHANNELS,
    num_layers=2,  # Qwen-Image: 60
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=_QWEN25_HIDDEN,
    axes_dims_rope=(4, 6, 6),  # (frame, row, col); sums to attention_head_dim
)


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    h = w = LATENT_SIZE // 2  # packed 2x2 patches
    mask = torch.ones(b, text_len, dtype=torch.long)
    mask[1:, text_len - 2:] = 0  # later samples carry two padded text tokens: the masked-key path
    return dict(
        hidden_states=randn(b, h * w, cfg["in_channels"]),
        encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
        encoder_hidden_states_mask=mask,
        timestep=t / 1000.0,  # the pipeline passes t / 1000
        img_shapes=[[(1, h, w)]] * b,
    )


def _text_encoder(tokenizer, seed: int) -> torch.nn.Module:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=_QWEN25_HIDDEN, intermediate_size=2 * _QWEN25_HIDDEN,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},  # multimodal RoPE over head_dim / 2 = 4
            **special,
        ),
        # The vision tower is never run for text-to-image, but the class builds one.
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=_QWEN25_HIDDEN,
                           fullatt_block_indexes=[0], patch_size=2, spatial_merge_size=1, temporal_patch_size=1),
        vocab_size=len(tokenizer), **special,
    )
    return build_seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)


def _vae(seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderKLQwenImage

    return build_seeded(
        lambda: AutoencoderKLQwenImage(base_dim=8, z_dim=_LATENT_CHANNELS, dim_mult=[1, 2], num_res_blocks=1,
                                       temperal_downsample=[False], latents_mean=[0.0] * _LATENT_CHANNELS,
                                       latents_std=[1.0] * _LATENT_CHANNELS),
        seed,
    )


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_qwen2_tokenizer

    tokenizer = build_qwen2_tokenizer()
    return dict(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        tokenizer=tokenizer,
        text_encoder=_text_encoder(tokenizer, seed + SEED_OFFSETS["llm"]),
    )


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # Classifier-free guidance is `true_cfg_scale` > 1 plus a negative prompt, run as a second call.
    kwargs = dict(prompt=prompt, height=height, width=width, true_cfg_scale=guidance_scale)
    if guidance_scale > 1.0:
        kwargs["negative_prompt"] = " "
    return kwargs


def _small_default(pipe) -> None:
    pipe.default_sample_size = LATENT_SIZE  # hard-coded to 128 in QwenImagePipeline.__init__


DENOISERS = (TinyDenoiser("qwenimage", "QwenImageTransformer2DModel", _QWENIMAGE, _inputs),)
PIPELINES = (
    TinyPipeline("qwenimage", "QwenImagePipeline", "qwenimage", _components, vae=_vae, call_kwargs=_call,
                 finish=_small_default),
)
