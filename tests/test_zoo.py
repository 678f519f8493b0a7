"""The 2025-26 image families (FLUX.2 klein, Qwen-Image, Chroma, Sana, HunyuanDiT, CogView4, Lumina 2,
Z-Image), built tiny from their real
diffusers classes, recorded and intervened.

Per family: attention rows sum to one, and keys masked out by the family's text mask (Qwen-Image,
Sana) get exactly nothing; probabilities times the values reproduce the attention kernel's own
output, both read by a spy on ``scaled_dot_product_attention`` that is not the recorder; text
enters all but HunyuanDiT only through attention keys/values, so patching a source prompt's text K/V
into a run with another prompt reproduces the source run bitwise. Sana's linear self-attention is
refused by name. Chroma's and CogView4's guidance, run as two calls per step, is recorded with
``branch_calls``; CogView4's left-padded GLM tokens label its text keys and give word maps.
Lumina 2's joint blocks hold each call's valid text only: a batch of ragged prompts is refused, and
so is stacking guidance calls at a site whose length follows the prompt. Z-Image's batch-padded caption
keys get nothing, and its pipeline's batched guidance labels its rows.
(Recording every site leaves each output bitwise identical: ``test_capture`` runs that on every
family of ``workbench.models.tiny.FAMILIES``, these included.)
"""

from fnmatch import fnmatchcase

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import workbench as wb
from workbench.capture import all_sites
from workbench.capture.resolve import UnrecordableSite
from workbench.models.tiny import default_size, example_call_kwargs, tiny_pipeline

from conftest import build_tiny_families, denoiser_forward, hook_count

FAMILIES = ("flux2", "qwenimage", "chroma", "sana", "hunyuandit", "cogview4", "lumina2", "zimage")
# HunyuanDiT's text also enters through a pooled mT5 embedding added to the timestep embedding.
KV_ONLY = ("flux2", "qwenimage", "chroma", "sana", "cogview4", "lumina2", "zimage")
MASKED = {"qwenimage": "encoder_hidden_states_mask", "sana": "encoder_attention_mask"}  # text key masks
TEXT_LEN = 8


pytestmark = pytest.mark.usefixtures("one_thread")
forward = denoiser_forward


@pytest.fixture(scope="module")
def built():
    """{family: (model, inputs, reference output)}, each model built once for the module."""
    return build_tiny_families(FAMILIES, TEXT_LEN)


def whole_probs(model):
    return [s.name for s in all_sites(model) if getattr(s.tap, "role", None) == "probs" and s.tap.block is None]


def site_map_sites(model, patterns):
    return [s.name for s in all_sites(model) if any(fnmatchcase(s.name, p) for p in patterns)]


class _KernelSpy(TorchFunctionMode):
    """Keeps (value, output) of every scaled_dot_product_attention call made while active."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            self.calls.append((kwargs.get("value", args[2] if len(args) > 2 else None), out))
        return out


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_sum_to_one_and_masked_text_keys_get_nothing(built, family):
    model, inputs, reference = built[family]
    sites = whole_probs(model)
    assert sites, family
    with wb.record(model, sites) as rec:
        assert torch.equal(forward(model, inputs), reference)
    for name in sites:
        probs = rec[name]
        np.testing.assert_allclose(probs.sum("key").values, 1.0, atol=1e-5, err_msg=name)
        if family in MASKED:
            mask = inputs[MASKED[family]].bool()
            text = probs.isel(key=probs.key_kind.values == "text")
            assert (~mask[1]).sum() == 2 and mask[0].all()  # sample 1 pads its last two text tokens
            assert float(abs(text.isel(sample=1).values[..., (~mask[1]).numpy()]).max()) == 0.0, name
            assert float(text.isel(sample=0).values.min()) > 0.0, name


@pytest.mark.parametrize("family", FAMILIES)
def test_probs_times_v_is_the_kernels_output(built, family):
    model, inputs, _ = built[family]
    sites = whole_probs(model)
    spies, handles = {}, []
    for name in sites:
        path = name.rsplit(".", 1)[0]
        spy = spies[path] = _KernelSpy()
        module = model.get_submodule(path)
        handles += [module.register_forward_pre_hook(lambda _m, _a, spy=spy: None if spy.__enter__() else None),
                    module.register_forward_hook(lambda _m, _a, _o, spy=spy: spy.__exit__(None, None, None),
                                                 always_call=True)]
    try:
        forward(model, inputs)  # unobserved by the recorder: the spy alone
    finally:
        for h in handles:
            h.remove()
    with wb.record(model, sites) as rec:
        forward(model, inputs)
    for name in sites:
        (value, out), = spies[name.rsplit(".", 1)[0]].calls
        p = torch.from_numpy(rec[name].values[:, 0, 0]).double()  # (batch, head, query, key)
        if value.shape[1] == p.shape[-1]:  # diffusers' dispatch: (batch, token, head, dim) -> SDPA sees it permuted
            value, out = value.transpose(1, 2), out.transpose(1, 2)
        np.testing.assert_allclose((p @ value.double()).numpy(), out.double().numpy(), rtol=1e-4, atol=2e-5,
                                   err_msg=name)


@pytest.mark.parametrize("family", KV_ONLY)
def test_patching_text_keys_and_values_is_the_prompt_swap(built, family):
    model, inputs, reference = built[family]
    site_map = wb.hooks.site_map_for(model)
    kv = [s.name for s in all_sites(model) if any(fnmatchcase(s.name, p) for p in site_map.text_keys + site_map.text_values)]
    assert len(kv) == 2 * len(site_map_sites(model, site_map.text_attention)), family  # a text k and v per text attention
    text = "cap_feats" if family == "zimage" else "encoder_hidden_states"  # Z-Image: a list of per-sample captions
    other = dict(inputs, **{text: [torch.randn_like(c) for c in inputs[text]] if family == "zimage"
                            else torch.randn_like(inputs[text])})
    with wb.record(model, kv) as source:
        forward(model, inputs)
    swapped = forward(model, other)
    assert (swapped - reference).abs().max() > 1e-4  # the prompt matters
    with wb.intervene(model, [wb.patch(name, source) for name in kv]):
        patched = forward(model, other)
    assert torch.equal(patched, reference)
    assert hook_count(model) == 0


def test_sana_linear_attention_is_refused_by_name(built):
    model, inputs, _ = built["sana"]
    for asked in ("transformer_blocks.0.attn1.probs", "*.attn1.k", "**.attn1.*"):
        if asked == "**.attn1.*":  # matches the recordable attn1.out too: that one records
            with wb.record(model, asked) as rec:
                forward(model, inputs)
            assert list(rec) == ["transformer_blocks.0.attn1.out", "transformer_blocks.1.attn1.out"]
            continue
        with pytest.raises(UnrecordableSite, match=r"sana: .*linear.*never forms a softmax matrix"):
            wb.record(model, asked)
    assert hook_count(model) == 0


def test_chroma_guidance_calls_are_recorded_as_branches():
    pipe = tiny_pipeline("chroma")
    kwargs = example_call_kwargs("chroma", guidance_scale=4.0)
    with wb.record(pipe, ["transformer_blocks.0.attn.probs.image->text"], branch_calls=("cond", "uncond")) as rec:
        guided = pipe(**kwargs).images
    probs = rec["transformer_blocks.0.attn.probs.image->text"]
    assert list(probs.branch.values) == ["cond", "uncond"] and probs.sizes["step"] == 2
    cond, uncond = (probs.sel(branch=b).values for b in ("cond", "uncond"))
    assert not np.allclose(cond, uncond)  # two different prompts (the prompt and the empty negative)
    np.testing.assert_array_equal(guided, pipe(**example_call_kwargs("chroma", guidance_scale=4.0)).images)


def test_sd3_text_tokens_say_their_encoder_and_word_maps_split_by_it():
    from workbench.attention.maps import word_maps

    model = wb.load("tiny-sd3")
    with wb.record(model, ["transformer_blocks.0.attn.probs.image->text"]) as rec:
        model.generate(["a red circle on the left"], steps=1, guidance_scale=1.0)
    probs = rec["transformer_blocks.0.attn.probs.image->text"]
    clip_len = model.pipeline.tokenizer.model_max_length
    assert list(probs.key_encoder.values) == ["clip"] * clip_len + ["t5"] * (probs.sizes["key"] - clip_len)
    summed, each = word_maps(rec), word_maps(rec, encoder="each")
    assert list(each.encoder.values) == ["clip", "t5", "all"] and list(each.word.values) == list(summed.word.values)
    np.testing.assert_allclose(each.sel(encoder="all").values, summed.values)
    np.testing.assert_allclose(each.sel(encoder="t5").values, word_maps(rec, encoder="t5").values)
    for name in ("clip", "t5"):  # each encoder's word maps are its own tokens' columns, normalised
        np.testing.assert_allclose(each.sel(encoder=name).sum(["y", "x"]).values, 1.0, rtol=1e-5)
    assert not np.allclose(each.sel(encoder="clip").values, each.sel(encoder="t5").values)
    with pytest.raises(ValueError, match="valid are clip, t5"):
        word_maps(rec, encoder="umt5")
    flux = wb.load(tiny_pipeline("chroma"))  # one encoder: no encoder coordinate, and asking is an error
    with wb.record(flux, ["transformer_blocks.0.attn.probs.image->text"]) as one:
        flux.generate(["a red circle"], steps=1, guidance_scale=1.0)
    assert "key_encoder" not in one["transformer_blocks.0.attn.probs.image->text"].coords
    with pytest.raises(ValueError, match="one encoder"):
        word_maps(one, encoder="t5")


def test_cogview4_pipeline_records_guidance_calls_and_word_maps_of_its_left_padded_prompt():
    from workbench.attention.maps import word_maps

    model = wb.load(tiny_pipeline("cogview4"))
    prompt = ["a red circle on the left"]
    reference = model.generate(prompt, steps=2, guidance_scale=4.0)
    site = "transformer_blocks.1.attn1.probs.image->text"
    with wb.record(model, [site, "latent.x0"], branch_calls=("cond", "uncond")) as rec:
        images = model.generate(prompt, steps=2, guidance_scale=4.0)
    np.testing.assert_array_equal(images, reference)
    probs = rec[site]
    assert list(probs.branch.values) == ["cond", "uncond"] and probs.sizes["step"] == 2
    tokens = list(probs.key_token.values[0])
    # the pipeline pads the GLM prompt on the left to a multiple of 16 tokens, after [gMASK] <sop>
    assert len(tokens) == 16 and tokens[-8:] == ["[gMASK]", "<sop>", "a", "Ġred", "Ġcircle", "Ġon", "Ġthe", "Ġleft"]
    assert set(tokens[:-8]) == {model.pipeline.tokenizer.pad_token}
    maps = word_maps(rec)
    assert list(maps.word.values) == ["a", "red", "circle", "on", "the", "left"] and maps.dims == ("word", "y", "x")
    np.testing.assert_allclose(maps.sum(("y", "x")).values, 1.0, rtol=1e-5)
    assert hook_count(model.denoiser) == 0


def test_lumina2_refiner_masks_padded_text_and_joint_blocks_hold_the_valid_text(built):
    model, inputs, reference = built["lumina2"]
    padded = ~inputs["encoder_attention_mask"].bool()  # every sample pads its last two text tokens
    with wb.record(model, ["context_refiner.0.attn.probs", "layers.0.attn.probs"]) as rec:
        assert torch.equal(forward(model, inputs), reference)
    refiner = rec["context_refiner.0.attn.probs"]
    assert refiner.sizes["key"] == TEXT_LEN and padded[:, -2:].all() and not padded[:, :-2].any()
    assert float(abs(refiner.values[..., -2:]).max()) == 0.0 and float(refiner.values[..., :-2].min()) > 0.0
    joint = rec["layers.0.attn.probs"]
    assert list(joint.key_kind.values) == ["text"] * (TEXT_LEN - 2) + ["image"] * 64  # [valid text | image]
    ragged = dict(inputs, encoder_attention_mask=inputs["encoder_attention_mask"].clone())
    ragged["encoder_attention_mask"][1, -3] = 0  # sample 1: one valid text token fewer
    with pytest.raises(ValueError, match=r"lumina2: .*\[6, 5\] valid text tokens.*different offset"):
        with wb.record(model, ["layers.0.attn.probs"]):
            forward(model, ragged)
    assert hook_count(model) == 0


def test_lumina2_pipeline_word_maps_and_guidance_calls():
    from workbench.attention.maps import word_maps

    model = wb.load(tiny_pipeline("lumina2"))
    with wb.record(model, ["noise_refiner.0.attn.probs", "layers.*.attn.probs.image->text"]) as rec:
        model.generate(["a red circle on the left"], steps=1, guidance_scale=1.0)
    maps = word_maps(rec)
    assert {"red", "circle", "left"} <= set(maps.word.values) and maps.sizes == {"word": maps.sizes["word"], "y": 8, "x": 8}
    np.testing.assert_allclose(maps.sum(["y", "x"]).values, 1.0, rtol=1e-5)
    # Guidance runs as a second call whose (empty) prompt gives the joint blocks another text length:
    # sites whose shape follows the prompt are refused as that call comes, image-only sites record.
    with pytest.raises(ValueError, match="layers.0.attn.probs.image->text: denoiser call 1 of step 0"):
        with wb.record(model, ["layers.0.attn.probs.image->text"], branch_calls=("cond", "uncond")):
            model.generate(["a red circle on the left"], steps=1, guidance_scale=4.0)
    assert hook_count(model.denoiser) == 0
    with wb.record(model, ["noise_refiner.0.attn.probs"], branch_calls=("cond", "uncond")) as guided:
        model.generate(["a red circle on the left"], steps=1, guidance_scale=4.0)
    probs = guided["noise_refiner.0.attn.probs"]
    assert list(probs.branch.values) == ["cond", "uncond"]
    np.testing.assert_array_equal(probs.sel(branch="cond").values, rec["noise_refiner.0.attn.probs"].isel(branch=0).values)


def test_zimage_masks_the_batch_padding_of_a_shorter_caption_and_labels_its_latents(built):
    model, inputs, _ = built["zimage"]
    ragged = dict(inputs, cap_feats=[inputs["cap_feats"][0], torch.randn(40, inputs["cap_feats"][0].shape[1])])
    reference = forward(model, ragged)
    with wb.record(model, ["latent.in", "latent.pred", "layers.0.attention.probs", "context_refiner.0.attention.probs"]) as rec:
        assert torch.equal(forward(model, ragged), reference)
    # captions are padded to multiples of 32 (8 -> 32, 40 -> 64); the batch to the longest: sample 0's
    # last 32 caption keys are batch padding, masked out in the caption refiner and the joint blocks
    joint = rec["layers.0.attention.probs"]
    assert list(joint.key_kind.values) == ["image"] * 64 + ["text"] * 64  # [image | caption]
    for probs, padding in ((joint, slice(96, 128)), (rec["context_refiner.0.attention.probs"], slice(32, 64))):
        short = probs.isel(sample=0).values
        assert float(abs(short[..., padding]).max()) == 0.0 and float(short[..., : padding.start].min()) > 0.0
        assert float(probs.isel(sample=1).values.min()) > 0.0
    np.testing.assert_array_equal(rec["latent.in"].values[:, 0, 0], torch.stack(ragged["x"])[:, :, 0].numpy())
    np.testing.assert_array_equal(rec["latent.pred"].values[:, 0, 0], reference[:, :, 0].numpy())
    with wb.intervene(model, [wb.scale("latent.pred", 0.0)]):  # an intervention on a latent goes back as a list
        assert not forward(model, ragged).any()
    assert hook_count(model) == 0


def test_zimage_pipeline_guidance_rows_and_word_maps():
    from workbench.attention.maps import word_maps

    model = wb.load(tiny_pipeline("zimage"))
    height, width = default_size("zimage")  # the pipeline's default is 1024 px
    run = dict(steps=2, guidance_scale=3.0, height=height, width=width, max_sequence_length=64)  # guided above 0
    with wb.record(model, ["layers.*.attention.probs.image->text", "latent.x0"]) as rec:
        guided = model.generate(["a red circle on the left"], **run)
    np.testing.assert_array_equal(guided, model.generate(["a red circle on the left"], **run))
    probs = rec["layers.0.attention.probs.image->text"]
    assert list(probs.branch.values) == ["cond", "uncond"] and probs.sizes["key"] == 32
    tokens = list(probs.key_token.values[0])
    # the chat template with thinking on (no think block), then Z-Image's pad tokens up to 32
    assert tokens[0] == "<|im_start|>" and "Ġcircle" in tokens and "<think>" not in tokens
    assert tokens[-1] == model.pipeline.tokenizer.pad_token
    assert rec["latent.x0"].dims[-3:] == ("channel", "y", "x")
    maps = word_maps(rec)
    assert list(maps.word.values) == ["user", "a", "red", "circle", "on", "the", "left", "assistant"]  # the template's roles too
    np.testing.assert_allclose(maps.sum(("y", "x")).values, 1.0, rtol=1e-5)
    assert hook_count(model.denoiser) == 0


def test_time_running_up_counts_steps_and_refuses_loops_on_scheduler_time(built):
    """Lumina 2 and Z-Image get 1 - t / 1000 (rising over a run): a cache still counts steps within a
    run and starts over when the time falls back; loops that feed the scheduler's timesteps raw refuse."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = wb.load(tiny_pipeline("zimage"))
    with wb.reuse(model, ["layers.0.out"], every=2) as cache:
        for _ in range(2):  # two runs that nobody announces
            model.pipeline(**dict(example_call_kwargs("zimage"), num_inference_steps=3))
    assert cache.stats.key_steps == [0, 2, 0, 2] and cache.stats.reused["layers.0"] == 2
    for family in ("lumina2", "zimage"):
        denoiser, inputs, _ = built[family]
        bare = wb.Model(denoiser=denoiser, scheduler=FlowMatchEulerDiscreteScheduler())
        with pytest.raises(ValueError, match=rf"{family}: its pipeline hands the denoiser the time reversed"):
            wb.denoise(bare, torch.zeros(1, 16, 16, 16), steps=2)
        with pytest.raises(ValueError, match=rf"{family}: .*Model.predict feeds it the scheduler's timesteps"):
            bare.predict(torch.zeros(1, 16, 16, 16), 500.0)
