"""Query subsets at capture time: ``record(..., queries=...)`` keeps (and computes) only some image or
video query rows of the attention probabilities, labelled with their grid positions.

Checked on a tiny SD3 (joint blocks, log-sum-exp path), a tiny Wan (whole video->video and video->text
matrices) and a tiny CogVideoX (joint video blocks): the kept rows equal the same rows of a full
recording, the model's output stays bitwise identical, no tensor of a whole N x N matrix is ever
made (a dispatch-level spy sees every tensor the forward produces), and held bytes scale with the
number of kept queries. Bad forms are refused with what was wrong and what is valid.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import workbench as wb
from workbench.attention import kernels, to_grid, word_maps
from workbench.models.tiny import example_inputs, tiny_denoiser
from workbench.widgets.sources import find_layers

from conftest import build_tiny_families, denoiser_forward as forward

pytestmark = pytest.mark.usefixtures("one_thread")

SD3_BLOCKS = ["transformer_blocks.0.attn.probs.image->image", "transformer_blocks.1.attn.probs.image->text"]
SD3_TEXT_QUERIES = "transformer_blocks.0.attn.probs.text->image"  # recorded whole beside a subset
WAN_SITES = ["blocks.0.attn1.probs", "blocks.1.attn2.probs"]  # video->video, video->text
COG_BLOCKS = ["transformer_blocks.0.attn1.probs.video->video", "transformer_blocks.0.attn1.probs.video->text"]
SUBSETS = ["center", {"y": (1, 3), "x": (2, 8)}, {"stride": 3}, [0, 9, 63, 5], [(7, 0), (2, 3)]]
VIDEO_SUBSETS = ["center", {"frame": 1, "y": (1, 3)}, {"stride": 2}, [47, 0, 20], [(2, 3, 3), (0, 1, 2)]]


@pytest.fixture(scope="module")
def built():
    return build_tiny_families(("sd3", "wan", "cogvideox"), text_len=8)


@pytest.fixture(scope="module")
def full(built):
    """Every family's sites recorded whole, once."""
    out = {}
    for family, sites in (("sd3", SD3_BLOCKS + [SD3_TEXT_QUERIES]), ("wan", WAN_SITES), ("cogvideox", COG_BLOCKS)):
        model, inputs, _ = built[family]
        with wb.record(model, sites) as rec:
            forward(model, inputs)
        out[family] = rec
    return out


def _check_rows_of_full(sub, full, name):
    kept, whole = sub[name], full[name]
    assert kept.sizes["query"] < whole.sizes["query"]
    rows = whole.isel(query=kept.query_index.values)
    np.testing.assert_allclose(kept.values, rows.values, rtol=0, atol=1e-6, err_msg=name)
    for coord in [c for c in whole.coords if str(c).startswith("query_")]:
        np.testing.assert_array_equal(kept[coord].values, rows[coord].values, err_msg=f"{name}: {coord}")
    assert kept.attrs["queries_of"] == whole.sizes["query"]


@pytest.mark.parametrize("subset", SUBSETS, ids=str)
def test_image_subset_rows_equal_the_full_recording_and_the_output_stays_bitwise(built, full, subset):
    model, inputs, reference = built["sd3"]
    with wb.record(model, SD3_BLOCKS + [SD3_TEXT_QUERIES], queries=subset) as sub:
        assert torch.equal(forward(model, inputs), reference)
    for name in SD3_BLOCKS:
        _check_rows_of_full(sub, full["sd3"], name)
    # text queries are no image queries: that block stays whole
    np.testing.assert_array_equal(sub[SD3_TEXT_QUERIES].values, full["sd3"][SD3_TEXT_QUERIES].values)
    assert "queries" not in sub[SD3_TEXT_QUERIES].attrs


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
@pytest.mark.parametrize("subset", VIDEO_SUBSETS, ids=str)
def test_video_subset_rows_equal_the_full_recording(built, full, family, subset):
    model, inputs, reference = built[family]
    sites = WAN_SITES if family == "wan" else COG_BLOCKS
    with wb.record(model, sites, queries=subset) as sub:
        assert torch.equal(forward(model, inputs), reference)
    for name in sites:
        _check_rows_of_full(sub, full[family], name)


def test_the_forms_keep_the_positions_they_name(built):
    model, inputs, _ = built["wan"]  # 3 frames of 4 x 4 video tokens
    picked = {}
    for name, subset in {"center": "center", "box": {"frame": (1, 3), "y": 0, "x": (1, 3)},
                         "stride": {"stride": 3}, "positions": [(2, 3, 1)], "indices": [17]}.items():
        with wb.record(model, WAN_SITES[:1], queries=subset) as rec:
            forward(model, inputs)
        probs = rec[WAN_SITES[0]]
        picked[name] = list(zip(*(probs[f"query_{a}"].values.tolist() for a in ("frame", "y", "x"))))
        assert probs.attrs["queries_of"] == 48
    assert picked["center"] == [(0, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert picked["box"] == [(1, 0, 1), (1, 0, 2), (2, 0, 1), (2, 0, 2)]
    assert picked["stride"] == [(f, y, x) for f in range(3) for y in (0, 3) for x in (0, 3)]
    assert picked["positions"] == [(2, 3, 1)]
    assert picked["indices"] == [(1, 0, 1)]  # token 17 = frame 1 (16 tokens a frame), row 0, column 1


class _LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an op returns while active (the model's and the recorder's)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _bigger(family: str) -> dict:
    """Inputs with many more visual tokens: SD3 24 x 24 = 576, Wan 3 x 16 x 16 = 768."""
    inputs = example_inputs(family, batch_size=1, text_len=8)
    x = inputs["hidden_states"]
    size = 48 if family == "sd3" else 32
    inputs["hidden_states"] = torch.randn(*x.shape[:-2], size, size, generator=torch.Generator().manual_seed(0))
    return inputs


@pytest.mark.parametrize("family, site", [("sd3", SD3_BLOCKS[0]), ("wan", WAN_SITES[0])])
def test_no_whole_matrix_is_made_and_held_bytes_scale_with_the_kept_queries(built, family, site):
    model, inputs = built[family][0], _bigger(family)
    with _LargestTensor() as bare:
        reference = forward(model, inputs)
    with wb.record(model, [site]) as whole, _LargestTensor() as spy_whole:
        forward(model, inputs)
    n = whole[site].sizes["query"]
    heads = whole[site].sizes["head"]
    assert n >= 576 and spy_whole.largest >= n * n  # the spy sees a whole matrix when one is made
    held = {}
    for k in (1, 8):
        with wb.record(model, [site], queries=list(range(0, n, n // k))[:k]) as sub, _LargestTensor() as spy:
            assert torch.equal(forward(model, inputs), reference)
        assert sub[site].sizes["query"] == k
        # nothing near one head's N x N: at most the model's own largest tensor or the kept rows (with a
        # few rows' worth of workspace), for every head
        assert spy.largest <= max(bare.largest, 4 * heads * k * n) < n * n, (spy.largest, bare.largest, n)
        held[k] = sub.nbytes()
    assert held[8] == 8 * held[1] and held[1] == whole.nbytes() // n  # bytes per kept query, not per N


def test_editing_probabilities_records_the_kept_rows_of_the_edited_block(built):
    model, inputs, _ = built["sd3"]
    site = SD3_BLOCKS[0]
    halve = [wb.scale(site, 0.5)]
    with wb.record(model, [site], interventions=halve) as whole:
        edited = forward(model, inputs)
    with wb.record(model, [site], interventions=halve, queries={"stride": 2}) as sub:
        assert torch.equal(forward(model, inputs), edited)
    np.testing.assert_array_equal(sub[site].values, whole[site].isel(query=sub[site].query_index.values).values)


def test_word_maps_and_the_explorer_refuse_a_subset_and_to_grid_lays_out_a_box(built, full):
    model, inputs, _ = built["sd3"]
    with wb.record(model, SD3_BLOCKS, queries={"y": (2, 5), "x": (0, 8), "stride": 2}) as box:
        forward(model, inputs)
    with pytest.raises(ValueError, match=r"word maps need every image/video query.*queries='y=\(2, 5\)"):
        word_maps(box)
    with pytest.raises(ValueError, match="explorer"):
        find_layers(box)
    grid = to_grid(box[SD3_BLOCKS[1]], "query")
    assert grid.sizes["y"] == 2 and grid.sizes["x"] == 4
    assert grid.y.values.tolist() == [2, 4] and grid.x.values.tolist() == [0, 2, 4, 6]
    whole = to_grid(full["sd3"][SD3_BLOCKS[1]], "query")
    np.testing.assert_allclose(grid.values, whole.sel(y=[2, 4], x=[0, 2, 4, 6]).values, atol=1e-6)
    with wb.record(model, SD3_BLOCKS[1:], queries=[0, 9]) as scattered:
        forward(model, inputs)
    with pytest.raises(ValueError, match="do not fill a grid"):
        to_grid(scattered[SD3_BLOCKS[1]], "query")


def test_a_streamed_subset_keeps_its_labels(built, full, tmp_path):
    model, inputs, _ = built["wan"]
    with wb.record(model, WAN_SITES, queries="center", store=tmp_path / "run.zarr") as rec:
        forward(model, inputs)
    again = wb.open_recording(tmp_path / "run.zarr")[WAN_SITES[0]]
    assert again.attrs["queries"] == "center"
    np.testing.assert_array_equal(again.query_frame.values, [0, 1, 2])
    np.testing.assert_allclose(again.values, full["wan"][WAN_SITES[0]].isel(query=again.query_index.values).values,
                               atol=1e-6)
    assert set(rec) == set(WAN_SITES)


@pytest.mark.parametrize("subset, message", [
    ("centre", "the only named subset is 'center'"),
    ((0, 4, 0, 4), "a tuple is ambiguous"),
    ({"y": (3, 3)}, r"y=\(3, 3\) is empty"),
    ({"rows": (0, 2)}, r"unknown keys \['rows'\]"),
    ({"stride": 0}, "stride must be a whole number >= 1"),
    ([], "an empty list selects nothing"),
    ([1, 2, 1], r"\[1\] given more than once"),
    ([1, (2, 3)], "not a mix"),
    (2.5, "a float is none of them"),
])
def test_bad_forms_are_refused_when_record_is_called(built, subset, message):
    model = built["sd3"][0]
    with pytest.raises(ValueError, match=message) as error:
        wb.record(model, SD3_BLOCKS, queries=subset)
    assert "Valid forms: 'center'" in str(error.value)


@pytest.mark.parametrize("family, subset, message", [
    ("sd3", [64], r"token indices \[64\] are out of range for the 8 x 8 \(y, x\) image-token grid of "
                  r"transformer_blocks.0.attn.*valid are 0..63"),
    ("sd3", {"y": (4, 9)}, r"y=\(4, 9\) reaches beyond the 8 x 8 .* \(y 0..7\)"),
    ("sd3", {"frame": 0}, "has no frames"),
    ("sd3", [(1, 2, 3)], r"positions are \(y, x\)"),
    ("wan", [(0, 4, 0)], r"positions \[\(0, 4, 0\)\] lie outside the 3 x 4 x 4 \(frame, y, x\) video-token grid"),
])
def test_positions_outside_a_sites_grid_are_refused_naming_the_site_and_grid(built, family, subset, message):
    model, inputs, _ = built[family]
    with pytest.raises(ValueError, match=message):
        with wb.record(model, SD3_BLOCKS if family == "sd3" else WAN_SITES, queries=subset):
            forward(model, inputs)


def test_sites_without_image_or_video_queries_are_refused(built):
    model = built["sd3"][0]
    with pytest.raises(ValueError, match=r"has joint \[image \| text\] queries: record its blocks instead"):
        wb.record(model, ["transformer_blocks.0.attn.probs"], queries="center")
    with pytest.raises(ValueError, match="none of the recorded sites has such queries"):
        wb.record(model, [SD3_TEXT_QUERIES, "transformer_blocks.0.out.image"], queries="center")


def test_a_unet_subset_resolves_on_each_levels_own_grid():
    model, inputs = tiny_denoiser("unet"), example_inputs("unet", batch_size=1)
    sites = [s for s in wb.sites(model, "**.attn1.probs").index][:: 2]
    with wb.record(model, sites) as whole:
        forward(model, inputs)
    with wb.record(model, sites, queries="center") as sub:
        forward(model, inputs)
    sides = set()
    for name in sites:
        _check_rows_of_full(sub, whole, name)
        side = int(np.sqrt(whole[name].sizes["query"]))
        sides.add(side)
        assert sub[name].query_y.values.tolist() == [side // 2] and sub[name].query_x.values.tolist() == [side // 2]
    assert len(sides) > 1  # several resolution levels, each its own centre


def test_the_budget_projects_the_kept_rows_and_refuses_a_bad_position_before_the_forward(built):
    model, inputs = built["sd3"][0], _bigger("sd3")  # 24 x 24 image tokens
    whole = wb.record(model, [SD3_BLOCKS[0]], expected_steps=1)
    with whole:
        forward(model, inputs)
    limit = whole.projection.total // 2
    with pytest.raises(wb.CaptureTooLarge, match="queries="):
        with wb.record(model, [SD3_BLOCKS[0]], expected_steps=1, max_bytes=limit):
            forward(model, inputs)
    sub = wb.record(model, SD3_BLOCKS + [SD3_TEXT_QUERIES], expected_steps=1, max_bytes=limit, queries={"stride": 4})
    with sub as rec:
        forward(model, inputs)
    assert rec.nbytes() == sub.projection.total
    assert sub.projection.per_call[SD3_BLOCKS[0]] * 576 == whole.projection.per_call[SD3_BLOCKS[0]] * 36  # 6 x 6 kept
    calls = []
    handle = model.transformer_blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"reaches beyond the 24 x 24"):
            with wb.record(model, SD3_BLOCKS, expected_steps=1, queries={"y": (20, 30)}):
                forward(model, inputs)
    finally:
        handle.remove()
    assert not calls, "a block ran before the refusal"


@pytest.mark.parametrize("mask", ["none", "float", "bool", "causal"])
def test_the_kernels_rows_equal_the_same_rows_of_the_whole_computation(mask):
    """Chosen query rows (unsorted, more than one log-sum-exp chunk of them) against the whole
    matrix, with each kind of mask: probabilities, log-sum-exp and blocks."""
    g = torch.Generator().manual_seed(0)
    n = kernels._LSE_QUERY_CHUNK + 76
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) for _ in range(3))
    rows = torch.randperm(n, generator=g)[: kernels._LSE_QUERY_CHUNK + 26]
    opts = {}
    if mask == "float":
        opts["attn_mask"] = torch.randn(1, 1, n, n, generator=g).masked_fill(torch.rand(1, 1, n, n, generator=g) < 0.3,
                                                                              float("-inf"))
    elif mask == "bool":
        opts["attn_mask"] = torch.rand(1, 2, n, n, generator=g) < 0.7
    elif mask == "causal":
        opts["is_causal"] = True
    whole = kernels.full_probs(q, k, **opts)
    torch.testing.assert_close(kernels.full_probs(q, k, rows=rows, **opts), whole[..., rows, :], rtol=0, atol=1e-6)
    lse = kernels.chunked_lse(q, k, **opts)
    lse_rows = kernels.chunked_lse(q, k, rows=rows, **opts)
    torch.testing.assert_close(lse_rows, lse[..., rows], rtol=0, atol=1e-5)
    _, flash_lse = kernels.attention_with_lse(q, k, v, rows=rows, **opts)
    torch.testing.assert_close(flash_lse, lse[..., rows], rtol=0, atol=1e-5)
    block = kernels.block_probs(q, k, lse_rows, rows, (10, 300), **opts)
    torch.testing.assert_close(block, whole[..., rows, 10:300], rtol=0, atol=1e-6)


def test_a_kernel_without_log_sum_exp_flex_computes_the_kept_rows_alone(full, restore_attention_backend):
    """Flex attention returns no usable log-sum-exp here: the recorder computes it for the kept rows only."""
    model, inputs = tiny_denoiser("sd3"), example_inputs("sd3", batch_size=2, text_len=8)  # the same weights
    model.set_attention_backend("flex")
    with wb.record(model, SD3_BLOCKS, queries=[3, 40, 41]) as sub:
        forward(model, inputs)
    for name in SD3_BLOCKS:
        _check_rows_of_full(sub, full["sd3"], name)
