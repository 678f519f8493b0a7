"""U-Nets: ``UNet2DConditionModel`` (Stable Diffusion 1.x/2.x; SDXL adds its pipeline in ``sdxl.py``)
and ``UNet2DModel`` (DDPM, unconditional).

Down blocks return ``(hidden, skips)`` and push one skip per resnet (and per downsampler); up block
``i`` pops them off the end of ``res_hidden_states_tuple``, one per resnet, and concatenates each
to its input channels. ``up_blocks.i.skip.j`` is the tensor resnet ``j`` of that up block receives,
exactly as the up block is handed it (before any FreeU re-weighting inside the block), and
``up_blocks.i.backbone.j`` the hidden states it is concatenated to (FreeU scales those).
"""

from __future__ import annotations

from workbench.sitemap import (
    IMAGE,
    SPATIAL_DIMS,
    STREAM_DIMS,
    TEXT,
    Geometry,
    InputTap,
    OutputTap,
    PipelineFacts,
    Site,
    SiteMap,
    attention_sites,
    kwarg_or_arg,
    output_site,
)


def _resnet_sites(path: str, block) -> list[Site]:
    return [
        output_site(f"{path}.resnets.{j}", "out", None, SPATIAL_DIMS, "resnet output")
        for j in range(len(block.resnets))
    ]


def _transformer_sites(path: str, transformer) -> list[Site]:
    """A ``Transformer2DModel`` inside a U-Net block: its output and its attention modules."""
    sites = [output_site(path, "out", 0, SPATIAL_DIMS, "spatial transformer output")]
    for m, tblock in enumerate(transformer.transformer_blocks):
        tpath = f"{path}.transformer_blocks.{m}"
        sites.append(output_site(tpath, "out", None, STREAM_DIMS, "transformer block output (image tokens)", IMAGE))
        cross_only = getattr(tblock, "only_cross_attention", False)
        sites += attention_sites(
            f"{tpath}.attn1", IMAGE, TEXT if cross_only else IMAGE,
            "cross-attention to the prompt" if cross_only else "self-attention over image tokens",
        )
        sites.append(output_site(f"{tpath}.attn1", "out", None, STREAM_DIMS, "attn1 output", IMAGE))
        if getattr(tblock, "attn2", None) is not None:
            sites += attention_sites(f"{tpath}.attn2", IMAGE, TEXT, "cross-attention to the prompt")
            sites.append(output_site(f"{tpath}.attn2", "out", None, STREAM_DIMS, "attn2 output", IMAGE))
    return sites


def _spatial_attention_sites(path: str) -> list[Site]:
    """A bare ``Attention`` over a feature map (UNet2DModel's attention blocks)."""
    sites = attention_sites(path, IMAGE, IMAGE, "self-attention over the feature map")
    sites.append(output_site(path, "out", None, SPATIAL_DIMS, "attention block output (with residual)"))
    return sites


def _block_attention_sites(path: str, block) -> list[Site]:
    sites = []
    for k, attention in enumerate(getattr(block, "attentions", None) or []):
        if attention is None:
            continue
        apath = f"{path}.attentions.{k}"
        if hasattr(attention, "transformer_blocks"):
            sites += _transformer_sites(apath, attention)
        else:
            sites += _spatial_attention_sites(apath)
    return sites


def unet_sites(model) -> list[Site]:
    sites = []
    for i, block in enumerate(model.down_blocks):
        path = f"down_blocks.{i}"
        sites.append(output_site(path, "out", 0, SPATIAL_DIMS, "down block output (input to the next block)"))
        sites += _resnet_sites(path, block) + _block_attention_sites(path, block)
        sites += _sampler_sites(path, block, "downsamplers", "downsampler output (the next block's input)")
    if model.mid_block is not None:
        sites.append(output_site("mid_block", "out", None, SPATIAL_DIMS, "mid block output (the bottleneck)"))
        sites += _resnet_sites("mid_block", model.mid_block) + _block_attention_sites("mid_block", model.mid_block)
    for i, block in enumerate(model.up_blocks):
        path = f"up_blocks.{i}"
        sites.append(output_site(path, "out", None, SPATIAL_DIMS, "up block output (backbone path)"))
        for j in range(len(block.resnets)):
            sites.append(
                Site(
                    f"{path}.skip.{j}",
                    path,
                    InputTap("res_hidden_states_tuple", position=1, from_end=j + 1),
                    SPATIAL_DIMS,
                    f"skip connection consumed by resnet {j} of this up block (concatenated to its input)",
                )
            )
        sites += _backbone_sites(path, block)
        sites += _resnet_sites(path, block) + _block_attention_sites(path, block)
        sites += _sampler_sites(path, block, "upsamplers", "upsampler output (the up block's output)")
    return sites


def _sampler_sites(path: str, block, kind: str, meaning: str) -> list[Site]:
    """``down_blocks.i.downsamplers.0.out`` / ``up_blocks.i.upsamplers.0.out``: their own sites so
    that reuse can cache them (DeepCache's branches cut between a block's last resnet and its
    sampler, and a reused sampler must not run)."""
    return [output_site(f"{path}.{kind}.{k}", "out", None, SPATIAL_DIMS, meaning)
            for k in range(len(getattr(block, kind, None) or []))]


def _backbone_sites(path: str, block) -> list[Site]:
    """``up_blocks.i.backbone.j``: the hidden states resnet ``j`` concatenates skip ``j`` to (FreeU's
    "backbone"). For ``j = 0`` that is the up block's own input; after it, the output of the layer
    just before resnet ``j`` (its attention if the block has them, else the previous resnet)."""
    attentions = getattr(block, "attentions", None) or []
    sites = []
    for j in range(len(block.resnets)):
        if j == 0:
            module, tap = path, InputTap("hidden_states", position=0)
        elif j - 1 < len(attentions) and attentions[j - 1] is not None:
            # a Transformer2DModel returns a tuple (return_dict=False), a bare Attention a tensor
            index = 0 if hasattr(attentions[j - 1], "transformer_blocks") else None
            module, tap = f"{path}.attentions.{j - 1}", OutputTap(index)
        else:
            module, tap = f"{path}.resnets.{j - 1}", OutputTap(None)
        sites.append(Site(f"{path}.backbone.{j}", module, tap, SPATIAL_DIMS,
                          f"backbone features resnet {j} of this up block receives, before skip {j} is concatenated"))
    return sites


def _unet_geometry(model, args, kwargs) -> Geometry:
    sample = kwarg_or_arg(args, kwargs, InputTap("sample", 0))
    text = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 2))
    return Geometry(text_len=0 if text is None else text.shape[1], grid=tuple(sample.shape[-2:]))


UNET_2D_CONDITION = SiteMap(
    family="unet",
    model_classes=("UNet2DConditionModel",),
    enumerate_sites=unet_sites,
    read_geometry=_unet_geometry,
    latent_input=InputTap("sample", 0),
    timestep_input=InputTap("timestep", 1),
    description="U-Net with cross-attention (Stable Diffusion 1.x/2.x, SDXL)",
    stages=("down_blocks", "mid_block", "up_blocks"),
    text_attention=("**.attn2.probs",),
    text_keys=("**.attn2.k",),
    text_values=("**.attn2.v",),
    skips=("up_blocks.*.skip.*",),
)

UNET_2D = SiteMap(
    family="unet2d",
    model_classes=("UNet2DModel",),
    enumerate_sites=unet_sites,
    read_geometry=_unet_geometry,
    latent_input=InputTap("sample", 0),
    timestep_input=InputTap("timestep", 1),
    description="unconditional U-Net (DDPM)",
    stages=("down_blocks", "mid_block", "up_blocks"),
    skips=("up_blocks.*.skip.*",),
)


def _sd_encode(pipeline, prompts: list[str], device) -> dict:
    embeds, _ = pipeline.encode_prompt(prompts, device, 1, False)
    return {"encoder_hidden_states": embeds}


SITE_MAPS = (UNET_2D_CONDITION, UNET_2D)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
        denoiser_attribute="unet",
        encode_prompts=_sd_encode,
        description="Stable Diffusion 1.x/2.x: [uncond | cond] batched guidance; text axis CLIP (77)",
    ),
    PipelineFacts(
        pipeline_classes=("DDPMPipeline",),
        denoiser_attribute="unet",
        guidance="none",
        prompt_arg="",  # unconditional: no prompts
        text_tokens=lambda pipeline, prompts, text_len: None,
        description="DDPM: unconditional, no prompts",
    ),
)
