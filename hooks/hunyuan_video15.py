"""HunyuanVideo 1.5 (``HunyuanVideo15Transformer3DModel``): an MM-DiT with one joint attention over
[video | context] tokens per block.

The context axis (labelled ``text``) is built inside the denoiser from three sources, per sample
with its valid tokens first: [image (image-to-video) | byT5 glyph text | MLLM (Qwen2.5-VL) text],
then the padding of each. Text-to-video zeroes and masks the image tokens. Padding is masked on
both sides of the attention (a padding query attends nowhere: its probability row is zero), so
recorded rows of real tokens sum to one over real keys. Blocks and ``attn`` return
``(video, context)``; the context stream is dropped after the last block, so the prompt reaches
the video only through the context keys and values. The per-sample reordering means context
positions are not one tokenizer's positions: recordings leave ``key_token`` unlabelled.
"""

from __future__ import annotations

from workbench.sitemap import (
    VIDEO,
    VIDEO_TEXT,
    Geometry,
    InputTap,
    SiteMap,
    attention_sites,
    kwarg_or_arg,
)

from .sd3 import stream_outputs
from .wan import VIDEO_LATENT_DIMS, video_patch_geometry


def hunyuan_video15_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += stream_outputs(path, 1, 0, visual=VIDEO)
        sites += attention_sites(f"{path}.attn", VIDEO_TEXT, VIDEO_TEXT, "joint attention [video | image, byT5, MLLM context]")
        sites += stream_outputs(f"{path}.attn", 1, 0, "attention output", visual=VIDEO)
    return sites


def _hunyuan_video15_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    context = [kwarg_or_arg(args, kwargs, InputTap(name, position)) for name, position in
               (("encoder_hidden_states", 2), ("encoder_hidden_states_2", 5), ("image_embeds", 7))]
    geometry = video_patch_geometry(latent, None, (model.config.patch_size_t, model.config.patch_size, model.config.patch_size))
    geometry.text_len = sum(c.shape[1] for c in context if c is not None)
    return geometry


HUNYUAN_VIDEO15 = SiteMap(
    family="hunyuan_video15",
    model_classes=("HunyuanVideo15Transformer3DModel",),
    enumerate_sites=hunyuan_video15_sites,
    read_geometry=_hunyuan_video15_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="HunyuanVideo 1.5: joint attention over [video | image, byT5, MLLM context], tokens (frame, y, x)",
    latent_dims=VIDEO_LATENT_DIMS,
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn.probs.video->text",),
    text_keys=("transformer_blocks.*.attn.k.text",),
    text_values=("transformer_blocks.*.attn.v.text",),
)

SITE_MAPS = (HUNYUAN_VIDEO15,)
