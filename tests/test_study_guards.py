"""Guards on the pieces the published study tables rest on (issue 23): the prompt-swap baseline,
the segmentation heat maps, the judge's "no object" gates, SVD's slerp and attribute shares,
FreeU's step selection and step slices. Each test fails on a specific small bug that the rest
of the suite let through."""

import copy

import numpy as np
import pytest
import torch
import xarray as xr

import workbench as wb
from workbench.analysis import svd
from workbench.capture.interventions import step_selected
from workbench.data import generate
from workbench.data.render import GLYPH_HEIGHT, glyph_scale
from workbench.models.judge import NONE, load_judge
from workbench.studies.attention import segmentation as G
from workbench.studies.localization import sweeps as S


def test_prompt_swap_baseline_runs_the_source_prompt_from_the_targets_latents_at_step_k(mmdit):
    targets, sources, seeds, steps, k = ["a red circle on the left"], ["a blue square on the right"], [3], 3, 1
    result = S.sweep(mmdit, targets, sources, seeds, [S.Variant((0,), k)], steps=steps, swap_starts=[k])
    noise = S.noise_for(mmdit, seeds)
    entering = mmdit.generate(targets, steps=steps, latents=noise, stop_step=k, output="latents")
    swapped = mmdit.generate(sources, steps=steps, latents=entering, start_step=k, output="latents")
    expected = np.clip(mmdit.decode_latents(swapped), 0, 1)
    np.testing.assert_allclose(result.swaps[:, 0], expected, atol=1e-5)
    assert np.abs(result.swaps[:, 0] - result.target).max() > 1e-3  # the swap changed the picture


def _probs(n_keys=4, side=3):
    """Cross-attention probabilities where key j lights exactly image token j (one per key)."""
    queries = side * side
    values = np.zeros((1, 1, 1, queries, n_keys))
    for j in range(n_keys):
        values[0, 0, 0, j, j] = 1.0
    return xr.DataArray(values, dims=("sample", "branch", "step", "query", "key"),
                        coords={"query_y": ("query", np.arange(queries) // side),
                                "query_x": ("query", np.arange(queries) % side)})


@pytest.mark.parametrize("variant", ["image->text", "text->image"])
def test_segmentation_heat_reads_the_objects_own_tokens(variant):
    probs = _probs()
    if variant == "text->image":  # the same maps with the axes the other way round
        probs = probs.rename(query="key", key="query").rename(query_y="key_y", query_x="key_x")
        probs = probs.transpose("sample", "branch", "step", "query", "key")
    heat = G._heat({"site": probs}, variant, "site", 0, [2], [2])
    expected = np.zeros((3, 3))
    expected[0, 2] = 1.0  # image token 2 is row 0, column 2
    np.testing.assert_array_equal(heat, expected)


@pytest.fixture(scope="module")
def judge_and_scenes():
    scenes = generate(12, split="test", seed=4)
    return load_judge(), scenes.image.values.astype(np.float32) / 255


def _names(judge, images):
    verdict = judge.judge(images)
    return [n for p in judge.positions for n in verdict["name"][p]], verdict["in_world"]


def _with(judge, **limits):
    changed = copy.copy(judge)
    changed.calibration = judge.calibration | limits
    return changed


def test_judge_confidence_floor_turns_unsure_names_into_none(judge_and_scenes):
    judge, images = judge_and_scenes
    names, _ = _names(judge, images)
    assert any(n != NONE for n in names)  # clean renders: objects are named
    names, in_world = _names(_with(judge, confidence=1.01), images)  # no reading is that sure
    assert in_world.all() and all(n == NONE for n in names)


def test_judge_roughness_gate_rejects_rough_images(judge_and_scenes):
    judge, images = judge_and_scenes
    names, in_world = _names(_with(judge, roughness=-1.0), images)  # every image is too rough
    assert not in_world.any() and all(n == NONE for n in names)


def test_slerp_halfway_keeps_the_norm_and_the_angle():
    rng = np.random.default_rng(0)
    a = xr.DataArray(rng.standard_normal((2, 3, 4, 4)), dims=("sample", "channel", "y", "x"))
    b = xr.DataArray(rng.standard_normal((2, 3, 4, 4)), dims=a.dims)
    b = b * np.sqrt((a ** 2).sum(("channel", "y", "x")) / (b ** 2).sum(("channel", "y", "x")))  # same norms
    mid = svd.slerp(a, b, 0.5)
    norm = lambda z: np.sqrt((z ** 2).sum(("channel", "y", "x")))  # noqa: E731
    np.testing.assert_allclose(norm(mid), norm(a), rtol=1e-6)  # a straight line would come in shorter
    cos = lambda x, y: (x * y).sum(("channel", "y", "x")) / (norm(x) * norm(y))  # noqa: E731
    np.testing.assert_allclose(cos(mid, a), cos(mid, b), rtol=1e-6)
    np.testing.assert_allclose(np.arccos(cos(mid, a)), np.arccos(cos(a, b)) / 2, rtol=1e-6)


def test_attribute_shares_of_a_difference_along_two_components():
    rng = np.random.default_rng(1)
    z = xr.DataArray(rng.standard_normal((1, 3, 8, 8)), dims=("sample", "channel", "y", "x"))
    factors = svd.latent_svd(z)
    u, vh = factors["U"].values[0], factors["Vh"].values[0]
    diff = 3 * np.einsum("cy,cx->cyx", u[:, :, 1], vh[:, 1, :]) + 4 * np.einsum("cy,cx->cyx", u[:, :, 4], vh[:, 4, :])
    shares = svd.attribute_shares(factors, z + diff[None]).values[0]
    np.testing.assert_allclose(shares[[1, 4]], [9 / 25, 16 / 25], atol=1e-6)  # c_i^2 / ||D||^2
    assert shares.sum() == pytest.approx(1.0, abs=1e-6)


def test_freeu_steps_restrict_both_of_its_parts(unet):
    interventions = wb.freeu(unet, 0.9, 0.2, 1.2, 1.4, steps=[0])
    kinds = {type(i).__name__ for i in interventions}
    assert kinds == {"ScaleFirstChannels", "FourierFilter"}
    assert all(i.active_at(0) and not i.active_at(1) for i in interventions)


def test_step_slices_keep_their_stride():
    assert [s for s in range(8) if step_selected(slice(1, None, 3), s)] == [1, 4, 7]
    assert [s for s in range(8) if step_selected(slice(None, 6, 2), s)] == [0, 2, 4]


def test_glyph_height_is_about_twice_the_radius():
    # the magnification is rounded to the nearest whole pixel, so a glyph is within half a step
    # of 2 * radius tall (rounding down would leave radius 6 at 7 pixels instead of 14)
    for radius in np.arange(4.0, 16.5, 0.5):
        assert abs(GLYPH_HEIGHT * glyph_scale(radius) - 2 * radius) <= GLYPH_HEIGHT / 2, radius
