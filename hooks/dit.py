"""Plain diffusion transformers: ``DiTTransformer2DModel`` (class-conditional) and
``PixArtTransformer2DModel`` (text cross-attention). Image tokens only flow through the blocks;
PixArt's ``attn2`` attends from image tokens to T5 text tokens."""

from __future__ import annotations

from workbench.sitemap import (
    IMAGE,
    STREAM_DIMS,
    TEXT,
    InputTap,
    PipelineFacts,
    SiteMap,
    attention_sites,
    output_site,
    tokens_of,
)

from .sd3 import patched_geometry


def self_then_cross_block_sites(path: str, tokens=IMAGE, cross: str | None = "cross-attention to the prompt") -> list:
    """One block of the PixArt layout, shared by DiT/PixArt, HunyuanDiT, Wan and LTX-Video: its
    output, self-attention (``attn1``) over the image or video tokens and its output, then, where
    ``cross`` describes one, cross-attention (``attn2``) from those tokens to the text and its output."""
    noun = tokens.segments[0]  # "image" or "video"
    sites = [output_site(path, "out", None, STREAM_DIMS, f"block output ({noun} tokens)", tokens)]
    sites += attention_sites(f"{path}.attn1", tokens, tokens, f"self-attention over {noun} tokens")
    sites.append(output_site(f"{path}.attn1", "out", None, STREAM_DIMS, "attn1 output", tokens))
    if cross is not None:
        sites += attention_sites(f"{path}.attn2", tokens, TEXT, cross)
        sites.append(output_site(f"{path}.attn2", "out", None, STREAM_DIMS, "attn2 output", tokens))
    return sites


def dit_sites(model) -> list:
    return [site for i, block in enumerate(model.transformer_blocks)
            for site in self_then_cross_block_sites(f"transformer_blocks.{i}",
                                                    cross=None if getattr(block, "attn2", None) is None
                                                    else "cross-attention to the prompt")]


DIT = SiteMap(
    family="dit",
    model_classes=("DiTTransformer2DModel",),
    enumerate_sites=dit_sites,
    read_geometry=patched_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="DiT: class-conditional transformer over image patches",
    stages=("transformer_blocks",),
)

PIXART = SiteMap(
    family="pixart",
    model_classes=("PixArtTransformer2DModel",),
    enumerate_sites=dit_sites,
    read_geometry=patched_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="PixArt: transformer over image patches with cross-attention to T5 text",
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn2.probs",),
    text_keys=("transformer_blocks.*.attn2.k",),
    text_values=("transformer_blocks.*.attn2.v",),
)

SITE_MAPS = (DIT, PIXART)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("DiTPipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # DiT batches the class labels first, the null class second
        prompt_arg="class_labels",
        text_tokens=lambda pipeline, prompts, text_len: None,
        description="DiT: class labels as prompts; [cond | uncond] batched guidance",
    ),
    PipelineFacts(
        pipeline_classes=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
        denoiser_attribute="transformer",
        text_tokens=tokens_of("tokenizer"),
        description="PixArt: [uncond | cond] batched guidance; text axis T5",
    ),
)
