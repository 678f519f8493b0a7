"""Invariants checked against what the recorder did not capture, and a check that the checks bite.

* ``probs @ v`` equals the attention module's own output, read by plain torch hooks (not the
  recorder) on the module and its value projections;
* ``latent.x0`` equals its formula per scheduler (flow matching, DDIM, DDPM, Euler);
* recording only the image<->text blocks (the fused kernel's log-sum-exp path) leaves outputs
  bitwise identical;
* fault injection: each deliberate fault (scaled q, dropped hook, shifted step index, swapped
  guidance branches) must make the invariant check written for it fail, while the same check
  passes on the undamaged run.
"""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

import workbench as wb
from workbench.capture import all_sites
from workbench.capture.firing import SitesNotFired
from workbench.models.tiny import example_inputs, tiny_denoiser

from conftest import hook_count

# unet2d's attention works on 4-D feature maps with a group norm in front; its probs are checked
# against softmax(qk^T) in test_capture, not here.
PROBS_V_FAMILIES = ("sd3", "sd35", "flux", "unet", "dit", "pixart")


def forward(model, inputs):
    return model(**copy.copy(inputs), return_dict=False)[0]


# -- probs @ v against the module's own output -----------------------------------------------------
def _whole_probs_sites(model) -> dict[str, str]:
    """{attention module path: its whole-matrix probs site}."""
    return {s.module: s.name for s in all_sites(model)
            if getattr(s.tap, "role", None) == "probs" and s.tap.block is None}


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


@pytest.mark.parametrize("family", PROBS_V_FAMILIES)
def test_probs_times_v_is_the_attention_modules_output(family):
    model = tiny_denoiser(family)
    inputs = example_inputs(family, batch_size=2)
    sites = _whole_probs_sites(model)
    seen, handles = {}, []
    for path in sites:
        module = model.get_submodule(path)

        def keep(name):
            return lambda _m, args, kwargs, out: seen.__setitem__(name, (args, kwargs, out))

        handles.append(module.register_forward_hook(keep(path), with_kwargs=True))
        for proj in ("to_v", "add_v_proj"):
            if getattr(module, proj, None) is not None:
                handles.append(getattr(module, proj).register_forward_hook(keep(f"{path}:{proj}"), with_kwargs=True))
    try:
        with wb.record(model, list(sites.values())) as rec:
            forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    assert sites, family
    for path, site in sites.items():
        module = model.get_submodule(path)
        probs = rec[site]
        p = torch.from_numpy(probs.values[:, 0, 0]).double()  # (batch, head, query, key)
        key_kinds = list(dict.fromkeys(probs.key_kind.values.tolist()))
        if getattr(module, "add_v_proj", None) is not None:  # joint attention: image values from to_v
            parts = {"image": seen[f"{path}:to_v"][2], "text": seen[f"{path}:add_v_proj"][2]}
            v = torch.cat([parts[kind] for kind in key_kinds], dim=1)
        else:
            v = seen[f"{path}:to_v"][2]
        v = _heads(v.double(), module.heads)
        mixed = (p @ v).transpose(1, 2).reshape(p.shape[0], p.shape[2], -1)  # heads merged, query order
        query_kinds = probs.query_kind.values.tolist()
        out = seen[path][2]
        outputs = list(out) if isinstance(out, tuple) else [out]
        if len(outputs) == 2 and len(set(query_kinds)) == 2:  # joint: (image, text) outputs
            rows = {kind: [i for i, k in enumerate(query_kinds) if k == kind] for kind in ("image", "text")}
            expected = [_project(module, mixed[:, rows["image"]], "to_out"),
                        _project(module, mixed[:, rows["text"]], "to_add_out")]
        else:
            hidden = seen[path][1].get("hidden_states", seen[path][0][0] if seen[path][0] else None)
            expected = [_finish(module, _project(module, mixed, "to_out"), hidden)]
        for got, want in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(got.double().numpy(), want.detach().numpy(), rtol=1e-4, atol=2e-5,
                                       err_msg=f"{family} {path}")


def _project(module, x, name):
    proj = getattr(module, name, None)
    if proj is None or (name == "to_add_out" and getattr(module, "context_pre_only", False)):
        return x
    layers = proj if isinstance(proj, torch.nn.ModuleList) else [proj]
    for layer in layers:
        x = layer.double()(x) if isinstance(layer, torch.nn.Linear) else layer(x)
        if isinstance(layer, torch.nn.Linear):
            layer.float()
    return x


def _finish(module, x, hidden):
    if getattr(module, "residual_connection", False):
        x = x + hidden.double()
    return x / getattr(module, "rescale_output_factor", 1.0)


# -- x0 against its formula, per scheduler -------------------------------------------------------
def _guided(pred, scale, k):
    u, c = (torch.from_numpy(pred.sel(branch=b).isel(step=k).values).double() for b in ("uncond", "cond"))
    return u + scale * (c - u)


@pytest.mark.parametrize("scheduler", ["flow-matching", "ddim", "ddpm", "euler"])
def test_x0_follows_its_formula_per_scheduler(scheduler):
    model = wb.load("tiny-sd3" if scheduler == "flow-matching" else "tiny-sd")
    if scheduler in ("ddpm", "euler"):  # swap the scheduler on this instance only
        cls = DDPMScheduler if scheduler == "ddpm" else EulerDiscreteScheduler
        model.scheduler = model.pipeline.scheduler = cls.from_config(model.scheduler.config)
    scale, steps = 3.0, 3
    with wb.record(model, ["latent.in", "latent.pred", "latent.x0"]) as rec:
        model.generate(["a red circle on the left"], steps=steps, guidance_scale=scale)
    sched = model.scheduler
    assert type(sched).__name__.lower().startswith(
        {"flow-matching": "flowmatch", "ddim": "ddim", "ddpm": "ddpm", "euler": "euler"}[scheduler])
    alphas = getattr(sched, "alphas_cumprod", None)
    for k in range(steps):
        x = torch.from_numpy(rec["latent.in"].sel(branch="cond").isel(step=k).values).double()
        eps = _guided(rec["latent.pred"], scale, k)
        if scheduler == "flow-matching":
            sigma = float(sched.sigmas[k])
            expected = x - sigma * eps
        elif scheduler == "euler":  # the denoiser sees x / sqrt(sigma^2 + 1)
            sigma = float(sched.sigmas[k])
            expected = x * (sigma**2 + 1) ** 0.5 - sigma * eps
        else:
            a = float(alphas[int(sched.timesteps[k])])
            expected = (x - (1 - a) ** 0.5 * eps) / a**0.5
        actual = rec["latent.x0"].sel(branch="guided").isel(step=k).values
        np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-4, atol=1e-4, err_msg=f"{scheduler} step {k}")


# -- the log-sum-exp path ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_recording_image_text_blocks_leaves_outputs_bitwise_identical(family):
    model = tiny_denoiser(family)
    inputs = example_inputs(family, batch_size=2)
    reference = forward(model, inputs)
    blocks = [s.name for s in all_sites(model) if getattr(s.tap, "block", None) in ("image->text", "text->image")]
    assert blocks
    with wb.record(model, blocks) as rec:
        recorded = forward(model, inputs)
    assert torch.equal(reference, recorded)
    assert hook_count(model) == 0
    # and the slices are the probabilities: the same blocks of the whole matrix
    name = blocks[0]
    whole = name.rsplit(".", 1)[0]
    with wb.record(model, [whole]) as full:
        forward(model, inputs)
    matrix = full[whole]
    q, k = name.rsplit(".", 1)[1].split("->")
    part = matrix.isel(query=(matrix.query_kind == q).values, key=(matrix.key_kind == k).values)
    np.testing.assert_allclose(rec[name].values, part.values, rtol=1e-5, atol=1e-6)


# -- fault injection: every check must catch the fault made for it -------------------------------------
def check_probs_exact(rec):
    """Recorded probabilities equal softmax(q k^T / sqrt(d)) of the recorded q and k."""
    for name in [n for n in rec if n.endswith(".probs")]:
        path = name[: -len(".probs")]
        kinds = list(dict.fromkeys(rec[name].query_kind.values.tolist()))
        q = torch.cat([torch.from_numpy(rec[f"{path}.q.{kind}"].values[:, 0, 0]) for kind in kinds], dim=-2)
        k = torch.cat([torch.from_numpy(rec[f"{path}.k.{kind}"].values[:, 0, 0]) for kind in kinds], dim=-2)
        direct = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        np.testing.assert_allclose(rec[name].values[:, 0, 0], direct.numpy(), atol=1e-5, err_msg=name)


def damage(model):
    """Upstream damage a patched run must undo: every q scaled by 3, the last block's image
    output shifted. Returns the hook handles."""
    handles = [m.to_q.register_forward_hook(lambda _m, _a, out: out * 3) for m in model.modules()
               if hasattr(m, "to_q") and isinstance(m.to_q, torch.nn.Linear)]
    last = model.transformer_blocks[-1]

    def shift(_m, _a, out):
        return (out[0], out[1] + 1.0) if isinstance(out, tuple) else out + 1.0

    handles.append(last.register_forward_hook(shift))
    return handles


def check_patch_reproduces(model, inputs, reference, cache, sites, fault=None):
    """A damaged run with every cached site patched in (latent.pred excepted) gives the clean output."""
    handles = damage(model)
    try:
        with wb.intervene(model, [wb.patch(name, cache) for name in sites]):
            if fault == "dropped hook":  # the engine loses the hook that patches the last block's outputs
                last = model.transformer_blocks[-1]
                ours = {h.id for h in handles}
                dropped = [key for key in last._forward_hooks if key not in ours]
                assert dropped, "no workbench hook on the last block to drop"
                for key in dropped:
                    del last._forward_hooks[key]
            patched = forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(patched, reference), "patching every site did not undo the damage"


def check_scheduler_steps(rec, scheduler, scale):
    """latent.in at step k+1 is the scheduler step from step k with the guided prediction."""
    latent_in, pred = rec["latent.in"], rec["latent.pred"]
    scheduler.set_timesteps(latent_in.sizes["step"])
    for k in range(latent_in.sizes["step"] - 1):
        x = torch.from_numpy(latent_in.sel(branch="cond").isel(step=k).values)
        u, c = (torch.from_numpy(pred.sel(branch=b).isel(step=k).values) for b in ("uncond", "cond"))
        scheduler._step_index = k
        expected = scheduler.step(u + scale * (c - u), scheduler.timesteps[k], x, return_dict=False)[0]
        np.testing.assert_allclose(latent_in.sel(branch="cond").isel(step=k + 1).values, expected.numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def sd3_denoiser_run():
    model = tiny_denoiser("sd3")
    inputs = example_inputs("sd3", batch_size=2)
    reference = forward(model, inputs)
    sites = [s.name for s in all_sites(model) if not s.name.startswith("latent.")]
    with wb.record(model, sites) as cache:
        forward(model, inputs)
    return model, inputs, reference, cache, sites


@pytest.fixture(scope="module")
def sd3_pipeline_run():
    model = wb.load("tiny-sd3")
    scale = 3.0
    with wb.record(model, ["latent.in", "latent.pred"]) as rec:
        model.generate(["a red circle on the left"], steps=4, guidance_scale=scale)
    return model, {name: rec[name] for name in rec}, scale


def _scale_q(rec):
    return {n: (v * 3 if ".q." in n else v) for n, v in rec.items()}


def _shift_steps(rec):  # the engine files each prediction one step late
    return {n: (v.roll(step=1) if n == "latent.pred" else v) for n, v in rec.items()}


def _swap_branches(rec):
    def swap(v):
        labels = {"cond": "uncond", "uncond": "cond"}
        return v.assign_coords(branch=[labels.get(str(b), str(b)) for b in v.branch.values])
    return {n: swap(v) for n, v in rec.items()}


def test_invariant_checks_pass_on_undamaged_runs(sd3_denoiser_run, sd3_pipeline_run):
    model, inputs, reference, cache, sites = sd3_denoiser_run
    check_probs_exact({n: cache[n] for n in cache})
    check_patch_reproduces(model, inputs, reference, cache, sites)
    pipe, rec, scale = sd3_pipeline_run
    check_scheduler_steps(rec, pipe.scheduler, scale)
    # and the damage is real: unpatched, the damaged run differs
    handles = damage(model)
    try:
        assert not torch.equal(forward(model, inputs), reference)
    finally:
        for h in handles:
            h.remove()
    assert hook_count(model) == 0


@pytest.mark.parametrize("fault", ["scaled q", "dropped hook", "shifted step index", "swapped branches"])
def test_each_fault_makes_its_invariant_check_fail(fault, sd3_denoiser_run, sd3_pipeline_run):
    model, inputs, reference, cache, sites = sd3_denoiser_run
    pipe, rec, scale = sd3_pipeline_run
    # a dropped hook may also be caught by the engine itself: every requested site must fire
    caught = (AssertionError, SitesNotFired) if fault == "dropped hook" else AssertionError
    with pytest.raises(caught):
        if fault == "scaled q":
            check_probs_exact(_scale_q({n: cache[n] for n in cache}))
        elif fault == "dropped hook":
            check_patch_reproduces(model, inputs, reference, cache, sites, fault=fault)
        elif fault == "shifted step index":
            check_scheduler_steps(_shift_steps(rec), pipe.scheduler, scale)
        else:
            check_scheduler_steps(_swap_branches(rec), pipe.scheduler, scale)
    assert hook_count(model) == 0
