"""Tiny plain diffusion transformers: DiT (``DiTTransformer2DModel``, ``DiTPipeline``) and
PixArt-alpha (``PixArtTransformer2DModel``, ``PixArtAlphaPipeline``)."""

from __future__ import annotations

from typing import Any

import torch

from ._parts import LATENT_SIZE, SEED_OFFSETS, T5_D_MODEL, TinyDenoiser, TinyPipeline, t5_encoder

# Class-conditional, adaLN-Zero.
_DIT: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=8,  # learned sigma: [eps, variance] as in DiT-XL-2; the pipeline keeps eps
    num_layers=2,
    sample_size=LATENT_SIZE,
    patch_size=2,
    # Number of classes. Must stay 1000: DiTPipeline hard-codes the null (unconditional) class
    # id as 1000, the extra row of the label table.
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_zero",
)

# Self-attention, cross-attention to T5, adaLN-single.
_PIXART: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=8,  # learned sigma, as in PixArt-XL-2
    num_layers=2,
    sample_size=LATENT_SIZE,  # != 128 -> no resolution/aspect-ratio micro-conditions
    patch_size=2,
    cross_attention_dim=32,  # = inner dim (captions are projected to it first)
    caption_channels=T5_D_MODEL,
    norm_type="ada_norm_single",
    num_embeds_ada_norm=1000,
    use_additional_conditions=False,
)

#: ``id2label`` of the tiny DiT pipeline: the 54 (colour, shape) classes of the shapes world.
DIT_ID2LABEL: dict[int, str] = {
    i: f"{colour} {shape}"
    for i, (colour, shape) in enumerate(
        (c, s)
        for c in ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white", "purple")
        for s in ("circle", "square", "triangle", "cross", "diamond", "star")
    )
}


def _dit_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        timestep=t.long(),
        class_labels=torch.arange(b) % len(DIT_ID2LABEL),
    )


def _pixart_inputs(cfg, b, text_len, randn, t) -> dict[str, Any]:
    s = cfg["sample_size"]
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        encoder_hidden_states=randn(b, text_len, cfg["caption_channels"]),
        timestep=t.long(),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    )


def _dit_components(seed: int) -> dict[str, Any]:
    import diffusers

    return dict(
        scheduler=diffusers.DDIMScheduler(
            num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False
        ),
        id2label=DIT_ID2LABEL,
    )


def _register_labels(pipe) -> None:
    # DiTPipeline does not put id2label in its config; registering it makes save_pretrained
    # write it to model_index.json, from where from_pretrained passes it back to __init__.
    pipe.register_to_config(id2label={str(k): v for k, v in DIT_ID2LABEL.items()})


def _dit_call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # The prompt must be a label of DIT_ID2LABEL ("red circle"), else class 0 is used.
    labels = {v: k for k, v in DIT_ID2LABEL.items()}
    return dict(class_labels=[labels.get(prompt, 0)], guidance_scale=guidance_scale)


def _pixart_components(seed: int) -> dict[str, Any]:
    import diffusers

    from ..tokenizers import build_t5_tokenizer

    tokenizer = build_t5_tokenizer()
    return dict(
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"]),
        scheduler=diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"
        ),
    )


def _pixart_call(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    # Resolution binning only knows sample sizes 32/64/128; caption cleaning needs ftfy.
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale,
                use_resolution_binning=False, clean_caption=False)


DENOISERS = (
    TinyDenoiser("dit", "DiTTransformer2DModel", _DIT, _dit_inputs),
    TinyDenoiser("pixart", "PixArtTransformer2DModel", _PIXART, _pixart_inputs),
)
PIPELINES = (
    TinyPipeline("dit", "DiTPipeline", "dit", _dit_components, vae="sd", call_kwargs=_dit_call, finish=_register_labels),
    TinyPipeline("pixart", "PixArtAlphaPipeline", "pixart", _pixart_components, vae="sd", call_kwargs=_pixart_call),
)
