"""Z-Image (``ZImageTransformer2DModel``; Z-Image / Z-Image-Turbo): a single-stream DiT built like
Lumina 2, in the other token order.

The image runs through its own refiner blocks (``noise_refiner``: timestep-modulated image
self-attention), then the caption through its own (``context_refiner``: text self-attention);
then each sample's [image | caption] tokens form one sequence for the joint blocks (``layers``).
Every stream is padded to a multiple of 32 tokens with a learned pad token (attended, not masked);
samples whose padded captions differ in length are padded at the end of the batch and those keys
are masked out. Every block and attention module returns one tensor. Text reaches the image tokens
only through the joint attention's keys and values.

The denoiser takes its latents as a list of per-sample ``(channels, 1, height, width)`` tensors and
the captions as a list of per-sample ``(tokens, channels)`` tensors (the pipeline drops each prompt's
padding), and returns a list: ``latent_batching`` stacks them into the ``(batch, channels, y, x)``
latents the pipeline and its scheduler hold. Classifier-free guidance is batched [cond | uncond]
and is on whenever the pipeline's ``guidance_scale`` is above 0 (it computes ``cond + scale *
(cond - uncond)``).
"""

from __future__ import annotations

import inspect

import torch

from workbench.sitemap import IMAGE_TEXT, Geometry, InputTap, PipelineFacts, SiteMap, kwarg_or_arg

from .flux2 import chat_tokens
from .lumina2 import refined_then_joint_sites

_STREAM_MULTIPLE = 32  # Z-Image pads the image, caption and joint streams to multiples of this


def _padded(n: int) -> int:
    return -(-n // _STREAM_MULTIPLE) * _STREAM_MULTIPLE


def _zimage_geometry(model, args, kwargs) -> Geometry:
    latents = kwarg_or_arg(args, kwargs, InputTap("x", 0))
    captions = kwarg_or_arg(args, kwargs, InputTap("cap_feats", 2))
    if isinstance(latents[0], (list, tuple)):
        raise ValueError("zimage: this call is Z-Image Omni's (several images and SigLIP tokens per sample), whose "
                         "[caption | images | SigLIP] sequence the Z-Image site map does not lay out; "
                         "text-to-image calls (one latent per sample) record")
    patch = kwarg_or_arg(args, kwargs, InputTap("patch_size", 7))
    if patch is None:  # not passed (the pipeline does not): the forward's default
        patch = inspect.signature(model.forward).parameters["patch_size"].default
    frames, height, width = latents[0].shape[-3:]
    grid = (height // patch, width // patch)
    if (frames * grid[0] * grid[1]) % _STREAM_MULTIPLE:
        raise ValueError(
            f"zimage: {frames * grid[0] * grid[1]} image tokens ({grid[0]} x {grid[1]}) are padded to a multiple of "
            f"{_STREAM_MULTIPLE} with pad tokens, which no token grid labels; record at a size whose latent grid of "
            f"{patch} x {patch} patches holds a multiple of {_STREAM_MULTIPLE} tokens (e.g. 1024 x 1024 px: 64 x 64)"
        )
    return Geometry(text_len=max(_padded(len(c)) for c in captions), grid=grid)


def _stack(latents) -> torch.Tensor:
    return torch.stack([x.squeeze(1) for x in latents])  # (channels, 1, y, x) each -> (batch, channels, y, x)


def _unstack(batch: torch.Tensor, original) -> list[torch.Tensor]:
    return [x.unsqueeze(1) for x in batch.unbind(0)]


_REFINERS = ("noise_refiner", "context_refiner")  # forward order

ZIMAGE = SiteMap(
    family="zimage",
    model_classes=("ZImageTransformer2DModel",),
    enumerate_sites=refined_then_joint_sites("attention", IMAGE_TEXT, _REFINERS),
    read_geometry=_zimage_geometry,
    latent_input=InputTap("x", 0),
    timestep_input=InputTap("t", 1),
    description="Z-Image: image and caption refiners, then single-stream blocks over [image | caption]",
    stages=(*_REFINERS, "layers"),
    text_attention=("layers.*.attention.probs.image->text",),
    text_keys=("layers.*.attention.k.text",),
    text_values=("layers.*.attention.v.text",),
    latent_batching=(_stack, _unstack),
    timestep_rises=True,  # the pipeline passes (1000 - t) / 1000
)


SITE_MAPS = (ZIMAGE,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("ZImagePipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # one call per step, the conditional rows first
        text_tokens=chat_tokens(thinking=True),
        description="Z-Image: [cond | uncond] batched guidance (on above guidance_scale 0); text axis chat-templated Qwen3",
    ),
)
