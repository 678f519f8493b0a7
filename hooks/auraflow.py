"""AuraFlow: an MM-DiT with joint blocks (``joint_transformer_blocks``) and then single-stream
blocks over the joint sequence, tokens in [text | image] order like FLUX, but with the latent kept
as a (channels, height, width) map and learned *register tokens* in front of the text: the text
axis is [registers | T5 tokens]. Joint blocks and their attention return ``(text, image)`` and
``(image, text)`` respectively, as in SD3.

Adding this file was all AuraFlow needed: no engine code changed.
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
    padded_tokens,
)

from .sd3 import text_first_joint_block_sites


def auraflow_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.joint_transformer_blocks):
        path = f"joint_transformer_blocks.{i}"
        sites += text_first_joint_block_sites(path)
    for i, _ in enumerate(model.single_transformer_blocks):
        path = f"single_transformer_blocks.{i}"
        sites.append(output_site(path, "out", None, STREAM_DIMS, "single-stream block output [text | image]", TEXT_IMAGE))
        sites += attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "single-stream joint attention [text | image]")
        sites.append(
            output_site(f"{path}.attn", "out", None, STREAM_DIMS, "single-stream attention output [text | image]", TEXT_IMAGE)
        )
    return sites


def _registers(model) -> int:
    return model.register_tokens.shape[1]


def _auraflow_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    patch = model.config.patch_size
    return Geometry(text_len=text.shape[1] + _registers(model), grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


AURAFLOW = SiteMap(
    family="auraflow",
    model_classes=("AuraFlowTransformer2DModel",),
    enumerate_sites=auraflow_sites,
    read_geometry=_auraflow_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="AuraFlow: joint blocks then single-stream blocks, tokens [registers + text | image]",
    stages=("joint_transformer_blocks", "single_transformer_blocks"),
    text_attention=("joint_transformer_blocks.*.attn.probs.image->text", "single_transformer_blocks.*.attn.probs.image->text"),
    text_keys=("joint_transformer_blocks.*.attn.k.text", "single_transformer_blocks.*.attn.k.text"),
    text_values=("joint_transformer_blocks.*.attn.v.text", "single_transformer_blocks.*.attn.v.text"),
)


def _auraflow_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]] | None:
    registers = _registers(pipeline.transformer)
    names = [f"<register_{r}>" for r in range(registers)]
    return [names + padded_tokens(pipeline.tokenizer, p, text_len - registers) for p in prompts]


SITE_MAPS = (AURAFLOW,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("AuraFlowPipeline",),
        denoiser_attribute="transformer",
        text_tokens=_auraflow_tokens,
        description="AuraFlow: [uncond | cond] batched guidance; text axis [registers | UMT5]",
    ),
)
