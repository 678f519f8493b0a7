"""Mochi 1 (``MochiTransformer3DModel``): an asymmetric MM-DiT with one joint attention over
[video | text] tokens per block, the text stream narrower than the video stream (its own
``add_*_proj`` projections).

Blocks and their ``attn1`` return ``(video, text)``; the last block keeps no text stream of its
own (``context_pre_only``) but still returns the text it was given. The prompt also reaches the
video through the timestep embedding (an attention pool over the T5 tokens), so patching the
text keys and values alone is not the prompt swap. Mochi's attention processor runs the kernel
once per sample, over [video | that sample's unpadded text tokens] (``encoder_attention_mask``):
the site map declares it (``per_sample_attention``), and recordings lay each sample on the whole
text axis, the padding tokens zero with zero probability on both sides.
"""

from __future__ import annotations

from workbench.sitemap import VIDEO, VIDEO_TEXT, InputTap, PipelineFacts, SiteMap, attention_sites, kwarg_or_arg

from .sd3 import stream_outputs
from .wan import VIDEO_LATENT_DIMS, video_patch_geometry


def mochi_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += stream_outputs(path, 1, 0, visual=VIDEO)
        sites += attention_sites(f"{path}.attn1", VIDEO_TEXT, VIDEO_TEXT, "joint attention [video | text]")
        sites += stream_outputs(f"{path}.attn1", 1, 0, "attention output", visual=VIDEO)
    return sites


def _mochi_geometry(model, args, kwargs):
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))  # (batch, channels, frames, h, w)
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    p = model.config.patch_size
    return video_patch_geometry(latent, text, (1, p, p))  # patches are spatial only


MOCHI = SiteMap(
    family="mochi",
    model_classes=("MochiTransformer3DModel",),
    enumerate_sites=mochi_sites,
    read_geometry=_mochi_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="Mochi 1: joint attention over [video | T5 text], run one sample at a time, tokens (frame, y, x)",
    latent_dims=VIDEO_LATENT_DIMS,
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn1.probs.video->text",),
    text_keys=("transformer_blocks.*.attn1.k.text",),
    text_values=("transformer_blocks.*.attn1.v.text",),
    per_sample_attention=InputTap("attention_mask", 2),  # MochiAttention.forward(hidden_states, encoder_hidden_states, attention_mask)
)

SITE_MAPS = (MOCHI,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("MochiPipeline",),
        denoiser_attribute="transformer",
        description="Mochi 1: [uncond | cond] batched guidance; text axis T5 tokens padded to max_sequence_length "
                    "(the padding is dropped per sample)",
    ),
)
