"""SVD of latents (workbench.analysis.svd), flow inversion (workbench.inversion) and the
singular-value explorer: math on small arrays, runs on the reference toy-mmdit with few steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

import workbench as wb
from workbench import inversion
from workbench.analysis import svd
from workbench.analysis.metrics import psnr
from workbench.studies.svd import runs
from workbench.schedulers import invertible

PROMPTS = ["a red circle on the left", "the letter \"K\" in blue at the top"]


@pytest.fixture(scope="module")
def model(mmdit):
    return mmdit


def _latents(shape=(2, 3, 3, 8, 8), seed=0) -> xr.DataArray:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return svd.as_latents(values, leading=("sample", "step"))


@pytest.mark.parametrize("view", svd.VIEWS)
def test_svd_reconstructs_and_has_the_rank_the_view_allows(view):
    z = _latents()
    factors = svd.latent_svd(z, view)
    assert factors.sizes["component"] == (3 if view == "channels" else 8)
    np.testing.assert_allclose(svd.reconstruct(factors).values, z.values, atol=1e-5)
    # orthonormal vectors, descending values, and the sign convention: largest |v| entry positive
    vh = factors["Vh"].values
    np.testing.assert_allclose(vh @ np.swapaxes(vh, -1, -2), np.broadcast_to(np.eye(vh.shape[-2]), vh.shape[:-1] + (vh.shape[-2],)), atol=1e-10)
    assert (np.diff(factors["S"].values, axis=-1) <= 1e-12).all()
    assert (np.take_along_axis(vh, np.abs(vh).argmax(-1)[..., None], -1) > 0).all()
    # a rank-1 reconstruction is the best rank-1 approximation: its error is the tail of S
    err = ((svd.reconstruct(factors, k=1) - z) ** 2).sum(("y", "x") if view == "per_channel" else ("channel", "y", "x"))
    tail = (factors["S"].isel(component=slice(1, None)) ** 2).sum("component")
    np.testing.assert_allclose(err.values, tail.values, rtol=1e-4)


def test_bad_input_gets_a_clear_error():
    z = _latents((2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"k=4 .* 3 components in the 'channels' view.*per_channel"):
        svd.top(svd.latent_svd(z, "channels"), 4)
    with pytest.raises(ValueError, match="33 is not available"):
        svd.check_rank(33, (3, 32, 32), "per_channel")
    other = svd.latent_svd(_latents((2, 3, 16, 16)), "per_channel")
    with pytest.raises(ValueError, match="latents of different shapes"):
        svd.swap(svd.latent_svd(z, "per_channel"), other, "values")
    with pytest.raises(ValueError, match="latents of different shapes"):
        svd.svd_edit(z, _latents((2, 3, 16, 16)), rank=2)
    with pytest.raises(ValueError, match="unknown SVD view"):
        svd.latent_svd(z, "rows")
    with pytest.raises(ValueError, match="step 9 is out of range"):
        svd.at_step(_latents(), 9)


def test_principal_angles_and_grassmann_distance():
    eye = np.eye(6)
    same, orthogonal = eye[:, :2], eye[:, 2:4]
    mixed = np.stack([eye[:, 0], (eye[:, 1] + eye[:, 2]) / np.sqrt(2)], 1)
    np.testing.assert_allclose(svd.principal_angles(same, same), [0, 0], atol=1e-7)
    np.testing.assert_allclose(svd.principal_angles(same, orthogonal), [np.pi / 2] * 2)
    np.testing.assert_allclose(svd.principal_angles(same, mixed), [0, np.pi / 4], atol=1e-7)
    np.testing.assert_allclose(svd.grassmann_distance(same, mixed), np.pi / 4, atol=1e-7)
    # random 1-d subspaces of R^2: the angle is uniform on [0, pi/2], mean pi/4
    mean, _ = svd.random_subspace_distance(2, 1, samples=20000)
    assert abs(mean - np.pi / 4) < 0.02
    distances = svd.subspace_distances(svd.latent_svd(_latents(), "per_channel"), k=2)
    assert distances.dims == ("step", "step_other")
    np.testing.assert_allclose(np.diag(distances.values), 0, atol=1e-6)
    np.testing.assert_allclose(distances.values, distances.values.T, atol=1e-10)
    assert (distances.values[~np.eye(3, dtype=bool)] > 0.1).all()


def test_swaps_and_edits_touch_only_what_changed():
    z = _latents((2, 3, 8, 8))
    w = _latents((2, 3, 8, 8), seed=1)
    fa, fb = svd.latent_svd(z), svd.latent_svd(w)
    both = svd.swap(svd.swap(fa, fb, "vectors"), fb, "values")  # B's vectors and values: B itself
    np.testing.assert_allclose(svd.reconstruct(both).values, w.values, atol=1e-5)
    values_only = svd.reconstruct(svd.swap(fa, fb, "values"))
    assert not np.allclose(values_only.values, z.values) and not np.allclose(values_only.values, w.values)
    assert (svd.edit_latents(z, lambda f: f).values == z.values).all()  # a no-op is bit for bit

    def first_sample_only(f):
        out = f.copy(deep=True)
        out["S"][dict(sample=0)] = out["S"][dict(sample=0)] * 2
        return out

    edited = svd.edit_latents(z, first_sample_only)
    assert (edited.isel(sample=1).values == z.isel(sample=1).values).all()
    np.testing.assert_allclose(edited.isel(sample=0).values, 2 * z.isel(sample=0).values, rtol=1e-4, atol=1e-5)


def test_attribute_shares_find_the_component_that_carries_the_difference():
    z = _latents((1, 3, 8, 8))
    factors = svd.latent_svd(z)
    u, vh = factors["U"].values[0], factors["Vh"].values[0]  # (channel, y, comp), (channel, comp, x)
    bump = np.einsum("cy,cx->cyx", u[:, :, 2], vh[:, 2, :])  # along component 3 (rank 3) in every channel
    shares = svd.attribute_shares(factors, z + bump[None].astype(np.float32))
    assert int(shares.values[0].argmax()) == 2 and shares.values[0, 2] > 0.99


def test_one_pair_edit_keeps_the_source_for_itself_and_takes_the_attribute_components():
    z = _latents((2, 3, 16, 16))
    w = _latents((2, 3, 16, 16), seed=1)
    itself = svd.svd_edit(z, z, rank=3, iterations=300)
    assert float(np.abs(itself - z).max()) < 0.05 * float(np.abs(z).max())
    edited = svd.svd_edit(z, w, rank=3, iterations=300)
    fw = svd.latent_svd(w)

    def miss(latents):  # how far the coefficients along the attribute's top-3 components are from S_a
        coeff = np.einsum("scyk,scyx,sckx->sck", fw["U"].values[..., :3], latents.values.astype(np.float64),
                          fw["Vh"].values[:, :, :3])
        return np.abs(coeff - fw["S"].values[..., :3]).mean()

    # the target loss pulls them most of the way (the identity loss holds the source's own share)
    assert miss(edited) < 0.3 * miss(z)
    slerped = svd.slerp(z, w, 0.0)
    np.testing.assert_allclose(slerped.values, z.values, atol=1e-5)


def test_a_no_op_edit_continues_the_run_bit_for_bit(model):
    steps = 4
    full = model.generate(PROMPTS, steps=steps, seed=3)
    run = runs.trajectory(model, PROMPTS, steps, seed=3)
    assert run.dims == ("sample", "step", "channel", "y", "x") and run.sizes["step"] == steps + 1
    np.testing.assert_array_equal(model.decode_latents(run.isel(step=-1).values).clip(0, 1), full)
    for k in (0, 2):
        unchanged = svd.edit_latents(svd.at_step(run, k), lambda f: svd.scale_values(f, [1.0, 1.0]))
        np.testing.assert_array_equal(runs.continue_from(model, PROMPTS, unchanged, k, steps), full)
    louder = svd.edit_latents(svd.at_step(run, 2), lambda f: svd.scale_values(f, [3.0]))
    assert not np.array_equal(runs.continue_from(model, PROMPTS, louder, 2, steps), full)
    with pytest.raises(ValueError, match="step 4 is out of range"):
        runs.continue_from(model, PROMPTS, svd.at_step(run, 2), 4, steps)
    with pytest.raises(ValueError, match=r"latents have shape \(1, 3, 32, 32\)"):
        runs.continue_from(model, PROMPTS, svd.at_step(run, 2).isel(sample=[0]), 2, steps)


@pytest.mark.parametrize("name", ["mmdit", "unet"])
def test_text_kv_baseline_is_the_localization_patch_at_every_text_layer(name, request):
    """The editing table's K/V baseline: the attribute prompt's text K/V at all text layers from a
    start step, continued from the source's recorded trajectory, is bit for bit the library's full
    patched run (``patched_generate``), and its source run is the unpatched generation."""
    from workbench.studies.localization.patching import patched_generate
    from workbench.data import make_scene

    model = request.getfixturevalue(name)
    a = make_scene([dict(kind="glyph", glyph="K", colour="red", position="left", template=0)], seed=1)
    b = make_scene([dict(kind="glyph", glyph="7", colour="red", position="left", template=0)], seed=1)
    steps = 4
    out = runs.text_kv_edits(model, [a.caption], [b.caption], [1, 3], steps, runs.initial_noise(model, 1, 5),
                            source_spans=[a.spans[0]], attribute_spans=[b.spans[0]])
    assert set(out) == {"source", 1, 3} and out["source"].shape == (1, 32, 32, 3)
    for start in (1, 3):
        ref = patched_generate(model, a.caption, b.caption, start_step=start, steps=steps, seed=5,
                               target_spans=a.spans[0], source_spans=b.spans[0])
        np.testing.assert_array_equal(out[start][0], ref["patched"])
    np.testing.assert_array_equal(out["source"][0], ref["target"])
    assert not np.array_equal(out[1], out["source"])  # the patch acts
    # the noise of sample i does not depend on the batch, and is what Model.generate(seed=) draws
    np.testing.assert_array_equal(runs.initial_noise(model, 3, 5)[:1], runs.initial_noise(model, 1, 5))
    np.testing.assert_array_equal(model.generate([a.caption], steps=steps, latents=runs.initial_noise(model, 1, 5)),
                                  model.generate([a.caption], steps=steps, seed=5))


def test_text_kv_baseline_bad_input_gets_a_clear_error(model):
    from workbench.data import make_scene

    a = make_scene([dict(kind="shape", shape="circle", colour="red", position="left", size="small", template=1)], seed=1)
    b = make_scene([dict(kind="shape", shape="circle", colour="red", position="left", size="large", template=1)], seed=1)
    noise = runs.initial_noise(model, 1, 0)
    with pytest.raises(ValueError, match=r"start step\(s\) \[4\] are out of range"):
        runs.text_kv_edits(model, [a.caption], [b.caption], [0, 4], 4, noise)
    with pytest.raises(ValueError, match="1 source prompts but 2 attribute prompts"):
        runs.text_kv_edits(model, [a.caption], [b.caption, b.caption], [0], 4, noise)
    with pytest.raises(ValueError, match=r"latents have shape \(2, 3, 32, 32\)"):
        runs.text_kv_edits(model, [a.caption], [b.caption], [0], 4, runs.initial_noise(model, 2, 0))
    # captions whose roles cannot be matched: the library's alignment refuses them
    no_size = {k: v for k, v in b.spans[0].items() if k != "size"}
    with pytest.raises(ValueError, match="different roles"):
        runs.text_kv_edits(model, [a.caption], [b.caption], [0], 4, noise, source_spans=[a.spans[0]],
                          attribute_spans=[no_size])


def test_flow_inversion_reconstructs_and_refuses_other_schedulers(model):
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    from workbench.data import make_scene

    scene = make_scene([dict(shape="circle", colour="red", position="left", template=0)], seed=3)
    real = scene.image[None]
    # Round-7 toy-mmdit: 10 steps invert to 20.5 dB plain and 17.5 dB refined (refining hurts there);
    # 20 steps to 22.1 dB plain and 46.7 dB refined. (Round 4 reached > 30 dB at 10 steps.)
    steps = 20
    psnrs = []
    for refine in (0, 2):
        noise = inversion.invert_images(model, real, [scene.caption], steps, refine=refine)
        assert noise.shape == (steps + 1, 1, 3, 32, 32)
        rebuilt = model.generate([scene.caption], steps=steps, latents=noise[0], guidance_scale=1.0)
        psnrs.append(float(psnr(rebuilt, real / 255.0)[0]))
    assert psnrs[1] > psnrs[0] and psnrs[1] > 30, psnrs  # refining the fixed point helps
    # the noise it finds is noise-like, not the image
    assert abs(float(noise[0].std()) - 1.0) < 0.35
    assert invertible(model.scheduler)
    for scheduler in (DPMSolverMultistepScheduler(), EulerAncestralDiscreteScheduler()):
        assert not invertible(scheduler)
        other = dataclasses.replace(model, scheduler=scheduler)
        with pytest.raises(ValueError, match=f"runs {type(scheduler).__name__}, which workbench cannot invert"):
            inversion.invert(other, torch.zeros(1, 3, 32, 32), ["x"], steps)


def test_explorer_sliders_change_the_pictures(model):
    from workbench.widgets.svd import SVDExplorer

    explorer = SVDExplorer(runs.EditSession(model, PROMPTS[0], steps=4), step=1, values=2)
    before = [trace.source for trace in explorer.figure.data]
    explorer.controls["s1"].value = 2.5
    after = [trace.source for trace in explorer.figure.data]
    assert before[0] != after[0] and before[1] != after[1]
    explorer.controls["s1"].value = 1.0  # gains of one: the run's own pictures again
    assert [trace.source for trace in explorer.figure.data] == before
    explorer.controls["k"].value = 2
    assert np.asarray(explorer.heatmap.data[0].z).shape == (5, 5)
    with pytest.raises(ValueError, match="step 4 is out of range"):
        SVDExplorer(explorer.session, step=4)
