"""HunyuanDiT (``HunyuanDiT2DModel``): a DiT over image patches whose second half takes long skips
from its first, with self-attention (``attn1``) and cross-attention (``attn2``) to the text of two
encoders joined on tokens inside the model: [BERT (77) | mT5 (256)]. The text axis says which
encoder made each token (``key_encoder``), so word maps can be asked per encoder.

Outside this file HunyuanDiT touched only its tiny builder (``workbench/models/tiny/hunyuandit.py``)
and a BERT tokenizer builder.
"""

from __future__ import annotations

from workbench.sitemap import (
    IMAGE,
    Geometry,
    InputTap,
    PipelineFacts,
    SiteMap,
    kwarg_or_arg,
    padded_tokens,
)

from .dit import self_then_cross_block_sites


def hunyuandit_sites(model) -> list:
    return [site for i in range(len(model.blocks))
            for site in self_then_cross_block_sites(f"blocks.{i}", IMAGE, "cross-attention to [BERT | mT5] text")]


def _hunyuandit_geometry(model, args, kwargs) -> Geometry:
    latent = kwarg_or_arg(args, kwargs, InputTap("hidden_states", 0))
    bert = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states", 2))
    t5 = kwarg_or_arg(args, kwargs, InputTap("encoder_hidden_states_t5", 4))
    patch = model.config.patch_size
    return Geometry(text_len=bert.shape[1] + t5.shape[1], grid=(latent.shape[-2] // patch, latent.shape[-1] // patch))


HUNYUANDIT = SiteMap(
    family="hunyuandit",
    model_classes=("HunyuanDiT2DModel",),
    enumerate_sites=hunyuandit_sites,
    read_geometry=_hunyuandit_geometry,
    latent_input=InputTap("hidden_states", 0),
    timestep_input=InputTap("timestep", 1),
    description="HunyuanDiT: DiT with long skips, self-attention and cross-attention to [BERT | mT5] text",
    stages=("blocks",),
    text_attention=("blocks.*.attn2.probs",),
    text_keys=("blocks.*.attn2.k",),
    text_values=("blocks.*.attn2.v",),
)


def _hunyuandit_encoders(pipeline, text_len: int) -> list[tuple[str, int]]:
    bert_len = pipeline.tokenizer.model_max_length
    return [("bert", bert_len), ("mt5", text_len - bert_len)]


def _as_word_pieces(tokens: list[str]) -> list[str]:
    """BERT's WordPiece tokens in the sentencepiece convention the word grouping reads (a word
    starts at ``▁``): ``red`` -> ``▁red``, ``##x`` -> ``x``; [CLS]/[SEP]/... -> "" (no word)."""
    def piece(token: str) -> str:
        if token == "[PAD]":
            return token
        if token.startswith("[") and token.endswith("]"):
            return ""
        return token[2:] if token.startswith("##") else "▁" + token
    return [piece(t) for t in tokens]


def _hunyuandit_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]]:
    (_, bert_len), (_, t5_len) = _hunyuandit_encoders(pipeline, text_len)
    return [_as_word_pieces(padded_tokens(pipeline.tokenizer, p, bert_len)) + padded_tokens(pipeline.tokenizer_2, p, t5_len)
            for p in prompts]


SITE_MAPS = (HUNYUANDIT,)
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("HunyuanDiTPipeline",),
        denoiser_attribute="transformer",
        text_tokens=_hunyuandit_tokens,
        text_encoders=_hunyuandit_encoders,
        description="HunyuanDiT: [uncond | cond] batched guidance; text axis [BERT (77) | mT5 (256)]",
    ),
)
