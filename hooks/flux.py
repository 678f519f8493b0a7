"""FLUX.1: double-stream joint blocks, then single-stream blocks, tokens in [text | image] order.

Double blocks return ``(text, image)``; single blocks run one attention over the joint sequence.
The pipeline packs 2x2 latent patches into tokens, so the denoiser's latent is (tokens, channels).
FLUX.1-dev's ``guidance_scale`` feeds a distilled guidance embedding: no second branch.
"""

from __future__ import annotations

from workbench.sitemap import (
    STREAM_DIMS,
    TEXT_IMAGE,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    attention_sites,
    kwarg_or_arg,
    output_site,
    tokens_of,
)

from .sd3 import stream_outputs, text_first_joint_block_sites


def flux_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += text_first_joint_block_sites(path)
    for i, _ in enumerate(model.single_transformer_blocks):
        path = f"single_transformer_blocks.{i}"
        sites += stream_outputs(path, 0, 1)
        sites += attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "single-stream joint attention [text | image]")
        sites.append(
            output_site(f"{path}.attn", "out", None, STREAM_DIMS, "single-stream attention output [text | image]", TEXT_IMAGE)
        )
    return sites


_last_grid: tuple | None = None  # (ids tensor, its version, its grid): the last ids read


def packed_grid(img_ids) -> tuple[int, int]:
    """(rows, cols) of packed latent tokens from their position ids ``(_, row, col, ...)`` (one row
    per token; batched ids are the same for every sample). Read on the host once per ids tensor: a
    pipeline passes the same tensor at every call of a run, and reading a GPU tensor on the host
    makes it wait for the device, at every denoiser call otherwise. The tensor is held (so its
    identity cannot pass to another) and its version checked (an in-place change reads it again)."""
    global _last_grid
    if _last_grid is not None and _last_grid[0] is img_ids and _last_grid[1] == img_ids._version:
        return _last_grid[2]
    ids = img_ids[0] if img_ids.ndim == 3 else img_ids
    grid = (int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)
    _last_grid = (img_ids, img_ids._version, grid)
    return grid


def _flux_geometry(model, args, kwargs) -> Geometry:
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    grid = packed_grid(kwarg_or_arg(args, kwargs, InputTap("img_ids", 4)))  # deprecated batched ids too
    return Geometry(text_len=text.shape[1], grid=grid)


FLUX = SiteMap(
    family="flux",
    model_classes=("FluxTransformer2DModel",),
    enumerate_sites=flux_sites,
    read_geometry=_flux_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 3),
    description="FLUX.1: double-stream joint blocks then single-stream blocks, tokens [text | image]",
    latent_dims=STREAM_DIMS,
    stages=("transformer_blocks", "single_transformer_blocks"),
    text_attention=("transformer_blocks.*.attn.probs.image->text", "single_transformer_blocks.*.attn.probs.image->text"),
    text_keys=("transformer_blocks.*.attn.k.text", "single_transformer_blocks.*.attn.k.text"),
    text_values=("transformer_blocks.*.attn.v.text", "single_transformer_blocks.*.attn.v.text"),
)


def _flux_unpack(pipeline, latents):
    side = int(round(latents.shape[1] ** 0.5)) * 2 * pipeline.vae_scale_factor
    return pipeline._unpack_latents(latents, side, side, pipeline.vae_scale_factor)


SITE_MAPS = (FLUX,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
        denoiser_attribute="transformer",
        guidance="embedded",
        text_tokens=tokens_of("tokenizer_2"),  # the T5 tokens; CLIP only gives the pooled vector
        unpack_latents=_flux_unpack,
        description="FLUX.1: guidance embedded (true CFG runs as separate calls); text axis T5",
    ),
)
