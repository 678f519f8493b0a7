"""Stable Diffusion 3 / 3.5: an MM-DiT with one joint attention over [image | text] tokens.

Every joint block returns ``(text, image)``; the last block has ``context_pre_only`` and returns
``None`` for text (it still attends jointly, but throws the text stream away); SD3.5 adds an
image-only ``attn2`` in some blocks. The text axis is [CLIP (77, padded) | T5] tokens.
"""

from __future__ import annotations

from workbench.sitemap import (
    IMAGE,
    IMAGE_TEXT,
    STREAM_DIMS,
    TEXT,
    TEXT_IMAGE,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    TokenLayout,
    attention_sites,
    kwarg_or_arg,
    output_site,
    padded_tokens,
)


def stream_outputs(path: str, text_index: int | None, image_index: int, what: str = "block output",
                   visual: TokenLayout = IMAGE) -> list:
    """A joint block's (or joint attention's) outputs: the visual stream (image, or video for a
    video denoiser: ``out.video``) and, unless dropped, text."""
    kind = visual.segments[0]
    sites = [output_site(path, f"out.{kind}", image_index, STREAM_DIMS, f"{what}, {kind} stream", visual)]
    if text_index is not None:
        sites.append(output_site(path, "out.text", text_index, STREAM_DIMS, f"{what}, text stream", TEXT))
    return sites


def text_first_joint_block_sites(path: str) -> list:
    """A FLUX-style double-stream block at ``path`` that returns ``(text, image)``, whose attention
    runs over [text | image] and returns ``(image, text)`` (FLUX.1/.2, Chroma, Qwen-Image, AuraFlow)."""
    return (stream_outputs(path, 0, 1)
            + attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "joint attention [text | image]")
            + stream_outputs(f"{path}.attn", 1, 0, "attention output"))


def sd3_sites(model) -> list:
    sites = []
    for i, block in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        text_out = None if block.context_pre_only else 0
        sites += stream_outputs(path, text_out, 1)
        sites += attention_sites(f"{path}.attn", IMAGE_TEXT, IMAGE_TEXT, "joint attention [image | text]")
        sites += stream_outputs(f"{path}.attn", 1, 0, "attention output")
        if getattr(block, "use_dual_attention", False):
            sites += attention_sites(f"{path}.attn2", IMAGE, IMAGE, "SD3.5 extra image self-attention")
            sites.append(output_site(f"{path}.attn2", "out", None, STREAM_DIMS, "attn2 output (image)", IMAGE))
    return sites


def patched_geometry(model, args, kwargs) -> Geometry:
    """Text length from the text input, image grid from the latent and the patch size."""
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    text_len = text.shape[1] if text is not None and text.ndim == 3 else 0
    patch = model.config.patch_size
    return Geometry(text_len=text_len, grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


SD3 = SiteMap(
    family="sd3",
    model_classes=("SD3Transformer2DModel",),
    enumerate_sites=sd3_sites,
    read_geometry=patched_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 3),
    description="MM-DiT (Stable Diffusion 3 / 3.5): joint attention over [image | text]",
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn.probs.image->text",),
    text_keys=("transformer_blocks.*.attn.k.text",),
    text_values=("transformer_blocks.*.attn.v.text",),
)


def _sd3_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]] | None:
    clip, t5 = getattr(pipeline, "tokenizer", None), getattr(pipeline, "tokenizer_3", None)
    if clip is None or t5 is None:
        return None
    clip_len = clip.model_max_length
    return [padded_tokens(clip, p, clip_len) + padded_tokens(t5, p, text_len - clip_len) for p in prompts]


def _sd3_encoders(pipeline, text_len: int) -> list[tuple[str, int]]:
    # CLIP-L and CLIP-G read the same tokens and are joined on channels: one stretch, "clip"
    clip_len = pipeline.tokenizer.model_max_length
    return [("clip", clip_len), ("t5", text_len - clip_len)]


def _sd3_encode(pipeline, prompts: list[str], device) -> dict:
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False
    )
    return {"encoder_hidden_states": embeds, "pooled_projections": pooled}


SITE_MAPS = (SD3,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
        denoiser_attribute="transformer",
        text_tokens=_sd3_tokens,
        text_encoders=_sd3_encoders,
        encode_prompts=_sd3_encode,
        description="SD3: [uncond | cond] batched guidance; text axis [CLIP-L+G (77) | T5]",
    ),
)
