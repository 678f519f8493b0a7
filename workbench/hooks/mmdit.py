"""Site maps for multimodal diffusion transformers: SD3 / SD3.5 and FLUX.1.

Both run one joint attention over image and text tokens, but in opposite order: SD3 concatenates
[image | text], FLUX [text | image]. Every joint block returns ``(text, image)``; SD3's last block
has ``context_pre_only`` and returns ``None`` for text; SD3.5 adds an image-only ``attn2`` in some
blocks. FLUX's single-stream blocks run one attention over the joint [text | image] sequence.
"""

from __future__ import annotations

from .base import STREAM_DIMS, Geometry, InputTap, SiteMap, kwarg_or_arg
from .common import IMAGE, IMAGE_TEXT, TEXT, TEXT_IMAGE, attention_sites, output_site


def _stream_outputs(path: str, text_index: int | None, image_index: int) -> list:
    sites = [output_site(path, "out.image", image_index, STREAM_DIMS, "block output, image stream", IMAGE)]
    if text_index is not None:
        sites.append(output_site(path, "out.text", text_index, STREAM_DIMS, "block output, text stream", TEXT))
    return sites


def _attention_outputs(path: str, text_index: int | None) -> list:
    sites = [output_site(path, "out.image", 0, STREAM_DIMS, "attention output, image stream", IMAGE)]
    if text_index is not None:
        sites.append(output_site(path, "out.text", text_index, STREAM_DIMS, "attention output, text stream", TEXT))
    return sites


def sd3_sites(model) -> list:
    sites = []
    for i, block in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        # context_pre_only: the last block still attends jointly, but throws the text stream away.
        text_out = None if block.context_pre_only else 0
        sites += _stream_outputs(path, text_out, 1)
        sites += attention_sites(f"{path}.attn", IMAGE_TEXT, IMAGE_TEXT, "joint attention [image | text]")
        sites += _attention_outputs(f"{path}.attn", 1)
        if getattr(block, "use_dual_attention", False):
            sites += attention_sites(f"{path}.attn2", IMAGE, IMAGE, "SD3.5 extra image self-attention")
            sites.append(output_site(f"{path}.attn2", "out", None, STREAM_DIMS, "attn2 output (image)", IMAGE))
    return sites


def _sd3_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    patch = model.config.patch_size
    return Geometry(text_len=text.shape[1], grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


def flux_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += _stream_outputs(path, 0, 1)
        sites += attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "joint attention [text | image]")
        sites += _attention_outputs(f"{path}.attn", 1)
    for i, _ in enumerate(model.single_transformer_blocks):
        path = f"single_transformer_blocks.{i}"
        sites += _stream_outputs(path, 0, 1)
        sites += attention_sites(f"{path}.attn", TEXT_IMAGE, TEXT_IMAGE, "single-stream joint attention [text | image]")
        sites.append(
            output_site(f"{path}.attn", "out", None, STREAM_DIMS, "single-stream attention output [text | image]", TEXT_IMAGE)
        )
    return sites


def _flux_geometry(model, args, kwargs) -> Geometry:
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    img_ids = kwarg_or_arg(args, kwargs, InputTap("img_ids", 4))
    if img_ids.ndim == 3:  # deprecated batched ids: the same for every sample
        img_ids = img_ids[0]
    # FLUX packs 2x2 latent patches into tokens; img_ids holds each token's (_, row, col).
    grid = (int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1)
    return Geometry(text_len=text.shape[1], grid=grid)


SD3 = SiteMap(
    family="sd3",
    model_classes=("SD3Transformer2DModel",),
    enumerate_sites=sd3_sites,
    read_geometry=_sd3_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 3),
    description="MM-DiT (Stable Diffusion 3 / 3.5): joint attention over [image | text]",
)

FLUX = SiteMap(
    family="flux",
    model_classes=("FluxTransformer2DModel",),
    enumerate_sites=flux_sites,
    read_geometry=_flux_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 3),
    description="FLUX.1: double-stream joint blocks then single-stream blocks, tokens [text | image]",
    latent_dims=STREAM_DIMS,
)
