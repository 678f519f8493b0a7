"""The methods that carry a peer's name give the peer's numbers (issue 26): DAAM's heat maps,
DeepCache's branches and schedules, T-GATE; and FLOPs per step of any caching scheme.

Each peer's recipe is written again here, small and independently of the workbench code, from the
peer's paper and code (never imported: the packages are not dependencies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.attention import word_maps

PROMPT = "a red circle left of a blue square"


# -- DAAM -------------------------------------------------------------------------------------------

class _DaamHooker:
    """DAAM's capture, as its ``UNetCrossAttentionHooker`` does it: the probabilities of each
    cross-attention of the down and up blocks (mid block not located), the conditional half of
    the batch, summed over calls per (factor, layer, head); maps at factor 8 are not kept."""

    def __init__(self, unet, latent_hw: int, context_size: int):
        self.unet, self.latent_hw, self.context_size = unet, latent_hw, context_size
        self.heat: dict[tuple[int, int, int], torch.Tensor] = {}
        self.saved = []

    def locate(self):
        layers = []
        for block in list(self.unet.up_blocks) + list(self.unet.down_blocks):
            if "CrossAttn" in type(block).__name__:
                layers += [tb.attn2 for st in block.attentions for tb in st.transformer_blocks]
        return layers

    def __enter__(self):
        for layer_idx, attn in enumerate(self.locate()):
            self.saved.append((attn, attn.processor))
            attn.set_processor(self._processor(layer_idx))
        return self

    def __exit__(self, *exc):
        for attn, processor in self.saved:
            attn.set_processor(processor)

    def _processor(self, layer_idx):
        hooker = self

        def process(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
            probs = attn.get_attention_scores(query, key, attention_mask)
            factor = int(math.sqrt(hooker.latent_hw // probs.shape[1]))
            if probs.shape[-1] == hooker.context_size and factor != 8:
                side = int(math.sqrt(probs.shape[1]))
                cond = probs[probs.shape[0] // 2:]  # (heads, hw, tokens): conditional rows
                maps = cond.permute(0, 2, 1).reshape(cond.shape[0], -1, side, side)
                for head_idx, heat_map in enumerate(maps):
                    key_ = (factor, layer_idx, head_idx)
                    hooker.heat[key_] = hooker.heat.get(key_, 0.0) + heat_map
            out = attn.batch_to_head_dim(torch.bmm(probs, value))
            return attn.to_out[1](attn.to_out[0](out))

        return process

    def global_heat_map(self) -> torch.Tensor:
        side = int(math.sqrt(self.latent_hw))
        merged = [F.interpolate(m.unsqueeze(1), size=(side, side), mode="bicubic").clamp_(min=0)
                  for m in self.heat.values()]
        return torch.stack(merged, 0).mean(0)[:, 0]

    @staticmethod
    def word_heat_map(heat, tokenizer, prompt, word):
        tokens = tokenizer.tokenize(prompt.lower())
        search = tokenizer.tokenize(word.lower())
        starts = [x for x in range(len(tokens)) if tokens[x:x + len(search)] == search]
        merge = [s + i + 1 for s in starts for i in range(len(search))]  # +1: the start token
        return heat[merge].mean(0)


def test_daam_method_equals_daams_recipe(unet):
    steps = 3
    with wb.record(unet, ["**.attn2.probs"]) as rec:
        unet.generate([PROMPT], steps=steps, seed=1)
    latent = rec.geometry.grid
    ours = word_maps(rec, method="daam")
    with _DaamHooker(unet.denoiser, latent[0] * latent[1], context_size=len(rec.text_tokens[0])) as hk:
        unet.generate([PROMPT], steps=steps, seed=1)
    heat = hk.global_heat_map()
    assert ours.attrs["layers"] == len({k[1] for k in hk.heat})  # mid block left out, same layers
    for word in ["red", "circle", "left", "blue", "square", "a"]:
        expected = _DaamHooker.word_heat_map(heat, unet.tokenizer, PROMPT, word).numpy()
        got = ours.sel(word=word).values
        assert got.shape == tuple(latent)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))
    # the default differs (mean over steps and heads, bilinear, mid block in, normalised maps)
    default = word_maps(rec, size=tuple(latent)).sel(word="circle").values
    assert not np.allclose(default / default.max(), ours.sel(word="circle").values / ours.sel(word="circle").values.max(),
                           atol=1e-3)


def test_word_map_method_is_checked(unet, mmdit):
    with wb.record(unet, ["**.attn2.probs"]) as rec:
        unet.generate([PROMPT], steps=1, seed=0)
    with pytest.raises(ValueError, match="unknown word-map method 'dam'.*mean, daam"):
        word_maps(rec, method="dam")
    with pytest.raises(ValueError, match="mid block"):
        word_maps(rec, method="daam", sites="mid_block.*")
    with wb.record(mmdit, ["transformer_blocks.0.attn.probs.image->text"]) as rec2:
        mmdit.generate([PROMPT], steps=1, seed=0)
    with pytest.raises(ValueError, match="U-Net"):
        word_maps(rec2, method="daam")
