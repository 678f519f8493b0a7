"""The interactive widgets on tiny-model recordings: controls redraw the figure, the numbers
drawn agree with workbench.attention, and every kind of recording (live, zarr, Dataset; whole
matrices or blocks; MM-DiT, FLUX, U-Net) works."""

import html

import numpy as np
import pytest
import torch

pytest.importorskip("anywidget", reason="plotly's FigureWidget needs the anywidget package")

import workbench as wb
from workbench import widgets
from workbench.attention import block_mass, word_maps
from workbench.widgets.sources import ALL_LAYERS, BLOCKS

PROMPTS = ["a red circle on the left", "a blue square"]


@pytest.fixture(scope="module")
def sd3():
    torch.set_num_threads(1)
    model = wb.load("tiny-sd3")
    # Layer 0 as a whole matrix, layer 1 as its four blocks: the explorer must treat both alike.
    with torch.no_grad(), wb.record(model, ["transformer_blocks.0.attn.probs", "transformer_blocks.1.attn.probs.*",
                                            "latent.*"]) as rec:
        images = model.generate(PROMPTS, steps=2, seed=0)
    return model, rec, images


@pytest.fixture(scope="module")
def unet():
    torch.set_num_threads(1)
    model = wb.load("tiny-sd")
    with torch.no_grad(), wb.record(model, ["**.attn2.probs", "down_blocks.0.**.attn1.probs"]) as rec:
        images = model.generate(PROMPTS, steps=2, seed=0)
    return model, rec, images


def heat(explorer, panel="A"):
    return np.array(next(t for t in explorer.figure.data if t.name == f"map {panel}").z, dtype=float)


def bars(explorer, panel="A"):
    trace = next(t for t in explorer.figure.data if t.name == f"mass {panel}")
    return dict(zip(trace.x, trace.y))


def test_sd3_controls_redraw_the_figure(sd3):
    _, rec, images = sd3
    explorer = widgets.attention(rec, images)
    c = explorer.controls
    assert set(c) == {"layer", "head", "step", "branch", "sample", "word", "sample_b", "word_b"}
    assert c["word"].value == "red" and c["word_b"].value == "blue"  # first content word of each prompt
    assert next(t for t in explorer.figure.data if t.name == "image A").source.startswith("data:image/png;base64,")

    seen = [heat(explorer)]
    for name, value in [("step", 1), ("head", 1), ("word", "circle"), ("branch", "uncond"), ("sample", 1)]:
        c[name].value = value
        seen.append(heat(explorer))
        assert not np.allclose(seen[-1], seen[-2]), f"changing {name} did not change map A"
    # Sample A is now "a blue square": word A re-chosen from its words, B follows when it can.
    assert c["word"].options == ("a", "blue", "square")
    c["sample_b"].value = 0
    c["word"].value = "a"
    assert c["word_b"].value == "a"
    np.testing.assert_allclose(explorer.maps["A-B"], explorer.maps["A"] - explorer.maps["B"], atol=1e-7)


def test_sd3_block_mass_and_maps_match_the_attention_module(sd3):
    _, rec, images = sd3
    explorer = widgets.attention(rec, images)
    c = explorer.controls
    c["step"].value = 1
    probs = rec["transformer_blocks.0.attn.probs"].isel(sample=0, step=1).sel(branch="cond")
    expected = block_mass(probs).mean("head")
    drawn = bars(explorer)
    assert list(drawn) == list(BLOCKS)
    for block, value in drawn.items():
        q, k = block.split("->")
        assert value == pytest.approx(float(expected.sel(query_kind=q, key_kind=k)), rel=1e-5)
    # Map = share of each image patch's attention on the word's tokens (CLIP and T5 copies alike).
    image = probs.isel(query=(probs.query_kind == "image").values, key=(probs.key_kind == "text").values).mean("head")
    tokens = [str(t) for t in image.key_token.values]
    columns = [i for i, t in enumerate(tokens) if t in ("red</w>", "▁red")]
    per_patch = image.isel(key=columns).sum("key")
    grid = np.zeros((8, 8))
    grid[per_patch.query_y.values, per_patch.query_x.values] = per_patch.values
    np.testing.assert_allclose(explorer.maps["A"], grid, rtol=1e-5, atol=1e-7)


def test_blocks_and_whole_matrix_give_the_same_views(sd3):
    """Layer 1 recorded as four blocks shows what its whole matrix shows: the explorer over the
    blocks is compared with one over the whole matrix, recorded in a second identical run."""
    model, rec, _ = sd3
    explorer = widgets.attention({k: rec[k] for k in rec if k.startswith("transformer_blocks.1.")})
    assert explorer.controls["layer"].options == ("transformer_blocks.1.attn.probs",)
    assert list(bars(explorer)) == list(BLOCKS)
    total = sum(bars(explorer)[b] for b in ("image->image", "image->text"))
    assert total == pytest.approx(1.0, abs=1e-5)  # image queries' rows sum to one over all keys
    with torch.no_grad(), wb.record(model, ["transformer_blocks.1.attn.probs"]) as whole_rec:
        model.generate(PROMPTS, steps=2, seed=0)
    whole = widgets.attention(whole_rec)
    for name in ("step", "head", "word", "sample_b", "word_b"):
        whole.controls[name].value = explorer.controls[name].value
    assert bars(whole) == pytest.approx(bars(explorer), abs=1e-6)
    for panel in ("A", "B"):
        assert explorer.maps[panel].shape == (8, 8)
        np.testing.assert_allclose(explorer.maps[panel], whole.maps[panel], rtol=1e-5, atol=1e-7)
    explorer.controls["word"].value = whole.controls["word"].value = "circle"
    np.testing.assert_allclose(explorer.maps["A"], whole.maps["A"], rtol=1e-5, atol=1e-7)


def test_moving_controls_reuses_cached_summaries(sd3):
    """Each (layer, sample, branch, step) is read and reduced once; head and word moves only index."""
    _, rec, images = sd3
    explorer = widgets.attention(rec, images)
    computed = dict(explorer.source._summaries)
    assert len(computed) == 2  # sample A and sample B at the first layer and step
    explorer.controls["head"].value = 1
    explorer.controls["word"].value = "circle"
    explorer.controls["word_b"].value = "square"
    assert explorer.source._summaries.keys() == computed.keys()
    explorer.controls["step"].value = 1
    explorer.controls["step"].value = 0
    assert len(explorer.source._summaries) == 4
    assert all(explorer.source._summaries[key] is summary for key, summary in computed.items())


def test_all_layers_and_head_options(sd3):
    _, rec, images = sd3
    explorer = widgets.attention(rec, images)
    c = explorer.controls
    assert c["layer"].options[-1] == ALL_LAYERS
    assert [v for _, v in c["head"].options] == [-1, 0, 1]
    before = heat(explorer)
    c["layer"].value = ALL_LAYERS
    assert [v for _, v in c["head"].options] == [-1]  # heads do not line up across layers
    assert not np.allclose(heat(explorer), before)


def test_unet_cross_attention_at_several_resolutions(unet):
    _, rec, images = unet
    explorer = widgets.attention(rec, images)
    c = explorer.controls
    shapes = {}
    for layer in c["layer"].options:
        c["layer"].value = layer
        shapes[layer] = None if explorer.maps["A"] is None else explorer.maps["A"].shape
    assert shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.probs"] == (16, 16)
    assert shapes["down_blocks.1.attentions.0.transformer_blocks.0.attn2.probs"] == (8, 8)
    assert shapes[ALL_LAYERS] == (16, 16)
    # Self-attention has no text keys: no word map, and the note says so.
    c["layer"].value = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.probs"
    assert explorer.maps["A"] is None and "no image->text" in html.unescape(explorer.status.value)
    assert bars(explorer) == {"image->image": pytest.approx(1.0)}
    # Normalised, one layer's map at one step is word_maps' DAAM map for that layer and step.
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.probs"
    c["layer"].value, c["step"].value, c["word"].value = layer, 1, "circle"
    expected = word_maps(rec, 0, sites=layer, steps=[1]).sel(word="circle").values
    np.testing.assert_allclose(explorer.maps["A"] / explorer.maps["A"].sum(), expected, rtol=1e-4, atol=1e-7)


def test_flux_joint_attention_text_first():
    torch.set_num_threads(1)
    model = wb.load("tiny-flux")
    with torch.no_grad(), wb.record(model, ["single_transformer_blocks.0.attn.probs"]) as rec:
        model.generate(PROMPTS, steps=1, seed=0)
    explorer = widgets.attention(rec)  # no images: maps alone
    assert explorer.controls["word"].value == "red" and explorer.maps["A"].shape == (8, 8)
    assert next(t for t in explorer.figure.data if t.name == "image A").visible is False
    assert sum(bars(explorer).values()) == pytest.approx(2.0, abs=1e-5)  # two query kinds, each row summing to one


def test_zarr_round_trip_and_dataset_show_the_same(sd3, tmp_path):
    _, rec, images = sd3
    rec.save(tmp_path / "rec.zarr")
    for mapping in (wb.open_recording(tmp_path / "rec.zarr"), rec.dataset):
        live, other = widgets.attention(rec, images), widgets.attention(mapping, images)
        assert other.controls["layer"].options == live.controls["layer"].options
        for name, value in [("step", 1), ("layer", "transformer_blocks.1.attn.probs"), ("head", 0)]:
            live.controls[name].value = value
            other.controls[name].value = value
            np.testing.assert_allclose(heat(other), heat(live), rtol=1e-6)
            np.testing.assert_allclose(heat(other, "B"), heat(live, "B"), rtol=1e-6)


def test_compare_with_a_second_recording(sd3):
    model, rec, images = sd3
    with torch.no_grad(), wb.record(model, ["transformer_blocks.0.attn.probs"]) as other:
        other_images = model.generate(["a green circle on the left"], steps=2, seed=0)
    explorer = widgets.attention(rec, images, compare=other, compare_images=other_images)
    c = explorer.controls
    assert [v for _, v in c["sample_b"].options] == [0]
    c["word"].value = "circle"
    assert c["word_b"].value == "circle"
    before = heat(explorer, "B")
    c["word_b"].value = "green"
    assert not np.allclose(heat(explorer, "B"), before)
    # Layer 1 was not recorded in B: A still draws, B says why it is empty.
    c["layer"].value = "transformer_blocks.1.attn.probs"
    assert explorer.maps["A"] is not None and explorer.maps["B"] is None
    assert "B has no layer" in explorer.status.value


def test_single_sample_has_no_compare_panels(sd3):
    _, rec, images = sd3
    one = {k: rec[k].isel(sample=[0]) for k in rec}
    explorer = widgets.attention(one, images[:1])
    assert "sample_b" not in explorer.controls
    assert [t.name for t in explorer.figure.data] == ["image A", "map A", "mass A"]


def test_clear_errors(sd3):
    model, rec, images = sd3
    latents_only = {k: rec[k] for k in rec if k.startswith("latent.")}
    with pytest.raises(widgets.NoAttentionError, match=r"attn\.probs.*Recorded: latent"):
        widgets.attention(latents_only)
    with pytest.raises(ValueError, match="3 images for a recording of 2 samples"):
        widgets.attention(rec, np.zeros((3, 32, 32, 3)))
    with pytest.raises(ValueError, match="record 'latent.\\*'"):
        widgets.trajectory({k: rec[k] for k in rec if "probs" in k}, model)


def test_trajectory_decodes_lazily_and_caches(sd3):
    model, rec, _ = sd3
    viewer = widgets.trajectory(rec, model)
    assert [t.name for t in viewer.figure.data] == ["latent.in", "latent.x0"]
    assert set(viewer.frames) == {("latent.in", 0, 0), ("latent.x0", 0, 0)}  # only what is shown
    before = viewer.figure.data[1].source
    viewer.controls["step"].value = 1
    assert viewer.figure.data[1].source != before
    expected = model.decode_latents(rec["latent.x0"].isel(sample=[0], step=1, branch=0).values)[0]
    np.testing.assert_allclose(viewer.frames[("latent.x0", 0, 1)], expected, atol=1e-6)
    viewer.controls["step"].value = 0
    assert len(viewer.frames) == 4  # going back decodes nothing new
    assert viewer.figure.data[1].source == before
