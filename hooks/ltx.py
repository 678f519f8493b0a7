"""LTX-Video (``LTXVideoTransformer3DModel``, 0.9.x): a video DiT over pre-packed (frame, y, x)
tokens with video self-attention (``attn1``) and cross-attention to T5 text (``attn2``).

The pipeline packs the latent into tokens before the denoiser and passes the latent grid as
``num_frames`` / ``height`` / ``width``; the text padding mask reaches ``attn2`` as an additive
mask, so recorded cross-attention rows put no mass on padding. Text enters only through
``attn2``'s keys and values.
"""

from __future__ import annotations

from workbench.sitemap import (
    STREAM_DIMS,
    VIDEO,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    kwarg_or_arg,
)

from .dit import self_then_cross_block_sites


def ltx_sites(model) -> list:
    return [site for i in range(len(model.transformer_blocks))
            for site in self_then_cross_block_sites(f"transformer_blocks.{i}", VIDEO, "cross-attention to the prompt")]


def _ltx_geometry(model, args, kwargs) -> Geometry:
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    grid = [kwarg_or_arg(args, kwargs, InputTap(name, position)) for name, position in
            (("num_frames", 4), ("height", 5), ("width", 6))]
    if any(g is None for g in grid):
        raise ValueError("LTX-Video's denoiser needs num_frames, height and width (the latent grid) to lay out "
                         "its tokens; the pipeline passes them, a direct call must too")
    frames, height, width = (int(g) for g in grid)
    p, p_t = model.config.patch_size, model.config.patch_size_t
    return Geometry(text_len=text.shape[1], frames=frames // p_t, grid=(height // p, width // p))


LTX = SiteMap(
    family="ltx",
    model_classes=("LTXVideoTransformer3DModel",),
    enumerate_sites=ltx_sites,
    read_geometry=_ltx_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="LTX-Video: video self-attention then masked cross-attention to T5 text, tokens (frame, y, x)",
    latent_dims=STREAM_DIMS,
    latent_tokens="video",  # the pipeline packs (frame, y, x) latent patches into tokens
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn2.probs",),
    text_keys=("transformer_blocks.*.attn2.k",),
    text_values=("transformer_blocks.*.attn2.v",),
)

SITE_MAPS = (LTX,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("LTXPipeline",),
        denoiser_attribute="transformer",
        description="LTX-Video: [uncond | cond] batched guidance; text axis T5 tokens padded to max_sequence_length (masked)",
    ),
)
