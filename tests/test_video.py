"""Video as a geometry: Wan 2.1/2.2, CogVideoX, LTX-Video, HunyuanVideo 1.5 and Mochi 1 denoisers, built tiny
from their real diffusers classes (3 latent frames of 4 x 4 tokens), recorded and intervened.

Per family: recording every attention site leaves the output bitwise identical and no hook
behind; video tokens carry (frame, y, x) in token order; attention rows sum to one; probabilities
times the values read by plain torch hooks (not the recorder) reproduce the attention module's
output; where text enters only through attention K/V (Wan, LTX), patching a source prompt's text
K/V into a run with another prompt reproduces the source run bitwise (all but Mochi, whose prompt
also enters through its timestep embedding: the joint-attention families drop their text stream
after the last block). Word maps come out as (word, frame, y, x). Mochi runs its attention one sample
at a time over each sample's unpadded tokens: recorded on the whole axis, the padding zero.
"""

from fnmatch import fnmatchcase

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.attention.maps import decompose, to_grid, word_maps
from workbench.capture import all_sites
from workbench.models.tiny._video import VIDEO_TOKEN_GRID
from workbench.models.tiny.hunyuan_video15 import IMAGE_TOKENS

from conftest import build_tiny_families, denoiser_forward, hook_count

FAMILIES = ("wan", "cogvideox", "ltx", "hunyuan_video15", "mochi")
# Families whose prompt reaches the video tokens only through attention keys/values: cross-attention
# (Wan, LTX) and joint attention whose text stream is dropped at the end (CogVideoX).
KV_ONLY = ("wan", "cogvideox", "ltx", "hunyuan_video15")
# HunyuanVideo 1.5's context is [image | byT5 | MLLM] reordered per sample: no one tokenizer labels it
TOKENIZED = ("wan", "cogvideox", "ltx", "mochi")
TEXT_LEN = 8


pytestmark = pytest.mark.usefixtures("one_thread")
forward = denoiser_forward


@pytest.fixture(scope="module")
def built():
    """{family: (model, inputs, reference output)}, each model built once for the module."""
    return build_tiny_families(FAMILIES, TEXT_LEN)


def probs_sites(model, whole=True):
    return [s.name for s in all_sites(model) if getattr(s.tap, "role", None) == "probs" and (s.tap.block is None) == whole]


@pytest.mark.parametrize("family", FAMILIES)
def test_recording_every_attention_site_leaves_the_output_bitwise_identical(built, family):
    model, inputs, reference = built[family]
    sites = [s.name for s in all_sites(model) if not s.name.startswith("latent.")]
    with wb.record(model, sites) as rec:
        recorded = forward(model, inputs)
    assert torch.equal(recorded, reference)
    assert hook_count(model) == 0
    assert set(rec) == set(sites)
    # the log-sum-exp path (blocks only, no whole matrix) too
    blocks = probs_sites(model, whole=False)
    if blocks:
        with wb.record(model, blocks):
            assert torch.equal(forward(model, inputs), reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_tokens_carry_frame_y_x_in_token_order(built, family):
    model, inputs, _ = built[family]
    site = probs_sites(model)[0]
    with wb.record(model, [site]) as rec:
        forward(model, inputs)
    probs = rec[site]
    video = (probs.query_kind == "video").values
    frames, rows, cols = VIDEO_TOKEN_GRID
    assert video.sum() == frames * rows * cols
    expected = np.indices(VIDEO_TOKEN_GRID).reshape(3, -1)  # frame by frame, row by row
    for axis, want in zip(("frame", "y", "x"), expected):
        np.testing.assert_array_equal(probs[f"query_{axis}"].values[video], want)
        assert (probs[f"query_{axis}"].values[~video] == -1).all()
    grid = to_grid(probs.isel(query=video), "query")
    assert grid.dims[-4:] == ("frame", "y", "x", "key") and grid.sizes["frame"] == frames
    # the grid holds each token where its coordinates say
    flat = probs.isel(query=video).values
    np.testing.assert_array_equal(grid.isel(frame=2, y=1, x=3).values, flat[..., 2 * rows * cols + 1 * cols + 3, :])


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_rows_sum_to_one_and_blocks_are_named_video(built, family):
    model, inputs, _ = built[family]
    whole = probs_sites(model)
    with wb.record(model, whole + probs_sites(model, whole=False)) as rec:
        forward(model, inputs)
    for name in whole:
        np.testing.assert_allclose(rec[name].sum("key").values, 1.0, atol=1e-5, err_msg=name)
        parts = decompose(rec[name])
        assert "video->text" in parts or "video->video" in parts, list(parts)
        assert not any("image" in block for block in parts)
    for name in probs_sites(model, whole=False):  # blocks are slices of the whole matrix
        whole_name, block = name.rsplit(".", 1)
        np.testing.assert_allclose(rec[name].values, decompose(rec[whole_name])[block].values, rtol=1e-5, atol=1e-6)
    if family == "cogvideox":
        path = whole[0]  # the joint blocks of one layer: a video query's row is split over two of them
        assert {f"{path}.video->video", f"{path}.video->text", f"{path}.text->video", f"{path}.text->text"} <= set(rec)
        mass = rec[f"{path}.video->video"].sum("key") + rec[f"{path}.video->text"].sum("key")
        np.testing.assert_allclose(mass.values, 1.0, atol=1e-5)



def test_ltx_padding_tokens_get_no_attention_and_the_output_stays_bitwise(built):
    model, inputs, _ = built["ltx"]
    mask = inputs["encoder_attention_mask"].clone()
    mask[:, -2:] = 0  # the last two text tokens are padding, as the pipeline's T5 mask says
    padded = dict(inputs, encoder_attention_mask=mask)
    reference = forward(model, padded)
    cross = [n for n in probs_sites(model) if n.endswith("attn2.probs")]
    with wb.record(model, cross + [f"{n}" for n in probs_sites(model, whole=False)]) as rec:
        assert torch.equal(forward(model, padded), reference)
    for name in cross:
        np.testing.assert_allclose(rec[name].sum("key").values, 1.0, atol=1e-5)
        assert float(rec[name].isel(key=slice(TEXT_LEN - 2, None)).max()) < 1e-6, name


def _split_heads(x, heads):
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_probs_times_v_is_the_attention_modules_output(built, family):
    model, inputs, _ = built[family]
    sites = probs_sites(model)
    seen, handles = {}, []

    def keep(name):
        return lambda _m, args, out: seen.__setitem__(name, out)

    for name in sites:
        path = name.rsplit(".", 1)[0]
        module = model.get_submodule(path)
        handles += [module.register_forward_hook(keep(path)), module.to_v.register_forward_hook(keep(f"{path}:v"))]
        if getattr(module, "add_v_proj", None) is not None:  # HunyuanVideo 1.5: context values apart
            handles.append(module.add_v_proj.register_forward_hook(keep(f"{path}:add_v")))
    try:
        with wb.record(model, sites) as rec:
            forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    for name in sites:
        path = name.rsplit(".", 1)[0]
        module = model.get_submodule(path)
        p = torch.from_numpy(rec[name].values[:, 0, 0]).double()  # (batch, head, query, key)
        v = seen[f"{path}:v"]
        if f"{path}:add_v" in seen:  # keys are [video | context]
            v = torch.cat([v, seen[f"{path}:add_v"]], dim=1)
        v = _split_heads(v.double(), module.heads)
        mixed = (p @ v).transpose(1, 2).reshape(p.shape[0], p.shape[2], -1)
        projected = module.to_out[0].double()(mixed)
        module.to_out[0].float()
        out = seen[path]
        kinds = rec[name].query_kind.values
        if isinstance(out, tuple) and getattr(module, "add_v_proj", None) is not None:  # HunyuanVideo 1.5, Mochi
            text_out = mixed[:, kinds == "text"]  # Mochi's last block (context_pre_only) leaves it unprojected
            if getattr(module, "to_add_out", None) is not None:
                text_out = module.to_add_out.double()(text_out)
                module.to_add_out.float()
            expected = (projected[:, kinds == "video"], text_out)
        elif isinstance(out, tuple):  # CogVideoX: (video, text) from the joint [text | video] rows
            expected = (projected[:, kinds == "video"], projected[:, kinds == "text"])
        else:
            expected = (projected,)
            out = (out,)
        for got, want in zip(out, expected, strict=True):
            np.testing.assert_allclose(got.double().numpy(), want.detach().numpy(), rtol=1e-4, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("family", KV_ONLY)
def test_patching_text_keys_and_values_is_the_prompt_swap(built, family):
    model, inputs, reference = built[family]
    site_map = wb.hooks.site_map_for(model)
    kv = [s.name for s in all_sites(model) if any(fnmatchcase(s.name, p)
                                                   for p in site_map.text_keys + site_map.text_values)]
    assert len(kv) == 4  # k and v of the text attention in each of the two blocks
    other = dict(inputs, encoder_hidden_states=torch.randn_like(inputs["encoder_hidden_states"]))
    with wb.record(model, kv) as source:
        forward(model, inputs)
    swapped = forward(model, other)
    assert (swapped - reference).abs().max() > 1e-3  # the prompt matters
    with wb.intervene(model, [wb.patch(name, source) for name in kv]):
        patched = forward(model, other)
    assert torch.equal(patched, reference)
    assert hook_count(model) == 0


@pytest.mark.parametrize("family", TOKENIZED)
def test_word_maps_are_word_frame_y_x(built, family):
    model, inputs, _ = built[family]
    site_map = wb.hooks.site_map_for(model)
    with wb.record(model, list(site_map.text_attention)) as rec:
        forward(model, inputs)
    # a denoiser called directly has no prompt; label its text axis as a pipeline would
    rec.text_tokens = [["▁a", "▁red", "▁ball", "▁rolls", "▁left", "</s>", "<pad>", "<pad>"]] * 2
    maps = word_maps(rec)
    assert maps.dims == ("word", "frame", "y", "x")
    assert list(maps.word.values) == ["a", "red", "ball", "rolls", "left"]
    assert maps.sizes["frame"] == VIDEO_TOKEN_GRID[0] and (maps.sizes["y"], maps.sizes["x"]) == VIDEO_TOKEN_GRID[1:]
    np.testing.assert_allclose(maps.sum(("frame", "y", "x")).values, 1.0, rtol=1e-6)
    # one word's map is the mean over layers and heads of its token's video->text column
    column = np.mean([to_grid(rec[n].isel(sample=0, branch=0, step=0).mean("head"), "query").isel(key=2).values
                      for n in rec], axis=0)
    np.testing.assert_allclose(maps.sel(word="ball").values, column / column.sum(), rtol=1e-5)


def test_explorer_has_a_frame_slider_that_shows_each_frames_map(built):
    from workbench import widgets

    model, inputs, _ = built["cogvideox"]
    layer = "transformer_blocks.0.attn1.probs"
    with wb.record(model, [layer]) as rec:
        forward(model, inputs)
    rec.text_tokens = [["▁a", "▁red", "▁ball", "▁rolls", "▁left", "</s>", "<pad>", "<pad>"]] * 2
    explorer = widgets.attention(rec)
    c = explorer.controls
    assert c["frame"].max == VIDEO_TOKEN_GRID[0] - 1
    c["layer"].value, c["word"].value = layer, "ball"
    bars = {x: y for x, y in zip(explorer._trace("mass A").x, explorer._trace("mass A").y)}
    assert set(bars) == {"video->video", "video->text", "text->video", "text->text"}
    probs = rec[layer].isel(sample=0, branch=0, step=0).mean("head")
    video = probs.isel(query=(probs.query_kind == "video").values)
    for frame in range(VIDEO_TOKEN_GRID[0]):
        c["frame"].value = frame
        expected = to_grid(video, "query").isel(frame=frame, key=2).values  # "ball" is text position 2
        np.testing.assert_allclose(explorer.maps["A"], expected, rtol=1e-5)
        assert f"frame {frame} of 3" in explorer.status.value
    assert not np.allclose(explorer.maps["A"], to_grid(video, "query").isel(frame=0, key=2).values)


def test_tiny_video_model_records_prompt_words_and_the_report_shows_each_frame():
    from workbench.demo import video_section
    from workbench.models.video import tiny_video_model, video_latents
    from workbench.report import video_word_map_figure

    model = tiny_video_model("cogvideox")
    prompt = ["a red circle on the left"]
    with wb.record(model, list(model.site_map.text_attention)) as rec:
        wb.denoise(model, video_latents(model), steps=2, conditioning=model.encode(prompt), prompts=prompt)
    maps = word_maps(rec)
    assert {"red", "circle", "left"} <= set(maps.word.values) and maps.dims == ("word", "frame", "y", "x")
    fig = video_word_map_figure(maps, max_words=3)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 3 * VIDEO_TOKEN_GRID[0]
    first = maps.sel(word="red")  # row 1: the first content word ("a" is a stop word), one column per frame
    for frame in range(VIDEO_TOKEN_GRID[0]):
        np.testing.assert_allclose(np.asarray(heat[frame].z), first.isel(frame=frame).values)
    rows = [a.text for a in fig.layout.annotations if a.text.startswith('"')]
    assert rows == ['"red"', '"circle"', '"left"']  # stop words dropped, content words kept in order
    assert heat[0].colorbar.title.text == "share" and "averaged over" in fig.layout.title.text
    assert "video patch" in fig.layout.title.text
    with pytest.raises(ValueError, match=r"\(word, frame, y, x\)"):
        video_word_map_figure(maps.isel(frame=0))
    title, parts = video_section("a red circle on the left", steps=2)
    assert "frame" in parts[0] and len([t for t in parts[1].data if t.type == "heatmap"]) % VIDEO_TOKEN_GRID[0] == 0


def test_hunyuan_video15_context_is_left_unlabelled_and_word_maps_say_so(built):
    model, inputs, _ = built["hunyuan_video15"]
    with wb.record(model, list(wb.hooks.site_map_for(model).text_attention)) as rec:
        forward(model, inputs)
    rec.text_tokens = [["▁a"] * TEXT_LEN] * 2  # the MLLM tokens alone do not cover the 17-token context
    block = rec["transformer_blocks.0.attn.probs.video->text"]
    assert block.sizes["key"] == TEXT_LEN + 4 + IMAGE_TOKENS and "key_token" not in block.coords
    with pytest.raises(ValueError, match="unlabelled"):
        word_maps(rec)


def test_hunyuan_video15_text_to_video_masks_its_image_tokens(built):
    """Zero image embeddings mean text-to-video: the denoiser masks the image tokens (last in the
    context) out of both sides of the attention. Their rows are zero, as sdpa's output for them."""
    model, inputs, _ = built["hunyuan_video15"]
    t2v = dict(inputs, image_embeds=torch.zeros_like(inputs["image_embeds"]))
    reference = forward(model, t2v)
    whole = probs_sites(model)
    with wb.record(model, whole) as rec:
        assert torch.equal(forward(model, t2v), reference)
    with wb.record(model, probs_sites(model, whole=False)) as blocks:  # the log-sum-exp path
        assert torch.equal(forward(model, t2v), reference)
    for name in whole:
        probs = rec[name]
        assert not np.isnan(probs.values).any(), name
        sums = probs.sum("key").values
        np.testing.assert_allclose(sums[..., :-IMAGE_TOKENS], 1.0, atol=1e-5)
        np.testing.assert_array_equal(sums[..., -IMAGE_TOKENS:], 0.0)
        assert float(abs(probs.isel(key=slice(-IMAGE_TOKENS, None))).max()) == 0.0
        np.testing.assert_allclose(blocks[f"{name}.text->text"].values, decompose(probs)["text->text"].values, atol=1e-6)


def test_mochi_attends_one_sample_at_a_time_and_records_the_padding_as_zero(built):
    """Mochi's processor calls the kernel once per sample over [video | that sample's kept text
    tokens]. Recorded on the whole axis: kept rows sum to one, padding rows and columns are zero,
    probabilities are softmax(q k^T) over the kept keys of the recorded q, k, the output is
    bitwise; an edit of a dropped token changes nothing, of a kept one changes that sample only."""
    model, inputs, _ = built["mochi"]
    mask = inputs["encoder_attention_mask"].clone()
    mask[1, -2:] = 0  # sample 1 drops its last two text tokens
    padded = dict(inputs, encoder_attention_mask=mask)
    reference = forward(model, padded)
    whole = probs_sites(model)
    with wb.record(model, whole + [n.replace(".probs", ".q.text") for n in whole]
                   + [n.replace(".probs", s) for n in whole for s in (".q.video", ".k.video", ".k.text")]) as rec:
        assert torch.equal(forward(model, padded), reference)
    with wb.record(model, probs_sites(model, whole=False)) as blocks:  # the log-sum-exp path
        assert torch.equal(forward(model, padded), reference)
    n_video = int(np.prod(VIDEO_TOKEN_GRID))
    dropped = n_video + TEXT_LEN - 2 + np.arange(2)
    for name in whole:
        probs = rec[name].values[:, 0, 0]  # (sample, head, query, key)
        sums = probs.sum(-1)
        np.testing.assert_allclose(sums[0], 1.0, atol=1e-5)
        np.testing.assert_allclose(np.delete(sums[1], dropped, axis=-1), 1.0, atol=1e-5)
        assert float(abs(probs[1][..., dropped, :]).max()) == 0.0 and float(abs(probs[1][..., dropped]).max()) == 0.0
        path = name[: -len(".probs")]
        q = torch.cat([torch.from_numpy(rec[f"{path}.q.{kind}"].values[:, 0, 0]) for kind in ("video", "text")], dim=-2)
        k = torch.cat([torch.from_numpy(rec[f"{path}.k.{kind}"].values[:, 0, 0]) for kind in ("video", "text")], dim=-2)
        assert float(q[1, :, dropped].abs().max()) == 0.0  # dropped tokens never reach the kernel
        logits = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5)[1][..., np.delete(np.arange(q.shape[-2]), dropped)]
        kept = np.delete(np.arange(q.shape[-2]), dropped)
        np.testing.assert_allclose(probs[1][:, kept][..., kept], torch.softmax(logits[:, kept], -1).numpy(), atol=1e-5)
        for block, values in decompose(rec[name]).items():
            np.testing.assert_allclose(blocks[f"{name}.{block}"].values, values.values, atol=1e-6)
    site = "transformer_blocks.0.attn1.k.text"
    with wb.intervene(model, [wb.edit(site, lambda k, ctx: k + 5.0, tokens=[TEXT_LEN - 1])]):
        edited_dropped = forward(model, padded)
    with wb.intervene(model, [wb.edit(site, lambda k, ctx: k + 5.0, tokens=[0])]):
        edited_kept = forward(model, padded)
    assert torch.equal(edited_dropped[1], reference[1])  # sample 1 dropped token 7: the edit reaches nothing
    assert not torch.equal(edited_dropped[0], reference[0])  # sample 0 keeps it
    assert (edited_kept - reference).abs().amax(dim=(1, 2, 3, 4)).min() > 0  # both samples keep token 0
    with pytest.raises(ValueError, match="one sample at a time"):
        with wb.intervene(model, [wb.ablate(site, "mean")]):
            forward(model, padded)
    assert hook_count(model) == 0


def test_mochi_attention_that_no_longer_runs_per_sample_is_refused_not_misrecorded(built):
    """A processor that attends the whole batch in one call, or one sample only (here: video
    self-attention alone), breaks the site map's per-sample declaration: the recorder says so
    instead of filing two samples as one or leaving a sample out."""
    model, inputs, _ = built["mochi"]
    attn = model.transformer_blocks[0].attn1

    def batched(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb=None):
        q, k, v = (proj(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return attn.to_out[0](out), encoder_hidden_states

    def first_sample_only(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb=None):
        out, context = batched(attn, hidden_states[:1], encoder_hidden_states, attention_mask)
        return out.expand_as(hidden_states), context

    original = attn.processor
    for processor, says in ((batched, "holds 2 samples"), (first_sample_only, "ran 1 time.*for 2 samples")):
        attn.processor = processor
        try:
            with pytest.raises(ValueError, match=f"one sample at a time.*{says}"):
                with wb.record(model, ["transformer_blocks.0.attn1.probs"]):
                    forward(model, inputs)
        finally:
            attn.processor = original
    assert hook_count(model) == 0


# The tiny video pipelines' videos: frames and pixels (the VAEs' temporal and spatial factors differ)
VIDEO_PIPELINES = {"wan": (5, 16), "cogvideox": (9, 32), "ltx": (5, 32)}


@pytest.mark.parametrize("family", VIDEO_PIPELINES)
def test_a_real_tiny_video_pipeline_records_video_maps_end_to_end(family):
    """WanPipeline / CogVideoXPipeline / LTXPipeline built tiny in-process (umT5 or T5 encoder, T5
    tokenizer, a tiny video VAE), run through ``Model.generate`` with classifier-free guidance (Wan:
    two calls per step; the others: one batched call) under ``record``: the frames are unchanged, video queries carry
    (frame, y, x), word maps are (word, frame, y, x) over the prompt's words, and x0 is a video latent."""
    model = wb.load(f"tiny-{family}")
    prompt = ["a red circle on the left"]
    reference = model.generate(prompt, steps=2, guidance_scale=4.0)
    frames, pixels = VIDEO_PIPELINES[family]
    assert reference.shape == (1, frames, pixels, pixels, 3)  # the VAE decodes 3 latent frames
    separate_calls = model.facts.guidance == "embedded"  # Wan runs cond and uncond as two calls
    whole = next(s.name for s in all_sites(model.denoiser) if getattr(s.tap, "role", None) == "probs")
    with wb.record(model, list(model.site_map.text_attention) + [whole, "latent.x0"],
                   branch_calls=model.facts.cfg_order if separate_calls else None) as rec:
        video = model.generate(prompt, steps=2, guidance_scale=4.0)
    np.testing.assert_array_equal(video, reference)
    cross = rec[next(n for n in rec if fnmatchcase(n, model.site_map.text_attention[0]))]  # video queries, text keys
    assert set(cross.branch.values) == {"cond", "uncond"} and cross.sizes["step"] == 2
    expected = np.indices(VIDEO_TOKEN_GRID).reshape(3, -1)
    for axis, want in zip(("frame", "y", "x"), expected):
        np.testing.assert_array_equal(cross[f"query_{axis}"].values, want)
    np.testing.assert_allclose(rec[whole].sum("key").values, 1.0, atol=1e-5)
    maps = word_maps(rec)
    assert maps.dims == ("word", "frame", "y", "x") and list(maps.word.values) == ["a", "red", "circle", "on", "the", "left"]
    assert (maps.sizes["frame"], maps.sizes["y"], maps.sizes["x"]) == VIDEO_TOKEN_GRID
    np.testing.assert_allclose(maps.sum(("frame", "y", "x")).values, 1.0, rtol=1e-5)
    x0 = rec["latent.x0"]
    if "token" in x0.dims:  # LTX-Video packs its latent into tokens: they carry (frame, y, x)
        for axis, want in zip(("frame", "y", "x"), expected):
            np.testing.assert_array_equal(x0[f"token_{axis}"].values, want)
    else:
        assert {"channel", "frame", "y", "x"} <= set(x0.dims)
    assert hook_count(model.denoiser) == 0


def test_a_real_tiny_mochi_pipeline_records_each_samples_unpadded_attention():
    """MochiPipeline built tiny in-process (T5 encoder and tokenizer, a 12-channel AutoencoderKLMochi),
    guided ([uncond | cond] in one batch) under ``record``: its processor attends per sample over the
    tokens its T5 mask keeps, so the empty negative prompt keeps only ``</s>`` and the prompt its 7
    tokens; recorded on the whole 16-token axis, kept rows sum to one and dropped tokens get nothing."""
    with pytest.raises(ValueError, match=r"not a tiny family \(.*tiny-mochi.*tiny-wan"):
        wb.load("mochi")  # the error lists the tiny pipelines from their registry, the video ones among them
    model = wb.load("tiny-mochi")
    prompt = ["a red circle on the left"]
    reference = model.generate(prompt, steps=2, guidance_scale=4.0)
    assert reference.shape == (1, 13, 32, 32, 3)  # 13 frames: 3 latent frames, 6x temporal
    with wb.record(model, ["transformer_blocks.*.attn1.probs"]) as rec:
        frames = model.generate(prompt, steps=2, guidance_scale=4.0)
    np.testing.assert_array_equal(frames, reference)
    probs = rec["transformer_blocks.1.attn1.probs"]
    assert list(probs.branch.values) == ["uncond", "cond"]
    tokens = list(probs.key_token.values[0][probs.key_kind.values == "text"])
    assert tokens[:7] == ["▁a", "▁red", "▁circle", "▁on", "▁the", "▁left", "</s>"] and set(tokens[7:]) == {"<pad>"}
    n_video = int((probs.key_kind == "video").sum())
    for branch, kept_text in (("uncond", 1), ("cond", 7)):  # "" is one </s>
        p = probs.sel(branch=branch).values[0]  # (step, head, query, key)
        kept = n_video + kept_text
        np.testing.assert_allclose(p[..., :kept, :].sum(-1), 1.0, atol=1e-5)
        assert float(abs(p[..., kept:, :]).max()) == 0.0 and float(abs(p[..., kept:]).max()) == 0.0
    maps = word_maps(rec)
    assert maps.dims == ("word", "frame", "y", "x") and list(maps.word.values) == ["a", "red", "circle", "on", "the", "left"]
    assert (maps.sizes["frame"], maps.sizes["y"], maps.sizes["x"]) == (3, 2, 2)
    # an intervention on one guidance branch reaches that branch's row only, though each row is its own kernel call
    with wb.record(model, ["latent.pred"], steps=0) as clean:
        model.generate(prompt, steps=2, guidance_scale=4.0)
    with wb.record(model, ["latent.pred"], steps=0, interventions=[wb.scale("transformer_blocks.0.attn1.k.text", 0.0,
                                                                           branch="cond")]) as edited:
        model.generate(prompt, steps=2, guidance_scale=4.0)
    before, after = clean["latent.pred"], edited["latent.pred"]
    np.testing.assert_array_equal(after.sel(branch="uncond").values, before.sel(branch="uncond").values)
    assert not np.array_equal(after.sel(branch="cond").values, before.sel(branch="cond").values)
    assert hook_count(model.denoiser) == 0
