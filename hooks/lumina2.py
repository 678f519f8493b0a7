"""Lumina 2 (``Lumina2Transformer2DModel``; Lumina-Image 2.0): a unified single-stream DiT.

The caption runs through its own refiner blocks (``context_refiner``: text self-attention, padded
text keys masked out) and the image through its own (``noise_refiner``: image self-attention,
timestep-modulated); then each sample's *valid* text tokens and its image tokens are packed into
one sequence, [text | image], for the joint blocks (``layers``), whose attention has no mask when
every sample's text is as long. Every block and attention returns one tensor. Text reaches the
image tokens only through the joint attention's keys and values (the timestep embedding does not
pool the caption).

The joint sequence puts the image after each sample's own valid text length, so samples with
different prompt lengths in one call put their image tokens at different offsets; no one token
layout describes that batch, and recording it is refused (``read_geometry``) rather than
mislabelled. The pipeline runs one prompt per call (guidance as a second call), so its runs are
recorded as they are; its guidance is recorded with ``branch_calls=("cond", "uncond")``.
"""

from __future__ import annotations

from workbench.sitemap import (
    IMAGE,
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


# The refiners Lumina 2 and Z-Image share (same names in both): stream, block and attention meaning.
REFINERS = {"context_refiner": (TEXT, "caption refiner", "text self-attention"),
            "noise_refiner": (IMAGE, "image refiner", "image self-attention")}


def refined_then_joint_sites(attention: str, joint: TokenLayout, refiners: tuple[str, ...]):
    """Sites of a DiT that refines the caption and the image apart (``refiners``, in forward order),
    then runs its joint blocks (``layers``) over the sequence ``joint`` (Lumina 2: [text | image];
    Z-Image: [image | text]). Every block and its attention module (the child ``attention``) return
    one tensor."""
    order = " | ".join(joint.segments)
    stages = [(name, *REFINERS[name]) for name in refiners]
    stages.append(("layers", joint, "joint block", f"joint attention [{order}]"))

    def sites_of(model) -> list:
        sites = []
        for stage, layout, block, what in stages:
            for i, _ in enumerate(getattr(model, stage)):
                path = f"{stage}.{i}"
                sites.append(output_site(path, "out", None, STREAM_DIMS, f"{block} output", layout))
                sites += attention_sites(f"{path}.{attention}", layout, layout, what)
                sites.append(output_site(f"{path}.{attention}", "out", None, STREAM_DIMS, f"{what} output", layout))
        return sites

    return sites_of


def _lumina2_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    mask = kwarg_or_arg(args, kwargs, InputTap("encoder_attention_mask", 3))
    # The joint blocks keep each sample's valid text. (Reading the count on the host adds no stall of
    # a new kind: the model's own forward reads the same mask's sums with .tolist().)
    valid = [int(n) for n in mask.sum(dim=1).tolist()]
    if len(set(valid)) > 1:
        raise ValueError(
            f"lumina2: the samples of this call have {valid} valid text tokens; Lumina 2 packs each sample's "
            "valid text then its image, so the image tokens sit at a different offset in each sample and no "
            "one token layout labels them. Record prompts of one text length per call (the pipeline encodes "
            "one prompt per call), or one prompt at a time"
        )
    patch = model.config.patch_size
    return Geometry(text_len=valid[0], grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


_REFINERS = ("context_refiner", "noise_refiner")  # forward order

LUMINA2 = SiteMap(
    family="lumina2",
    model_classes=("Lumina2Transformer2DModel",),
    enumerate_sites=refined_then_joint_sites("attn", TEXT_IMAGE, _REFINERS),
    read_geometry=_lumina2_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="Lumina 2: caption and image refiners, then joint blocks over [valid text | image]",
    stages=(*_REFINERS, "layers"),
    text_attention=("layers.*.attn.probs.image->text",),
    text_keys=("layers.*.attn.k.text",),
    text_values=("layers.*.attn.v.text",),
    timestep_rises=True,  # the pipeline passes 1 - t / 1000
)


def _lumina2_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]]:
    # The pipeline prefixes every prompt with its system prompt (the default one: a call's
    # `system_prompt=` argument is not seen here); the joint axis holds the valid tokens only.
    return [padded_tokens(pipeline.tokenizer, f"{pipeline.system_prompt} <Prompt Start> {p}", text_len)
            for p in prompts]


SITE_MAPS = (LUMINA2,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("Lumina2Pipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        text_tokens=_lumina2_tokens,
        description="Lumina 2: guidance as two calls per step (cond, uncond); text axis Gemma 2 after a system prompt",
    ),
)
