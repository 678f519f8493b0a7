"""Chroma (``ChromaTransformer2DModel``): FLUX.1's module tree (double-stream joint blocks, then
single-stream blocks, tokens [text | image], packed 2x2 latent patches), except that its
single-stream blocks return the joint sequence as one tensor (as FLUX.2's do).
Unlike FLUX.1-dev it is not guidance-distilled: classifier-free guidance runs as two denoiser
calls per step, conditional first; record it with ``branch_calls=("cond", "uncond")``. The text
axis is T5 tokens only, with an attention mask over padded text.

Outside this file Chroma touched only its tiny builder (``workbench/models/tiny/chroma.py``).
"""

from __future__ import annotations

from workbench.sitemap import STREAM_DIMS, InputTap, PipelineFacts, SiteMap, tokens_of

from .flux import FLUX
from .flux2 import double_then_single_sites

CHROMA = SiteMap(
    family="chroma",
    model_classes=("ChromaTransformer2DModel",),
    enumerate_sites=double_then_single_sites("single-stream attention output [text | image]"),
    read_geometry=FLUX.read_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="Chroma: FLUX.1 blocks, modulation from an approximator network, tokens [text | image]",
    latent_dims=STREAM_DIMS,
    stages=FLUX.stages,
    text_attention=FLUX.text_attention,
    text_keys=FLUX.text_keys,
    text_values=FLUX.text_values,
)

SITE_MAPS = (CHROMA,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("ChromaPipeline", "ChromaImg2ImgPipeline"),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        text_tokens=tokens_of("tokenizer"),
        description="Chroma: CFG as two calls per step (cond, uncond); text axis T5",
    ),
)
