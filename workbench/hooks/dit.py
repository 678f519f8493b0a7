"""Site maps for plain diffusion transformers: ``DiTTransformer2DModel`` (class-conditional) and
``PixArtTransformer2DModel`` (text cross-attention). Image tokens only flow through the blocks;
PixArt's ``attn2`` attends from image tokens to T5 text tokens."""

from __future__ import annotations

from .base import STREAM_DIMS, Geometry, InputTap, SiteMap, kwarg_or_arg
from .common import IMAGE, TEXT, attention_sites, output_site


def dit_sites(model) -> list:
    sites = []
    for i, block in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites.append(output_site(path, "out", None, STREAM_DIMS, "block output (image tokens)", IMAGE))
        sites += attention_sites(f"{path}.attn1", IMAGE, IMAGE, "self-attention over image tokens")
        sites.append(output_site(f"{path}.attn1", "out", None, STREAM_DIMS, "attn1 output", IMAGE))
        if getattr(block, "attn2", None) is not None:
            sites += attention_sites(f"{path}.attn2", IMAGE, TEXT, "cross-attention to the prompt")
            sites.append(output_site(f"{path}.attn2", "out", None, STREAM_DIMS, "attn2 output", IMAGE))
    return sites


def _dit_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 1))
    text_len = text.shape[1] if text is not None and text.ndim == 3 else 0
    patch = model.config.patch_size
    return Geometry(text_len=text_len, grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


DIT = SiteMap(
    family="dit",
    model_classes=("DiTTransformer2DModel",),
    enumerate_sites=dit_sites,
    read_geometry=_dit_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="DiT: class-conditional transformer over image patches",
)

PIXART = SiteMap(
    family="pixart",
    model_classes=("PixArtTransformer2DModel",),
    enumerate_sites=dit_sites,
    read_geometry=_dit_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="PixArt: transformer over image patches with cross-attention to T5 text",
)
