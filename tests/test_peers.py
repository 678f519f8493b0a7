"""The methods that carry a peer's name give the peer's numbers (issue 26): DAAM's heat maps,
DeepCache's branches and schedules, T-GATE; and FLOPs per step of any caching scheme.

Each peer's recipe is written again here, small and independently of the workbench code, from the
peer's paper and code (never imported: the packages are not dependencies)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.attention import word_maps
from workbench.chain import attached_names

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


# -- DeepCache --------------------------------------------------------------------------------------

class _DeepCacheRecipe:
    """DeepCache's SD helper, as its code does it: every resnet, attention, sampler and block of
    the U-Net gets a wrapper on its instance; a wrapper returns the module's last output when
    ``is_skip`` says so, else runs it and keeps the output. The step index is the timestep's
    position in the scheduler's schedule."""

    def __init__(self, model, branch: int, key_steps):
        self.unet, self.scheduler = model.denoiser, model.scheduler
        self.block_id, self.layer_id = branch // 3, branch % 3
        self.key_steps = set(key_steps)
        self.saved, self.cache, self.step = [], {}, 0

    def is_skip(self, block_i, layer_i, kind):
        if self.step in self.key_steps:
            return False
        if kind == "mid" or block_i > self.block_id:
            return True
        if block_i < self.block_id:
            return False
        return layer_i >= self.layer_id if kind == "down" else layer_i > self.layer_id

    def wrap(self, module, key, block_i, layer_i, kind):
        original = module.forward
        self.saved.append((module, original))

        def forward(*args, **kwargs):
            if self.is_skip(block_i, layer_i, kind):
                return self.cache[key]
            self.cache[key] = original(*args, **kwargs)
            return self.cache[key]

        module.forward = forward

    def __enter__(self):
        unet = self.unet
        original = unet.forward
        self.saved.append((unet, original))

        def unet_forward(*args, **kwargs):
            t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            self.step = [float(s) for s in self.scheduler.timesteps].index(float(torch.as_tensor(t).flatten()[0]))
            return original(*args, **kwargs)

        unet.forward = unet_forward
        for i, block in enumerate(unet.down_blocks):
            for j, m in enumerate(getattr(block, "attentions", None) or []):
                self.wrap(m, ("down", "attn", i, j), i, j, "down")
            for j, m in enumerate(block.resnets):
                self.wrap(m, ("down", "resnet", i, j), i, j, "down")
            for m in block.downsamplers or []:
                self.wrap(m, ("down", "downsampler", i), i, len(block.resnets), "down")
            self.wrap(block, ("down", "block", i), i, 0, "down")
        self.wrap(unet.mid_block, ("mid",), 0, 0, "mid")
        n = len(unet.up_blocks)
        for i, block in enumerate(unet.up_blocks):
            layers = len(block.resnets)
            for j, m in enumerate(getattr(block, "attentions", None) or []):
                self.wrap(m, ("up", "attn", i, j), n - i - 1, layers - j - 1, "up")
            for j, m in enumerate(block.resnets):
                self.wrap(m, ("up", "resnet", i, j), n - i - 1, layers - j - 1, "up")
            for m in block.upsamplers or []:
                self.wrap(m, ("up", "upsampler", i), n - i - 1, 0, "up")
            self.wrap(block, ("up", "block", i), n - i - 1, 0, "up")
        return self

    def __exit__(self, *exc):
        for module, forward in reversed(self.saved):
            module.forward = forward
        for module, _ in self.saved:
            module.__dict__.pop("forward", None)


def _quad_center(total, n_samples, center, pow_):
    """DeepCache's ``sample_from_quad_center``."""
    while pow_ > 1:
        xs = np.linspace((-center) ** (1 / pow_), (total - center) ** (1 / pow_), n_samples + 1)
        with warnings.catch_warnings():  # DeepCache casts the complex powers to int: the real part
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            idx = [0] + [x + center for x in np.unique(np.int32(xs ** pow_))[1:-1]]
        if len(idx) == n_samples:
            return idx
        pow_ -= 0.02
    return None  # DeepCache raises here


def test_deepcache_key_steps_equal_deepcaches_schedules():
    from workbench.capture.reuse import deepcache_key_steps

    assert deepcache_key_steps(20, 3) == list(range(0, 20, 3)) and deepcache_key_steps(7, 1) == list(range(7))
    for steps, every, center, pow_ in [(50, 5, 15, 1.4), (50, 3, 15, 1.4), (20, 2, 5, 1.2), (20, 4, 8, 1.4), (30, 3, 10, 1.6)]:
        expected = _quad_center(steps, math.ceil(steps / every), center, pow_)
        assert deepcache_key_steps(steps, every, uniform=False, pow=pow_, center=center) == [int(e) for e in expected]
    assert _quad_center(10, 5, 5, 1.4) is None
    with pytest.raises(ValueError, match="no 5 distinct key steps in 10 steps"):
        deepcache_key_steps(10, 2, uniform=False, center=5)


STEPS = 3


@pytest.mark.parametrize("uniform, branches", [pytest.param(True, None, marks=pytest.mark.slow), (False, [0, 4])])
def test_deepcache_equals_deepcaches_recipe_for_every_branch(unet, uniform, branches):
    """Bitwise equal images for every branch id (uniform schedule), and on two branches with the
    non-uniform schedule (the key steps come from deepcache_key_steps, tested above)."""
    from workbench.capture.reuse import deepcache

    prompts = ["a red circle left of a blue square"]
    for branch in branches or range(3 * len(unet.denoiser.down_blocks)):
        with deepcache(unet, every=2, branch=branch, uniform=uniform, pow=1.2, center=1) as cache:
            ours = unet.generate(prompts, steps=STEPS, seed=3)
        assert cache.stats.share_reused() > 0
        with _DeepCacheRecipe(unet, branch, cache.stats.key_steps):
            theirs = unet.generate(prompts, steps=STEPS, seed=3)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"branch {branch}")
    assert all("forward" not in m.__dict__ for m in unet.denoiser.modules())


def test_deepcache_reused_samplers_do_not_run(unet):
    from workbench.capture.reuse import deepcache, deepcache_modules

    assert "down_blocks.0.downsamplers.0" in deepcache_modules(unet, 1)
    # branch 3 cuts before down_blocks.1: the mirrored up_blocks.1 reuses its layer above the cut
    # (resnet 0 with its attention) and recomputes resnet 1 and its upsampler (layer 0)
    assert deepcache_modules(unet, 3)[-2:] == ["up_blocks.1.resnets.0", "up_blocks.1.attentions.0"]
    sampler = unet.denoiser.get_submodule("down_blocks.0.downsamplers.0.conv")  # hooks on the sampler itself see reuses
    calls = []
    handle = sampler.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with deepcache(unet, every=2, branch=1) as cache:
            unet.generate(["a red circle"], steps=STEPS, seed=0)
    finally:
        handle.remove()
    assert len(calls) == len(cache.stats.key_steps) == 2
    for bad in (-1, 9, 1.0, True):
        with pytest.raises(ValueError, match="branch id must be an integer in 0..8"):
            deepcache(unet, every=2, branch=bad)
    with pytest.raises(ValueError, match="set by the cache interval"):
        deepcache(unet, key_steps=[0, 2], uniform=False)


# -- T-GATE -----------------------------------------------------------------------------------------

def _tgate_plan(step, gate_step, sa_interval, ca_interval, warm_up):
    """T-GATE's ``tgate_scheduler``: (cross-attention, self-attention) as (cache, reuse) flags, and
    whether the caches keep the mean of the two guidance rows."""
    if step < gate_step - 1:
        if step < warm_up:
            sa = (False, False)
        elif step == warm_up or step % sa_interval == 0:
            sa = (True, False)
        else:
            sa = (False, True)
        return (False, False), sa, True
    if step == gate_step - 1:
        return (True, False), (True, False), False
    return (False, True), ((True, False) if step % ca_interval == 0 else (False, True)), True


def _tgate_reference(model, prompt, steps, seed, gate_step, sa_interval=5, ca_interval=1, warm_up=2):
    """T-GATE's SD pipeline loop: two rows (CFG) before the gate, then the latents alone with the
    *negative* prompt's embeddings and no guidance; every Attention module's output cached and
    reused per the plan."""
    unet, scheduler = model.denoiser, model.scheduler
    state = {"plan": None}
    saved = []
    for module in unet.modules():
        if type(module).__name__ != "Attention":
            continue
        original = module.forward
        saved.append((module, original))

        def forward(hidden_states, encoder_hidden_states=None, *args, _m=module, _f=original, **kwargs):
            (ca_cache, ca_reuse), (sa_cache, sa_reuse), keep_shape = state["plan"]
            cross = encoder_hidden_states is not None
            cached = getattr(_m, "_tgate_cache", None)
            if cached is not None and ((cross and ca_reuse) or (not cross and sa_reuse)):
                return cached
            out = _f(hidden_states, encoder_hidden_states, *args, **kwargs)
            if (cross and ca_cache) or (not cross and sa_cache):
                _m._tgate_cache = out if keep_shape else sum(out.chunk(2)) / 2
            return out

        module.forward = forward
    try:
        latents = torch.randn((1, *model.latent_shape), generator=torch.Generator("cpu").manual_seed(seed))
        cond, uncond = model.encode([prompt])["encoder_hidden_states"], model.encode([""])["encoder_hidden_states"]
        scheduler.set_timesteps(steps)
        for i, t in enumerate(scheduler.timesteps):
            guided = i < gate_step
            x = torch.cat([latents] * 2) if guided else latents
            emb = torch.cat([uncond, cond]) if guided else uncond
            x = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            state["plan"] = _tgate_plan(i, gate_step, sa_interval, ca_interval, warm_up)
            pred = unet(x, t.expand(x.shape[0]), encoder_hidden_states=emb, return_dict=False)[0]
            if guided:
                u, c = pred.chunk(2)
                pred = u + model.guidance_scale * (c - u)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        return np.clip(np.asarray(model.decoder(latents), dtype=np.float32), 0.0, 1.0)
    finally:
        for module, original in saved:
            module.forward = original
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_tgate_cache", None)


@pytest.mark.parametrize("gate_step, sa_interval, ca_interval", [(4, 5, 1), (5, 2, 2)])
def test_tgate_equals_tgates_recipe(unet, gate_step, sa_interval, ca_interval):
    steps = 7
    with wb.tgate(unet, gate_step=gate_step, sa_interval=sa_interval, ca_interval=ca_interval, warm_up=1) as gate:
        ours = unet.generate([PROMPT], steps=steps, seed=2)
    assert gate.rows_run == [2] * gate_step + [1] * (steps - gate_step)  # guidance really dropped
    theirs = _tgate_reference(unet, PROMPT, steps, 2, gate_step, sa_interval, ca_interval, warm_up=1)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in unet.denoiser.modules())
    plain = unet.generate([PROMPT], steps=steps, seed=2)
    assert not np.allclose(ours, plain, atol=1e-3)


def test_tgate_detaches_on_errors_and_checks_its_input(unet, mmdit):
    def explode(module, args):
        raise RuntimeError("boom")

    handle = unet.denoiser.get_submodule("up_blocks.1").register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with wb.tgate(unet, gate_step=1):
                unet.generate([PROMPT], steps=2, seed=0)
    finally:
        handle.remove()
    assert all("forward" not in m.__dict__ for m in unet.denoiser.modules()) and not attached_names(unet.denoiser)
    with pytest.raises(ValueError, match="guidance scale > 1"), wb.tgate(unet, gate_step=1):
        unet.generate([PROMPT], steps=2, seed=0, guidance_scale=1.0)
    with pytest.raises(ValueError, match="gate_step must be an integer >= 1"):
        wb.tgate(unet, gate_step=0)
    with pytest.raises(ValueError, match="U-Net"):
        wb.tgate(mmdit, gate_step=2)
    with pytest.raises(ValueError, match="recording sites"), wb.record(unet, ["mid_block.out"]), wb.tgate(unet):
        pass


# -- FLOPs per step ---------------------------------------------------------------------------------

def test_flops_per_step_sees_what_caching_skips(unet):
    from torch.utils.flop_counter import FlopCounterMode

    from workbench.capture.flops import flops_per_step
    from workbench.capture.reuse import deepcache

    def run():
        return unet.generate(["a red circle"], steps=3, seed=0)

    plain = flops_per_step(unet, run)
    with FlopCounterMode(display=False) as whole:
        run()
    assert len(plain) == 3 and len(set(plain)) == 1
    assert 0.9 * whole.get_total_flops() < sum(plain) < whole.get_total_flops()  # the rest: text encoder, decoder
    with deepcache(unet, every=2, branch=1):
        cached = flops_per_step(unet, run)
    assert cached[0] == cached[2] == plain[0] and 0 < cached[1] < plain[0] / 2
    with wb.tgate(unet, gate_step=2, warm_up=5):
        gated = flops_per_step(unet, run)
    assert gated[:2] == plain[:2] and gated[2] < plain[2] / 2  # one row, no cross-attention
    with pytest.raises(ValueError, match="never called"):
        flops_per_step(unet, lambda: None)
