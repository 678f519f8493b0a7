"""CogVideoX (``CogVideoXTransformer3DModel``, 1.0 and 1.5): an expert-adaptive DiT with one joint
attention over [text | video] tokens per block.

Blocks and their ``attn1`` return ``(video, text)``. The text and video streams share one set of
q/k/v projections (no ``add_*_proj``); norms and feed-forward act token by token and the text
stream is dropped after the last block, so the prompt reaches the video tokens only through the
text keys and values of each joint attention (patching them all is the prompt swap). The latent
is (batch, frames, channels, height, width); 1.5 checkpoints also patch time (``patch_size_t``).
"""

from __future__ import annotations

from workbench.sitemap import (
    TEXT_VIDEO,
    VIDEO,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    attention_sites,
    kwarg_or_arg,
)

from .sd3 import stream_outputs


def cogvideox_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += stream_outputs(path, 1, 0, visual=VIDEO)
        sites += attention_sites(f"{path}.attn1", TEXT_VIDEO, TEXT_VIDEO, "joint attention [text | video]")
        sites += stream_outputs(f"{path}.attn1", 1, 0, "attention output", visual=VIDEO)
    return sites


def _cogvideox_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))  # (batch, frames, channels, h, w)
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    p, p_t = model.config.patch_size, model.config.patch_size_t or 1
    return Geometry(text_len=text.shape[1], frames=-(-latent.shape[1] // p_t),  # 1.5 pads the last frame group
                    grid=(latent.shape[3] // p, latent.shape[4] // p))


COGVIDEOX = SiteMap(
    family="cogvideox",
    model_classes=("CogVideoXTransformer3DModel",),
    enumerate_sites=cogvideox_sites,
    read_geometry=_cogvideox_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="CogVideoX: joint attention over [text | video] tokens, (frame, y, x) video grid",
    latent_dims=("frame", "channel", "y", "x"),
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn1.probs.video->text",),
    text_keys=("transformer_blocks.*.attn1.k.text",),
    text_values=("transformer_blocks.*.attn1.v.text",),
)

SITE_MAPS = (COGVIDEOX,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("CogVideoXPipeline",),
        denoiser_attribute="transformer",
        description="CogVideoX: [uncond | cond] batched guidance; text axis T5 tokens padded to max_sequence_length",
    ),
)
