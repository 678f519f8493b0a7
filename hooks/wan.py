"""Wan 2.1 / 2.2 (``WanTransformer3DModel``): a video DiT over (frame, y, x) patch tokens.

Each block runs video self-attention (``attn1``, rotary positions over frame, y and x) and then
cross-attention from the video tokens to the umT5 prompt (``attn2``); text enters only through
``attn2``'s keys and values. Blocks return the video stream alone. Wan 2.2's two experts (the
pipeline's ``transformer`` and ``transformer_2``) are the same class, so one map serves both.
Image-to-video checkpoints add CLIP image tokens to ``attn2`` through a second kernel call that
runs before the text one; the recorder observes one kernel call per module, so those checkpoints
are refused by name rather than recorded wrongly.
"""

from __future__ import annotations

from workbench.sitemap import (
    VIDEO,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    kwarg_or_arg,
)

from .dit import self_then_cross_block_sites

#: (batch, channels, frames, height, width) latents
VIDEO_LATENT_DIMS = ("channel", "frame", "y", "x")


def wan_sites(model) -> list:
    return [site for i in range(len(model.blocks))
            for site in self_then_cross_block_sites(f"blocks.{i}", VIDEO, "cross-attention to the prompt")]


def video_patch_geometry(latent, text, patch: tuple[int, int, int]) -> Geometry:
    """Token grid of a (batch, channels, frames, height, width) latent cut into (t, h, w) patches."""
    p_t, p_h, p_w = patch
    return Geometry(text_len=0 if text is None else text.shape[1], frames=latent.shape[2] // p_t,
                    grid=(latent.shape[3] // p_h, latent.shape[4] // p_w))


def _wan_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 2))
    return video_patch_geometry(latent, text, tuple(model.config.patch_size))


WAN = SiteMap(
    family="wan",
    model_classes=("WanTransformer3DModel",),
    enumerate_sites=wan_sites,
    read_geometry=_wan_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="Wan 2.1/2.2: video self-attention then cross-attention to umT5 text, tokens (frame, y, x)",
    latent_dims=VIDEO_LATENT_DIMS,
    stages=("blocks",),
    text_attention=("blocks.*.attn2.probs",),
    text_keys=("blocks.*.attn2.k",),
    text_values=("blocks.*.attn2.v",),
)

SITE_MAPS = (WAN,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("WanPipeline",),
        denoiser_attribute="transformer",  # Wan 2.2's low-noise expert (transformer_2) is not watched
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        description="Wan T2V: CFG as two calls per step (cond, uncond); text axis umT5 tokens padded to max_sequence_length",
    ),
)
