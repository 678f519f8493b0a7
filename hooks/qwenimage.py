"""Qwen-Image (``QwenImageTransformer2DModel``): an MM-DiT of joint blocks only, tokens in
[text | image] order inside the attention. Blocks return ``(text, image)``, the attention returns
``(image, text)``. The text comes from a Qwen2.5-VL language model: the pipeline formats the
prompt into a chat template, drops the template's first ``prompt_template_encode_start_idx``
tokens and passes a text mask, so padded text keys are masked out of the joint attention.
Classifier-free guidance (``true_cfg_scale`` > 1 with a negative prompt) runs as two calls per
step, conditional first: record it with ``branch_calls=("cond", "uncond")``.

Outside this file Qwen-Image touched only its tiny builder (``workbench/models/tiny/qwenimage.py``).
"""

from __future__ import annotations

from workbench.sitemap import (
    STREAM_DIMS,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    kwarg_or_arg,
    padded_tokens,
)

from .sd3 import text_first_joint_block_sites


def qwenimage_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += text_first_joint_block_sites(path)
    return sites


def _qwenimage_geometry(model, args, kwargs) -> Geometry:
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    shapes = kwarg_or_arg(args, kwargs, InputTap("img_shapes", 4))
    frames, rows, cols = shapes[0][0]  # (frames, rows, cols) of the first sample's generated image
    return Geometry(text_len=text.shape[1], grid=(rows, cols))


QWENIMAGE = SiteMap(
    family="qwenimage",
    model_classes=("QwenImageTransformer2DModel",),
    enumerate_sites=qwenimage_sites,
    read_geometry=_qwenimage_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 3),
    description="Qwen-Image: joint (MM-DiT) blocks with masked text keys, tokens [text | image]",
    latent_dims=STREAM_DIMS,
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn.probs.image->text",),
    text_keys=("transformer_blocks.*.attn.k.text",),
    text_values=("transformer_blocks.*.attn.v.text",),
)


def _qwenimage_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]]:
    drop = pipeline.prompt_template_encode_start_idx
    texts = [pipeline.prompt_template_encode.format(p) for p in prompts]
    return [padded_tokens(pipeline.tokenizer, text, drop + text_len)[drop:] for text in texts]


SITE_MAPS = (QWENIMAGE,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("QwenImagePipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        text_tokens=_qwenimage_tokens,
        description="Qwen-Image: true CFG as two calls per step (cond, uncond); text axis Qwen2.5-VL after the template",
    ),
)
