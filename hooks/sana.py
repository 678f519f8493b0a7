"""Sana (``SanaTransformer2DModel``): a transformer over image patches whose self-attention
(``attn1``) is *linear*: ReLU feature maps, ``relu(q) (relu(k)^T v)`` normalised per query, so
there is no softmax matrix and no scaled-dot-product call for the recorder to observe. Its
probabilities and q/k/v are declared ``unrecordable`` (asking for them raises
``UnrecordableSite`` naming Sana and the reason); its output (``attn1.out``) records as usual.
The cross-attention to the Gemma 2 text (``attn2``) is ordinary softmax attention with a text
mask, and records, patches and gives word maps like PixArt's.

Outside this file Sana touched only its tiny builder (``workbench/models/tiny/sana.py``) and, for
the refusal, one ``SiteMap`` field (``unrecordable``) read by ``capture/resolve.py``.
"""

from __future__ import annotations

from workbench.sitemap import IMAGE, STREAM_DIMS, TEXT, InputTap, PipelineFacts, SiteMap, attention_sites, output_site, tokens_of

from .sd3 import patched_geometry

LINEAR_ATTENTION = (
    "Sana's self-attention is linear (ReLU kernel, relu(q) (relu(k)^T v) normalised per query): it never forms "
    "a softmax matrix or calls scaled_dot_product_attention, so there are no probabilities, and no q/k/v at a "
    "kernel call, to record. Record its output instead ('{path}.out'), or the cross-attention ('attn2')"
)


def sana_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites.append(output_site(path, "out", None, STREAM_DIMS, "block output (image tokens)", IMAGE))
        sites.append(output_site(f"{path}.attn1", "out", None, STREAM_DIMS, "linear self-attention output", IMAGE))
        sites += attention_sites(f"{path}.attn2", IMAGE, TEXT, "cross-attention to the prompt")
        sites.append(output_site(f"{path}.attn2", "out", None, STREAM_DIMS, "attn2 output", IMAGE))
    return sites


def _linear_attention_sites(model) -> dict[str, str]:
    return {
        f"transformer_blocks.{i}.attn1.{kind}": LINEAR_ATTENTION.format(path=f"transformer_blocks.{i}.attn1")
        for i, _ in enumerate(model.transformer_blocks)
        for kind in ("probs", "q", "k", "v")
    }


SANA = SiteMap(
    family="sana",
    model_classes=("SanaTransformer2DModel",),
    enumerate_sites=sana_sites,
    read_geometry=patched_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="Sana: linear self-attention over image patches (unrecordable probabilities), softmax cross-attention to Gemma text",
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn2.probs",),
    text_keys=("transformer_blocks.*.attn2.k",),
    text_values=("transformer_blocks.*.attn2.v",),
    unrecordable=_linear_attention_sites,
)

SITE_MAPS = (SANA,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("SanaPipeline",),
        denoiser_attribute="transformer",
        # Labels the text axis of a call with complex_human_instruction=None; with the default
        # instruction the pipeline keeps the first token and the last max_sequence_length - 1 of
        # [instruction | prompt], which these labels do not follow.
        text_tokens=tokens_of("tokenizer"),
        description="Sana: [uncond | cond] batched guidance; text axis Gemma 2 (without the complex human instruction)",
    ),
)
