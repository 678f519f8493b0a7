"""Guidance run as separate denoiser calls (``branch_calls=``), branch/token selections and the
reuse cache, driven by calling the toy U-Net's denoiser directly (issue 23: each test here fails
on a specific small bug the rest of the suite let through)."""

import numpy as np
import pytest
import torch

import workbench as wb

SITE = "down_blocks.1.out"
TEXT_KEYS = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.k"
CALLS = ("uncond", "cond")
TIMESTEPS = (900.0, 500.0)


@pytest.fixture(scope="module")
def inputs(unet):
    torch.manual_seed(0)
    latents = torch.randn(1, 3, 32, 32)
    return latents, {"uncond": unet.encode([""]), "cond": unet.encode(["a red circle on the left"])}


def _separate_calls(model, latents, conditioning, timesteps=TIMESTEPS):
    """Two steps x two calls, the way a pipeline that runs guidance unbatched calls the denoiser;
    returns each call's prediction keyed by (step, branch)."""
    out = {}
    for step, t in enumerate(timesteps):
        for branch in CALLS:
            out[step, branch] = model.denoiser(sample=latents, timestep=torch.tensor([t]),
                                               **conditioning[branch], return_dict=False)[0]
    return out


def test_separate_calls_of_one_step_are_one_step_with_one_branch_each(unet, inputs):
    latents, conditioning = inputs
    with wb.record(unet.denoiser, [SITE], branch_calls=CALLS) as rec:
        _separate_calls(unet, latents, conditioning)
    da = rec[SITE]
    assert da.sizes["step"] == 2, "two calls at one timestep are one step, not two"
    assert list(da.branch.values) == list(CALLS)
    assert not np.allclose(da.sel(branch="uncond").values, da.sel(branch="cond").values)  # different prompts


def test_patch_reads_the_source_at_the_same_call(unet, inputs):
    latents, conditioning = inputs
    with wb.record(unet.denoiser, [SITE], branch_calls=CALLS) as source:
        _separate_calls(unet, latents, conditioning)
    other = torch.randn_like(latents)
    with wb.record(unet.denoiser, [SITE], branch_calls=CALLS) as plain:
        _separate_calls(unet, other, conditioning)
    with wb.record(unet.denoiser, [SITE], branch_calls=CALLS,
                   interventions=[wb.patch(SITE, source, steps=1)]) as patched:
        _separate_calls(unet, other, conditioning)
    # the value that leaves the site at step 1 is the source's, call by call (not call 0's for both)
    for branch in CALLS:
        np.testing.assert_array_equal(patched[SITE].sel(branch=branch).isel(step=1).values,
                                      source[SITE].sel(branch=branch).isel(step=1).values)
        np.testing.assert_array_equal(patched[SITE].sel(branch=branch).isel(step=0).values,
                                      plain[SITE].sel(branch=branch).isel(step=0).values)


def _batched(model, latents, conditioning):
    """One call holding both guidance branches as batch rows (uncond first)."""
    hidden = torch.cat([conditioning["uncond"]["encoder_hidden_states"], conditioning["cond"]["encoder_hidden_states"]])
    return model.denoiser(sample=latents.repeat(2, 1, 1, 1), timestep=torch.tensor([900.0, 900.0]),
                          encoder_hidden_states=hidden, return_dict=False)[0]


@pytest.mark.parametrize("branch", CALLS)
def test_branch_selects_exactly_the_rows_of_that_branch(unet, inputs, branch):
    latents, conditioning = inputs
    with wb.record(unet.denoiser, [SITE], branches=CALLS, interventions=[wb.ablate(SITE, branch=branch)]) as rec:
        _batched(unet, latents, conditioning)
    other = next(b for b in CALLS if b != branch)
    assert np.abs(rec[SITE].sel(branch=branch).values).max() == 0
    assert np.abs(rec[SITE].sel(branch=other).values).max() > 0


def test_tokens_select_exactly_the_listed_token_positions(unet, inputs):
    latents, conditioning = inputs
    chosen = [1, 4]
    with wb.record(unet.denoiser, [TEXT_KEYS], branches=CALLS,
                   interventions=[wb.ablate(TEXT_KEYS, tokens=chosen)]) as rec:
        _batched(unet, latents, conditioning)
    keys = np.abs(rec[TEXT_KEYS].values)  # (sample, branch, step, head, token, channel)
    per_token = keys.max(axis=tuple(i for i in range(keys.ndim) if i != rec[TEXT_KEYS].dims.index("token")))
    zeroed = [int(i) for i in np.flatnonzero(per_token == 0)]
    assert zeroed == chosen


def test_reuse_keeps_one_cached_output_per_guidance_call(unet, inputs):
    latents, conditioning = inputs
    # reuse and record each declare the separate calls: both count steps with the one StepClock
    with wb.reuse(unet, [SITE], every=2, branch_calls=CALLS) as cache, \
            wb.record(unet.denoiser, [SITE], branch_calls=CALLS) as rec:
        _separate_calls(unet, latents, conditioning)
    assert cache.stats.reused["down_blocks.1"] == 2  # step 1, both calls
    da = rec[SITE]  # the site's hook sees what the cached module handed on
    for branch in CALLS:  # step 1 reuses step 0's output of the *same* call
        np.testing.assert_array_equal(da.sel(branch=branch).isel(step=1).values, da.sel(branch=branch).isel(step=0).values)


def test_reuse_hands_out_a_copy_that_later_steps_cannot_see_edited(unet, inputs):
    latents, conditioning = inputs
    module = unet.denoiser.get_submodule("down_blocks.1")
    seen = []

    def zero_in_place(mod, args, output):  # a downstream in-place edit of the reused tensor
        first = output[0] if isinstance(output, tuple) else output
        seen.append(first.abs().max().item())
        first.mul_(0)

    with wb.reuse(unet, [SITE], every=3):
        handle = module.register_forward_hook(zero_in_place)
        try:
            for t in (900.0, 700.0, 500.0):  # step 0 computes, steps 1 and 2 reuse
                unet.denoiser(sample=latents, timestep=torch.tensor([t]), **conditioning["cond"], return_dict=False)
        finally:
            handle.remove()
    assert len(seen) == 3 and min(seen) > 0, f"a reused step saw the previous step's in-place edit: {seen}"


def test_guided_prediction_is_uncond_plus_scale_times_the_difference(unet):
    # one step: the result is affine in the guidance scale s (pred = u + s (c - u), then one
    # scheduler step), so 2 L(2) - L(3) is the run at s = 1, which must be the unguided run
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    run = lambda scale: unet.generate(["a red circle on the left"], steps=1, latents=noise,  # noqa: E731
                                      guidance_scale=scale, output="latents")
    plain, two, three = run(1.0), run(2.0), run(3.0)  # 1.0: no guidance, the cond prediction alone
    assert (three - two).abs().max() > 1e-3  # guidance does something
    torch.testing.assert_close(2 * two - three, plain, atol=1e-4, rtol=1e-4)
