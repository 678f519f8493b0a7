"""CogView4 (``CogView4Transformer2DModel``): an MM-DiT with one joint attention over [text | image]
tokens per block, the text and image streams sharing one set of q/k/v projections.

Blocks and their ``attn1`` return ``(image, text)``. Norms and feed-forward act token by token,
the resolution conditions (original size, target size, crop) enter through the timestep
embedding, and the text stream is dropped after the last block: the prompt reaches the image
tokens only through the text keys and values of each joint attention. The pipeline pads the GLM
prompt on the left to a multiple of 16 tokens and passes no attention mask (the padding is
attended), and runs classifier-free guidance as two denoiser calls per step, conditional first.
"""

from __future__ import annotations

from workbench.sitemap import TEXT_IMAGE, InputTap, PipelineFacts, SiteMap, attention_sites

from .sd3 import patched_geometry, stream_outputs


def cogview4_sites(model) -> list:
    sites = []
    for i, _ in enumerate(model.transformer_blocks):
        path = f"transformer_blocks.{i}"
        sites += stream_outputs(path, 1, 0)
        sites += attention_sites(f"{path}.attn1", TEXT_IMAGE, TEXT_IMAGE, "joint attention [text | image]")
        sites += stream_outputs(f"{path}.attn1", 1, 0, "attention output")
    return sites


COGVIEW4 = SiteMap(
    family="cogview4",
    model_classes=("CogView4Transformer2DModel",),
    enumerate_sites=cogview4_sites,
    read_geometry=patched_geometry,  # latent (batch, channels, h, w), text at encoder_hidden_states
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 2),
    description="CogView4: joint attention over [text | image] with shared projections, tokens (y, x)",
    stages=("transformer_blocks",),
    text_attention=("transformer_blocks.*.attn1.probs.image->text",),
    text_keys=("transformer_blocks.*.attn1.k.text",),
    text_values=("transformer_blocks.*.attn1.v.text",),
)


def _cogview4_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]]:
    """The GLM tokens as ``CogView4Pipeline._get_glm_embeds`` lays them: the prompts padded to the
    longest, then pad tokens on the left up to the text axis (a multiple of 16)."""
    tokenizer = pipeline.tokenizer
    ids = tokenizer(prompts, padding="longest", add_special_tokens=True)["input_ids"]
    rows = []
    for row in ids:
        if len(row) > text_len:
            raise ValueError(f"a prompt of {len(row)} GLM tokens does not fit the denoiser's {text_len} text tokens")
        row = [tokenizer.pad_token_id] * (text_len - len(row)) + list(row)
        rows.append(tokenizer.convert_ids_to_tokens(row))
    return rows


SITE_MAPS = (COGVIEW4,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("CogView4Pipeline",),
        denoiser_attribute="transformer",
        cfg_order=("cond", "uncond"),  # two calls per step, conditional first
        guidance="embedded",  # no batched branches: each call holds one branch (see branch_calls)
        text_tokens=_cogview4_tokens,
        description="CogView4: CFG as two calls per step (cond, uncond); text axis GLM tokens left-padded to x16",
    ),
)
