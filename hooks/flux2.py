"""FLUX.2 (``Flux2Transformer2DModel``; [klein] and [dev]): double-stream joint blocks, then
single-stream blocks whose attention runs in parallel with the MLP (one fused input projection,
one output projection over [attention | MLP]). Tokens in [text | image] order as in FLUX.1; the
position ids have four axes (t, row, col, layer). Klein's classifier-free guidance runs as two
denoiser calls per step (conditional first): record it with ``branch_calls=("cond", "uncond")``.

Outside this file FLUX.2 touched only its tiny builder (``workbench/models/tiny/flux2.py``).
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

from .flux import packed_grid
from .sd3 import text_first_joint_block_sites


def double_then_single_sites(single_attention_output: str):
    """Sites of a FLUX-like tree whose single-stream blocks and their attention return the joint
    [text | image] sequence as one tensor (FLUX.2, Chroma); ``single_attention_output`` says what
    the single-stream attention module returns."""

    def sites_of(model) -> list:
        sites = []
        for i, _ in enumerate(model.transformer_blocks):
            path = f"transformer_blocks.{i}"
            sites += text_first_joint_block_sites(path)
        for i, _ in enumerate(model.single_transformer_blocks):
            path = f"single_transformer_blocks.{i}"
            sites.append(output_site(path, "out", None, STREAM_DIMS, "single-stream block output [text | image]", TEXT_IMAGE))
            sites += attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "single-stream joint attention [text | image]")
            sites.append(output_site(f"{path}.attn", "out", None, STREAM_DIMS, single_attention_output, TEXT_IMAGE))
        return sites

    return sites_of


def _flux2_geometry(model, args, kwargs) -> Geometry:
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    # img_ids holds each packed token's (t, row, col, layer), batched or not
    grid = packed_grid(kwarg_or_arg(args, kwargs, InputTap("img_ids", 3)))
    return Geometry(text_len=text.shape[1], grid=grid)


FLUX2 = SiteMap(
    family="flux2",
    model_classes=("Flux2Transformer2DModel",),
    enumerate_sites=double_then_single_sites("single-stream parallel attention + MLP output [text | image]"),
    read_geometry=_flux2_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="FLUX.2: double-stream joint blocks then parallel single-stream blocks, tokens [text | image]",
    latent_dims=STREAM_DIMS,
    stages=("transformer_blocks", "single_transformer_blocks"),
    text_attention=("transformer_blocks.*.attn.probs.image->text", "single_transformer_blocks.*.attn.probs.image->text"),
    text_keys=("transformer_blocks.*.attn.k.text", "single_transformer_blocks.*.attn.k.text"),
    text_values=("transformer_blocks.*.attn.v.text", "single_transformer_blocks.*.attn.v.text"),
)


def chat_tokens(thinking: bool):
    """``text_tokens`` of a pipeline that feeds its Qwen3 encoder a chat-templated prompt (one user
    turn, generation prompt), padded to the text axis: FLUX.2 Klein with thinking off (the template
    writes an empty think block), Z-Image with it on (no think block)."""

    def text_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]]:
        tokenizer = pipeline.tokenizer
        rows = []
        for prompt in prompts:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True, enable_thinking=thinking)
            rows.append(padded_tokens(tokenizer, text, text_len))
        return rows

    return text_tokens


SITE_MAPS = (FLUX2,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("Flux2KleinPipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        text_tokens=chat_tokens(thinking=False),
        description="FLUX.2 klein: guidance as two calls per step (cond, uncond); text axis chat-templated Qwen3",
    ),
)
