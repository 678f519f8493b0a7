"""Tiny video models as workbench ``Model``s: a tiny video denoiser with a tiny T5 prompt encoder
and a real tokenizer, for examples (notebook 03, the demo report) and tests of video recordings."""

from __future__ import annotations


def tiny_video_model(family: str = "wan", seed: int = 0, max_tokens: int = 8):
    """A tiny video denoiser (``"wan"`` or ``"cogvideox"``) as a workbench ``Model`` that encodes
    prompts with a tiny T5 (umT5 for Wan, as released) and a real tokenizer, so that recordings of
    ``workbench.denoise(model, video_latents(model), conditioning=model.encode(prompts),
    prompts=prompts)`` carry the prompt's tokens (word maps, the explorer's word choices).

    The video pipelines' VAEs and output (``.frames``) are not wrapped: this runs the denoiser on
    latents, which is what attention maps need.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..model import Model
    from .tiny import tiny_denoiser
    from .tiny._parts import SEED_OFFSETS, t5_encoder
    from .tokenizers import build_t5_tokenizer

    if family not in ("wan", "cogvideox"):
        raise ValueError(f"tiny_video_model builds 'wan' or 'cogvideox' (text through encoder_hidden_states), not {family!r}")
    tokenizer = build_t5_tokenizer()
    encoder = t5_encoder(tokenizer, seed + SEED_OFFSETS["t5"], umt5=family == "wan").eval()

    def encode(prompts: list[str]) -> dict:
        ids = tokenizer(prompts, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return {"encoder_hidden_states": encoder(ids.input_ids, attention_mask=ids.attention_mask)[0]}

    return Model(denoiser=tiny_denoiser(family, seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                 name=f"tiny-{family}", prompt_encoder=encode, tokenizer=tokenizer, max_tokens=max_tokens)


def video_latents(model, n: int = 1, seed: int = 0):
    """Gaussian latents of ``n`` tiny videos in the layout ``model``'s denoiser takes: Wan
    (batch, channels, frames, h, w), CogVideoX (batch, frames, channels, h, w)."""
    import torch

    from .tiny._video import VIDEO_FRAMES, VIDEO_LATENT_SIZE

    channels = model.denoiser.config.in_channels
    per_family = {"wan": (channels, VIDEO_FRAMES, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
                  "cogvideox": (VIDEO_FRAMES, channels, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE)}
    return torch.randn(n, *per_family[model.family], generator=torch.Generator().manual_seed(seed))
