"""The hook engine's invariants (design.md), on real diffusers classes built tiny in-process."""

import copy

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.capture import all_sites
from workbench.models.tiny import FAMILIES, example_inputs, tiny_denoiser

from conftest import denoiser_forward as forward
from conftest import hook_count


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    return request.param, tiny_denoiser(request.param), example_inputs(request.param, batch_size=2)


def test_recording_every_site_changes_nothing(family_model):
    family, model, inputs = family_model
    reference = forward(model, inputs)
    sites = [s.name for s in all_sites(model) if s.name != "latent.x0"]  # x0 needs a scheduler
    with wb.record(model, sites) as rec:
        recorded = forward(model, inputs)
    assert torch.equal(reference, recorded), f"{family}: recording changed the output"
    assert set(rec) == set(sites)
    assert hook_count(model) == 0


def test_attention_probabilities_are_exact(family_model):
    family, model, inputs = family_model
    with wb.record(model, ["**.probs", "**.q*", "**.k*"]) as rec:
        forward(model, inputs)
    full = [name for name in rec if name.endswith(".probs")]
    assert full, family
    for name in full:
        probs = rec[name]
        np.testing.assert_allclose(probs.sum("key"), 1.0, atol=1e-5)
        path = name[: -len(".probs")]
        q = _joined(rec, f"{path}.q")
        k = _joined(rec, f"{path}.k")
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        # Qwen-Image and Sana mask padded text keys
        text_mask = inputs.get("encoder_hidden_states_mask", inputs.get("encoder_attention_mask"))
        text_keys = probs.key_kind.values == "text" if "key_kind" in probs.coords else np.ones(logits.shape[-1], bool)
        if text_mask is not None and text_keys.sum() == text_mask.shape[1]:
            keep = torch.ones(logits.shape[0], logits.shape[-1], dtype=torch.bool)
            keep[:, text_keys] = text_mask.bool()
            logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
        direct = torch.softmax(logits, dim=-1)
        np.testing.assert_allclose(probs.values[:, 0, 0], direct.numpy(), atol=1e-5, err_msg=name)


def _joined(rec, prefix):
    """q or k of a module as one (batch, head, token, dim) tensor, segments in their token order."""
    if prefix in rec:
        return torch.from_numpy(rec[prefix].values[:, 0, 0])
    order = dict.fromkeys(rec[f"{prefix[:-2]}.probs"].query_kind.values.tolist())  # e.g. text, video
    parts = [torch.from_numpy(rec[f"{prefix}.{kind}"].values[:, 0, 0]) for kind in order]
    return torch.cat(parts, dim=-2)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_blocks_from_log_sum_exp_equal_slices_of_the_full_matrix(family):
    model, inputs = tiny_denoiser(family), example_inputs(family, batch_size=2)
    blocks = [f"transformer_blocks.0.attn.probs.{b}" for b in wb.hooks.ATTENTION_BLOCKS]
    with wb.record(model, blocks) as only_blocks:  # no full matrix requested: the lse path
        forward(model, inputs)
    with wb.record(model, ["transformer_blocks.0.attn.probs"]) as whole:
        forward(model, inputs)
    full = whole["transformer_blocks.0.attn.probs"]
    total = 0.0
    for name in blocks:
        q_kind, k_kind = name.rsplit(".", 1)[1].split("->")
        block = only_blocks[name]
        expected = full.isel(query=full.query_kind == q_kind, key=full.key_kind == k_kind)
        np.testing.assert_allclose(block.values, expected.values, atol=1e-6)
        total = total + block.sum("key").values.mean()
    assert abs(total / 2 - 1.0) < 1e-5  # image and text rows each sum to one over both key kinds


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_joint_tokens_split_into_image_and_text_in_the_models_order(family):
    model, inputs = tiny_denoiser(family), example_inputs(family, batch_size=1, text_len=7)
    seen = {}
    attn = model.transformer_blocks[0].attn
    handle = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with wb.record(model, ["transformer_blocks.0.attn.v.*", "transformer_blocks.0.attn.probs"]) as rec:
            forward(model, inputs)
    finally:
        handle.remove()
    heads = attn.heads

    def per_head(x):  # (batch, tokens, heads*dim) -> (batch, heads, tokens, dim)
        return x.unflatten(-1, (heads, -1)).transpose(1, 2).numpy()

    np.testing.assert_allclose(rec["transformer_blocks.0.attn.v.text"].values[:, 0, 0],
                               per_head(attn.add_v_proj(seen["encoder_hidden_states"])), atol=1e-6)
    np.testing.assert_allclose(rec["transformer_blocks.0.attn.v.image"].values[:, 0, 0],
                               per_head(attn.to_v(seen["hidden_states"])), atol=1e-6)
    kinds = list(rec["transformer_blocks.0.attn.probs"].query_kind.values)
    first = "image" if family == "sd3" else "text"
    assert kinds[0] == first and kinds.count("text") == 7


def test_skip_tensors_are_what_the_up_block_consumes():
    model, inputs = tiny_denoiser("unet"), example_inputs("unet", batch_size=1)
    consumed = {}
    handles = []
    for i, block in enumerate(model.up_blocks):
        for j, resnet in enumerate(block.resnets):
            handles.append(resnet.register_forward_pre_hook(
                lambda m, a, i=i, j=j: consumed.__setitem__((i, j), a[0].clone())))
    try:
        with wb.record(model, ["up_blocks.*.skip.*"]) as rec:
            forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    assert len(rec) == len(consumed) >= 4
    for (i, j), resnet_input in consumed.items():
        skip = rec[f"up_blocks.{i}.skip.{j}"].values[:, 0, 0]
        # the resnet sees cat([hidden, skip], channels): the skip is its last channels
        np.testing.assert_array_equal(resnet_input[:, -skip.shape[1]:].numpy(), skip)


def test_hooks_removed_and_model_pristine_after_an_exception():
    model, inputs = tiny_denoiser("sd3"), example_inputs("sd3")
    pristine = copy.deepcopy(model)

    class Boom(wb.Intervention):
        def replacement(self, x, ctx):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with wb.record(model, ["**.probs", "transformer_blocks.*.out.*"],
                       interventions=[Boom("transformer_blocks.1.attn.q.image")]):
            forward(model, inputs)
    assert hook_count(model) == 0
    assert torch._C._get_torch_function_mode_stack_at(0) is None if torch._C._len_torch_function_stack() else True
    assert torch.equal(forward(model, inputs), forward(pristine, inputs))


def test_patching_a_run_with_its_own_cache_reproduces_it(family_model):
    """Every site but the output itself (latent.pred, which would make equality trivial) is
    patched into a run damaged upstream (every q scaled by 3, every attention module's output
    zeroed): the patches must undo the damage exactly."""
    family, model, inputs = family_model
    reference = forward(model, inputs)
    sites = [s.name for s in all_sites(model) if s.name not in ("latent.x0", "latent.pred")]
    with wb.record(model, sites) as cache:
        forward(model, inputs)
    # attention modules that hold sites (Mochi's caption pool into the timestep embedding has a to_q, and no site)
    with_sites = {s.module for s in all_sites(model)}
    attention = [m for path, m in model.named_modules()
                 if path in with_sites and hasattr(m, "to_q") and isinstance(m.to_q, torch.nn.Linear)]
    damage = [m.to_q.register_forward_hook(lambda _m, _a, out: out * 3) for m in attention]
    damage += [m.register_forward_hook(lambda _m, _a, out: tuple(None if o is None else o * 0 for o in out)
                                       if isinstance(out, tuple) else out * 0) for m in attention]
    try:
        assert not torch.equal(forward(model, inputs), reference), f"{family}: the damage changed nothing"
        with wb.intervene(model, [wb.patch(name, cache) for name in sites]):
            patched = forward(model, inputs)
    finally:
        for handle in damage:
            handle.remove()
    assert torch.equal(reference, patched), f"{family}: patching every site did not undo upstream damage"


def test_interventions_change_only_what_they_select():
    model = tiny_denoiser("sd3")
    a, b = example_inputs("sd3", seed=0), example_inputs("sd3", seed=1)
    site = "transformer_blocks.0.attn.k.text"
    with wb.record(model, [site]) as cache_b:
        forward(model, b)
    baseline = forward(model, a)
    with wb.record(model, [site], interventions=[wb.patch(site, cache_b, heads=[1])]) as rec:
        patched = forward(model, a)
    k = rec[site].values[0, 0, 0]
    assert np.array_equal(k[1], cache_b[site].values[0, 0, 0, 1])  # head 1 replaced
    assert not np.array_equal(k[0], cache_b[site].values[0, 0, 0, 0])  # head 0 kept
    assert not torch.equal(patched, baseline)
    with wb.intervene(model, [wb.scale(site, 1.0), wb.steer("transformer_blocks.0.out.image", torch.zeros(32))]):
        assert torch.equal(forward(model, a), baseline)
    with wb.intervene(model, [wb.ablate("transformer_blocks.0.out.image")]):
        assert not torch.equal(forward(model, a), baseline)


def test_patch_with_wrong_shape_names_both_shapes():
    model = tiny_denoiser("sd3")
    site = "transformer_blocks.0.out.text"
    with wb.record(model, [site]) as short:
        forward(model, example_inputs("sd3", text_len=5))
    with pytest.raises(ValueError, match=r"shape \(1, 5, 32\).*shape \(1, 8, 32\)"):
        with wb.intervene(model, [wb.patch(site, short)]):
            forward(model, example_inputs("sd3", text_len=8))
    assert hook_count(model) == 0


def test_bad_site_names_and_architectures():
    model = tiny_denoiser("sd3")
    with pytest.raises(KeyError, match="nearest valid sites: transformer_blocks.0.attn.probs"):
        wb.record(model, ["transformer_blocks.0.atn.probs"])
    with pytest.raises(KeyError, match="matches no site"):
        wb.record(model, ["down_blocks.*"])
    with pytest.raises(TypeError, match="unsupported architecture Linear.*SD3Transformer2DModel"):
        wb.record(torch.nn.Linear(2, 2), ["x"])
    with pytest.raises(TypeError, match="steps must be"):
        wb.record(model, ["latent.in"], steps="all")


def test_capture_time_reductions_and_dtype():
    model, inputs = tiny_denoiser("sd3"), example_inputs("sd3")
    site = "transformer_blocks.0.attn.probs.image->text"
    with wb.record(model, [site]) as full:
        forward(model, inputs)
    with wb.record(model, [site], reduce=("head",), dtype=torch.float16) as small:
        forward(model, inputs)
    reduced = small[site]
    assert "head" not in reduced.dims and reduced.dtype == np.float16
    assert reduced.attrs["reduce"] == "head:mean"
    np.testing.assert_allclose(reduced.values, full[site].mean("head").values, atol=1e-3)
    with pytest.raises(ValueError, match="without reductions"):
        small.raw(site, 0)


def test_tokens_of_image_axes_carry_their_grid_position():
    model, inputs = tiny_denoiser("sd3"), example_inputs("sd3")
    with wb.record(model, ["transformer_blocks.0.out.image"]) as rec:
        forward(model, inputs)
    tokens = rec["transformer_blocks.0.out.image"]
    side = model.config.sample_size // model.config.patch_size
    assert tokens.sizes["token"] == side * side
    assert (tokens.token_y.values == np.repeat(np.arange(side), side)).all()
    assert (tokens.token_x.values == np.tile(np.arange(side), side)).all()


def test_calls_of_one_step_must_stack_and_other_steps_are_not_compared():
    """Recording.add compares a capture only with the other calls of its own step (guidance run as
    separate calls are stacked on their rows); other steps, and a call seen again, are not refused."""
    from workbench.capture.recording import CallInfo, Recording
    from workbench.capture.resolve import resolve

    site = resolve(tiny_denoiser("sd3"), "transformer_blocks.0.out.text")[0]
    rec = Recording(sites={site.name: site})
    rec.add(site, CallInfo(0, 0, 1.0, ["uncond"]), torch.zeros(1, 4, 8))
    rec.add(site, CallInfo(0, 1, 1.0, ["cond"]), torch.zeros(1, 4, 8))
    rec.add(site, CallInfo(1, 0, 0.5, ["uncond"]), torch.zeros(1, 6, 8))  # another step: not compared
    rec.add(site, CallInfo(1, 0, 0.5, ["uncond"]), torch.zeros(1, 5, 8))  # the same call again: replaced
    assert rec.steps == [0, 1] and rec.kept(site.name, 1).shape == (1, 5, 8)
    assert rec.nbytes() == 4 * (4 * 8 * 2 + 5 * 8)
    with pytest.raises(ValueError, match=r"call 1 of step 1 gives it shape \(6, 8\) but call 0 gave \(5, 8\)"):
        rec.add(site, CallInfo(1, 1, 0.5, ["cond"]), torch.zeros(1, 6, 8))
