"""Skip connections and feature reuse (issue 12): FreeU equals diffusers, reuse really skips modules,
the spectra and dynamics functions measure what they say."""

import numpy as np
import pytest
import torch
import xarray as xr

import workbench as wb
from workbench.analysis.skips import (
    adjacent_similarity,
    block_roles,
    relative_change,
    share_above,
    spectral_shares,
    step_similarity,
)
from workbench.capture.freeu import freeu, low_frequency_filter, skip_stages
from workbench.capture.reuse import deepcache, encoder_propagation, middle_blocks, reuse
from workbench.chain import attached_names
from workbench.models.tiny import example_inputs, tiny_denoiser

from conftest import hook_count

PROMPTS = ["a red circle on the left", "the letter \"K\" in blue at the top"]


@pytest.fixture(scope="module")
def tiny_sd():
    return wb.load("tiny-sd")


# -- FreeU ------------------------------------------------------------------------------------------

def test_freeu_equals_diffusers_enable_freeu(tiny_sd):
    factors = dict(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    plain = tiny_sd.generate(PROMPTS, steps=2, seed=3)
    tiny_sd.denoiser.enable_freeu(**factors)
    try:
        reference = tiny_sd.generate(PROMPTS, steps=2, seed=3)
    finally:
        tiny_sd.denoiser.disable_freeu()
    with wb.intervene(tiny_sd, freeu(tiny_sd, **factors)):
        ours = tiny_sd.generate(PROMPTS, steps=2, seed=3)
    assert np.abs(reference - plain).max() > 1e-3, "FreeU should change the images, or the test proves nothing"
    assert np.abs(ours - reference).max() <= 1e-6
    assert hook_count(tiny_sd.denoiser) == 0
    np.testing.assert_array_equal(tiny_sd.generate(PROMPTS, steps=2, seed=3), plain)


@pytest.mark.parametrize("family", ["unet", "unet2d", "sdxl"])
def test_backbone_sites_are_what_each_resnet_concatenates_the_skip_to(family):
    model, inputs = tiny_denoiser(family), example_inputs(family, batch_size=1)
    consumed, handles = {}, []
    for i, block in enumerate(model.up_blocks):
        for j, resnet in enumerate(block.resnets):
            handles.append(resnet.register_forward_pre_hook(
                lambda m, a, i=i, j=j: consumed.__setitem__((i, j), a[0].clone())))
    try:
        with wb.record(model, ["up_blocks.*.backbone.*", "up_blocks.*.skip.*"]) as rec:
            model(**inputs, return_dict=False)
    finally:
        for h in handles:
            h.remove()
    assert len(consumed) >= 4
    for (i, j), resnet_input in consumed.items():
        backbone = rec[f"up_blocks.{i}.backbone.{j}"].values[:, 0, 0]
        skip = rec[f"up_blocks.{i}.skip.{j}"].values[:, 0, 0]
        assert backbone.shape[1] + skip.shape[1] == resnet_input.shape[1]
        np.testing.assert_array_equal(resnet_input[:, :backbone.shape[1]].numpy(), backbone)


def test_freeu_touches_the_first_two_decoder_stages_only(unet):
    stages = skip_stages(unet)
    touched = {i.site.rsplit(".", 2)[0] for i in freeu(unet, 0.9, 0.2, 1.2, 1.4)}
    assert touched == {stages[0][0], stages[1][0]} and len(stages) == 3


def test_freeu_on_a_model_without_skips_says_so(mmdit):
    with pytest.raises(ValueError, match="no long skip connections"):
        freeu(mmdit, 0.9, 0.2, 1.2, 1.4)


def test_low_frequency_filter_scales_only_the_central_box():
    constant = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(low_frequency_filter(constant, 0.5), constant * 0.5)  # all energy at DC
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]).remainder(2).float().sub(0.5).expand(1, 2, 8, 8)
    torch.testing.assert_close(low_frequency_filter(checker, 0.0), checker, atol=1e-6, rtol=0)  # Nyquist: outside
    assert low_frequency_filter(constant.half(), 0.5).dtype == torch.float16
    with pytest.raises(ValueError, match="threshold"):
        low_frequency_filter(constant, 0.5, threshold=0)


# -- feature reuse -----------------------------------------------------------------------------------

def _count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *a: calls.append(1))


def test_deepcache_skips_the_deep_path_and_restores_forward(unet):
    plain = unet.generate(PROMPTS[:1], steps=5, seed=0)
    with deepcache(unet, every=1):
        assert np.array_equal(unet.generate(PROMPTS[:1], steps=5, seed=0), plain)  # N=1 reuses nothing
    deep = unet.denoiser.get_submodule("up_blocks.1.resnets.0")  # inside a cached module
    shallow = unet.denoiser.get_submodule("up_blocks.2.resnets.0")  # in the recomputed branch
    deep_calls, h1 = _count_calls(deep)
    shallow_calls, h2 = _count_calls(shallow)
    try:
        with deepcache(unet, every=2, branch=1) as cache:
            cached = unet.generate(PROMPTS[:1], steps=5, seed=0)
    finally:
        h1.remove(), h2.remove()
    assert cache.stats.key_steps == [0, 2, 4]
    assert len(deep_calls) == 3 and len(shallow_calls) == 5  # the deep resnet really ran only at key steps
    assert cache.stats.reused["up_blocks.1"] == 2 and cache.stats.computed["up_blocks.1"] == 3
    assert not np.array_equal(cached, plain)
    assert all("forward" not in unet.denoiser.get_submodule(m).__dict__ for m in cache.modules)
    np.testing.assert_array_equal(unet.generate(PROMPTS[:1], steps=5, seed=0), plain)


def test_reuse_restores_forward_when_the_run_raises(unet):
    def explode(module, args):
        raise RuntimeError("boom")

    handle = unet.denoiser.get_submodule("up_blocks.2").register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with deepcache(unet, every=2) as cache:
                unet.generate(PROMPTS[:1], steps=3, seed=0)
    finally:
        handle.remove()
    assert all("forward" not in unet.denoiser.get_submodule(m).__dict__ for m in cache.modules)
    assert attached_names(unet.denoiser) == [] and hook_count(unet.denoiser) == 0


def test_reuse_key_steps_and_a_new_run_starts_cold(unet):
    with reuse(unet, ["down_blocks.2.out"], key_steps=[0, 3]) as cache:
        unet.generate(PROMPTS[:1], steps=4, seed=0)
        unet.generate(PROMPTS[:1], steps=4, seed=0)  # the second run must not reuse the first run's cache
    assert cache.stats.computed["down_blocks.2"] == 4 and cache.stats.reused["down_blocks.2"] == 4


def test_encoder_propagation_and_block_caching(unet, mmdit):
    with encoder_propagation(unet, every=3) as cache:
        unet.generate(PROMPTS[:1], steps=4, seed=0)
    assert cache.modules == ["down_blocks.0", "down_blocks.1", "down_blocks.2"]
    assert cache.stats.reused["down_blocks.0"] == 2
    block = mmdit.denoiser.get_submodule("transformer_blocks.1.attn")
    calls, handle = _count_calls(block)
    try:
        with middle_blocks(mmdit, every=2) as cache:
            mmdit.generate(PROMPTS[:1], steps=4, seed=0)
    finally:
        handle.remove()
    assert cache.modules == ["transformer_blocks.1", "transformer_blocks.2"] and len(calls) == 2
    with pytest.raises(ValueError, match="encoder"):
        encoder_propagation(mmdit, every=2)
    with pytest.raises(ValueError, match="no skips"):
        deepcache(mmdit, every=2)


def test_reuse_bad_input_is_named(unet):
    for every in (0, -1, 1.5):
        with pytest.raises(ValueError, match="every= must be an integer >= 1"):
            deepcache(unet, every=every)
    with pytest.raises(KeyError, match="up_blocks.9.out.*nearest valid sites"):
        reuse(unet, ["up_blocks.9.out"], every=2)
    with pytest.raises(ValueError, match="not module output sites"):
        reuse(unet, ["up_blocks.1.skip.0"], every=2)
    with pytest.raises(ValueError, match="one of them"):
        reuse(unet, ["up_blocks.1.out"])


# -- spectra and dynamics -------------------------------------------------------------------------------

def _features(values):
    values = np.asarray(values, dtype=float)
    dims = ("sample", "branch", "step") + ("channel", "y", "x")[: values.ndim - 3]
    return xr.DataArray(values, dims=dims, coords={"step": np.arange(values.shape[2])})


def test_spectral_shares_split_constant_smooth_and_checkerboard_maps():
    y, x = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    maps = np.stack([np.ones((8, 8)), np.cos(2 * np.pi * x / 8), (-1.0) ** (x + y)])  # DC, f=1/8, Nyquist
    shares = spectral_shares(_features(maps[None, None, :, None]), cutoff=0.25)
    np.testing.assert_allclose(shares.dc.values[0, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(shares.low.values[0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(shares.high.values[0, 0], [0, 0, 1], atol=1e-12)
    with pytest.raises(ValueError, match="cutoff"):
        spectral_shares(_features(maps[None, None, :, None]), cutoff=0)


def test_similarity_and_relative_change_on_known_trajectories():
    base = np.random.default_rng(0).normal(size=(1, 1, 1, 4, 3, 3))
    steps = np.concatenate([base, base * 2, -base], axis=2)  # same direction, doubled, flipped
    da = _features(steps)
    sim = step_similarity(da)
    np.testing.assert_allclose(sim.values, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)
    adjacent = adjacent_similarity(da)
    np.testing.assert_allclose(adjacent.values.ravel(), [1, -1], atol=1e-12)
    np.testing.assert_allclose(relative_change(da).values.ravel(), [0.5, 3.0], atol=1e-12)
    assert share_above(adjacent, 0.95) == 0.5


def test_block_roles_follow_the_stages():
    unet_roles = block_roles(["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0"],
                             ("down_blocks", "mid_block", "up_blocks"))
    assert list(unet_roles.values()) == ["encoder", "encoder", "bottleneck", "decoder"]
    dit = block_roles([f"transformer_blocks.{i}" for i in range(4)], ("transformer_blocks",))
    assert list(dit.values()) == ["encoder", "encoder", "decoder", "decoder"]
