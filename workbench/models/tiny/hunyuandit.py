"""Tiny HunyuanDiT (``HunyuanDiT2DModel``, ``HunyuanDiTPipeline``): a DiT with long skips between
its first and second halves, self-attention over image patches and cross-attention to the text of
*two* encoders joined on tokens: [BERT (77) | mT5 (256)]."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import (
    LATENT_SIZE,
    SEED_OFFSETS,
    T5_D_MODEL,
    TinyDenoiser,
    TinyPipeline,
    build_seeded,
    eight_x_vae,
    t5_encoder,
)

_BERT_HIDDEN = 16  # the CLIP-like Chinese BERT: 1024
_BERT_LEN, _T5_LEN = 77, 256  # the pipeline's two tokenizer lengths

_HUNYUANDIT: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    patch_size=2,
    sample_size=LATENT_SIZE,
    hidden_size=32,
    num_layers=4,  # block 3 takes a long skip from block 0 (HunyuanDiT: 40, skips 0..18 -> 39..21)
    learn_sigma=True,
    cross_attention_dim=_BERT_HIDDEN,
    cross_attention_dim_t5=T5_D_MODEL,
    pooled_projection_dim=16,
    text_len=_BERT_LEN,
    text_len_t5=_T5_LEN,
)


def rotary_embedding(model_or_config, grid: tuple[int, int]):
    """The 2-D RoPE ``HunyuanDiTPipeline`` computes for a ``grid`` of image tokens."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed
    from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

    cfg = model_or_config
    base_size = 512 // 8 // cfg["patch_size"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return get_2d_rotary_pos_embed(head_dim, get_resize_crop_region_for_grid(grid, base_size), grid, output_type="pt")


def _inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    grid = (s // cfg["patch_size"], s // cfg["patch_size"])
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        timestep=t,
        encoder_hidden_states=randn(b, _BERT_LEN, cfg["cross_attention_dim"]),
        text_embedding_mask=torch.ones(b, _BERT_LEN, dtype=torch.long),
        encoder_hidden_states_t5=randn(b, _T5_LEN, cfg["cross_attention_dim_t5"]),
        text_embedding_mask_t5=torch.ones(b, _T5_LEN, dtype=torch.long),
        image_meta_size=torch.tensor([[32.0, 32.0, 32.0, 32.0, 0.0, 0.0]] * b),
        style=torch.zeros(b, dtype=torch.long),
        image_rotary_emb=rotary_embedding(cfg, grid),
    )


def _bert(tokenizer, seed: int) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=_BERT_HIDDEN, intermediate_size=2 * _BERT_HIDDEN,
                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=_BERT_LEN,
                        pad_token_id=tokenizer.pad_token_id)
    return build_seeded(lambda: BertModel(config, add_pooling_layer=False), seed)


def _components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_bert_tokenizer, build_t5_tokenizer

    tokenizer, tokenizer_2 = build_bert_tokenizer(model_max_length=_BERT_LEN), build_t5_tokenizer(model_max_length=_T5_LEN)
    return dict(
        tokenizer=tokenizer,
        text_encoder=_bert(tokenizer, seed + SEED_OFFSETS["clip_l"]),
        tokenizer_2=tokenizer_2,
        text_encoder_2=t5_encoder(tokenizer_2, seed + SEED_OFFSETS["t5"]),
        scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.03,
                                          beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _vae(seed: int) -> torch.nn.Module:
    # HunyuanDiTPipeline lays its RoPE grid out as height // 8 // patch_size, an 8x VAE hard-coded.
    return eight_x_vae("sd", seed)


def _call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # Resolution binning only knows the released sizes.
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale, use_resolution_binning=False)


DENOISERS = (TinyDenoiser("hunyuandit", "HunyuanDiT2DModel", _HUNYUANDIT, _inputs),)
PIPELINES = (TinyPipeline("hunyuandit", "HunyuanDiTPipeline", "hunyuandit", _components, vae=_vae, call_kwargs=_call,
                         size=(8 * LATENT_SIZE, 8 * LATENT_SIZE)),)
