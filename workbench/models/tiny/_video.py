"""Sizes shared by the tiny video denoisers (Wan, CogVideoX, LTX-Video).

A tiny video is 3 latent frames of 8 x 8; with 2 x 2 spatial patches (1 x 1 for LTX-Video,
which packs tokens itself, on a 4 x 4 latent) that is 3 frames of 4 x 4 = 48 video tokens, so a
whole video->video matrix is 48 x 48 and a forward pass takes milliseconds.
"""

from __future__ import annotations

#: Latent frames of a tiny video.
VIDEO_FRAMES = 3
#: Latent height/width of a tiny video (before 2 x 2 patching).
VIDEO_LATENT_SIZE = 8
#: Token grid of every tiny video denoiser: (frames, rows, cols).
VIDEO_TOKEN_GRID = (VIDEO_FRAMES, VIDEO_LATENT_SIZE // 2, VIDEO_LATENT_SIZE // 2)


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

    from ...model import Model
    from ..tokenizers import build_t5_tokenizer
    from . import tiny_denoiser
    from ._parts import SEED_OFFSETS, t5_encoder

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

    channels = model.denoiser.config.in_channels
    per_family = {"wan": (channels, VIDEO_FRAMES, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE),
                  "cogvideox": (VIDEO_FRAMES, channels, VIDEO_LATENT_SIZE, VIDEO_LATENT_SIZE)}
    return torch.randn(n, *per_family[model.family], generator=torch.Generator().manual_seed(seed))
