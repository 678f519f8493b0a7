"""Runs through the real diffusers pipelines, the bare loop, and local checkpoints."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.models.tiny import tiny_denoiser

from conftest import hook_count

PIPELINE_FAMILIES = ["sd3", "flux", "sd", "pixart", "dit", "sdxl", "auraflow"]


@pytest.fixture(scope="module")
def sd3():
    return wb.load("tiny-sd3")


@pytest.mark.parametrize("family", PIPELINE_FAMILIES)
def test_pipelines_record_without_changing_images(family):
    model = wb.load(f"tiny-{family}")
    prompt = "red circle" if family == "dit" else "a red circle on the left"
    reference = model.generate([prompt], steps=2, guidance_scale=2.0)
    with wb.record(model, ["latent.*", "**.probs"]) as rec:
        recorded = model.generate([prompt], steps=2, guidance_scale=2.0)
    assert np.array_equal(reference, recorded)
    assert rec.steps == [0, 1]
    probs = [name for name in rec if name.endswith(".probs")]
    assert probs
    branches = list(rec[probs[0]].branch.values)
    assert branches == (["cond"] if family == "flux" else sorted(branches, key=["uncond", "cond", "guided"].index)
                        if family != "dit" else ["cond", "uncond"])
    # DiT steps its scheduler on the doubled batch, so its x0 exists per branch (both guided)
    assert list(rec["latent.x0"].branch.values) == (["cond", "uncond"] if family == "dit" else ["guided"])
    assert hook_count(model.denoiser) == 0


def test_latent_at_next_step_is_the_scheduler_step_of_this_one(sd3):
    scale = 3.0
    with wb.record(sd3, ["latent.in", "latent.pred", "latent.x0"]) as rec:
        sd3.generate(["a red circle on the left"], steps=4, guidance_scale=scale)
    latent_in, pred = rec["latent.in"], rec["latent.pred"]
    scheduler = sd3.scheduler
    scheduler.set_timesteps(4)
    for k in range(3):
        x = torch.from_numpy(latent_in.sel(branch="cond").isel(step=k).values)
        u, c = (torch.from_numpy(pred.sel(branch=b).isel(step=k).values) for b in ("uncond", "cond"))
        guided = u + scale * (c - u)
        scheduler._step_index = k
        expected = scheduler.step(guided, scheduler.timesteps[k], x, return_dict=False)[0]
        actual = latent_in.sel(branch="cond").isel(step=k + 1).values
        np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-6, atol=1e-6)
        # the guided x0 estimate follows from the same step: x0 = x - sigma * v (flow matching)
        x0 = rec["latent.x0"].sel(branch="guided").isel(step=k).values
        np.testing.assert_allclose(x0, (x - float(scheduler.sigmas[k]) * guided).numpy(), rtol=1e-5, atol=1e-5)
    # both guidance branches see the same latent
    np.testing.assert_array_equal(latent_in.sel(branch="uncond").values, latent_in.sel(branch="cond").values)


def test_guidance_branches_are_labelled_right(sd3):
    prompt = "a blue square at the top"
    with wb.record(sd3, ["latent.pred"], steps=[0]) as guided:
        sd3.generate([prompt], steps=3, guidance_scale=4.0, seed=1)
    with wb.record(sd3, ["latent.pred"], steps=[0]) as cond_only:
        sd3.generate([prompt], steps=3, guidance_scale=1.0, seed=1)
    with wb.record(sd3, ["latent.pred"], steps=[0]) as empty_only:
        sd3.generate([""], steps=3, guidance_scale=1.0, seed=1)
    pred = guided["latent.pred"]
    np.testing.assert_allclose(pred.sel(branch="cond").values, cond_only["latent.pred"].sel(branch="cond").values, atol=1e-5)
    np.testing.assert_allclose(pred.sel(branch="uncond").values, empty_only["latent.pred"].sel(branch="cond").values, atol=1e-5)
    assert not np.allclose(pred.sel(branch="cond").values, pred.sel(branch="uncond").values)


def test_steps_by_index_and_by_timestep_and_out_of_range(sd3):
    with wb.record(sd3, ["latent.x0"], steps=[0, 2]) as rec:
        sd3.generate(["a red circle"], steps=3)
    assert rec.steps == [0, 2]
    timestep = rec.timesteps[1]
    with wb.record(sd3, ["latent.x0"], timesteps=[timestep]) as by_value:
        sd3.generate(["a red circle"], steps=3)
    assert by_value.timesteps == [timestep]
    with pytest.raises(IndexError, match=r"steps \[7\] are out of range: this run has 3 steps \(0..2\)"):
        with wb.record(sd3, ["latent.x0"], steps=[1, 7]):
            sd3.generate(["a red circle"], steps=3)
    with pytest.raises(IndexError, match="never occurred"):
        with wb.record(sd3, ["latent.x0"], timesteps=[123.0]):
            sd3.generate(["a red circle"], steps=3)
    assert hook_count(sd3.denoiser) == 0


def test_oversized_capture_is_refused_before_the_first_step(sd3):
    with pytest.raises(wb.CaptureTooLarge, match=r"projected to need .* MiB .* limit of .* MiB; refused before the first step.*reduce="):
        with wb.record(sd3, ["**.probs"], max_bytes=100_000):
            sd3.generate(["a red circle"], steps=10)
    assert hook_count(sd3.denoiser) == 0
    assert "step" not in sd3.scheduler.__dict__


def test_streaming_to_a_store_matches_memory_and_keeps_one_step(sd3, tmp_path):
    sites = ["transformer_blocks.*.attn.probs.image->text", "latent.x0", "transformer_blocks.0.out.image"]
    with wb.record(sd3, sites) as in_memory:
        sd3.generate(["a red circle", "a cyan cross"], steps=3)
    held = []
    store = tmp_path / "run.zarr"
    with wb.record(sd3, sites, store=store) as streamed:
        sd3.denoiser.register_forward_hook(lambda *a: held.append(len(streamed._raw and {k for v in streamed._raw.values() for k in v})))
        sd3.generate(["a red circle", "a cyan cross"], steps=3)
    sd3.denoiser._forward_hooks.clear()
    assert max(held) <= 1  # finished steps left memory
    reopened = wb.open_recording(store)
    for name in in_memory:
        np.testing.assert_array_equal(reopened[name].values, in_memory[name].values)
        assert list(reopened[name].prompt.values) == ["a red circle", "a cyan cross"]


def test_recording_round_trips_through_zarr(sd3, tmp_path):
    with wb.record(sd3, ["transformer_blocks.0.attn.probs", "latent.in"]) as rec:
        sd3.generate(["a red circle"], steps=2)
    rec.save(tmp_path / "rec.zarr")
    back = wb.open_recording(tmp_path / "rec.zarr")
    probs = back["transformer_blocks.0.attn.probs"]
    np.testing.assert_array_equal(probs.values, rec["transformer_blocks.0.attn.probs"].values)
    assert probs.attrs["family"] == "sd3" and "key_token" in probs.coords
    assert sorted(back) == sorted(rec)


def test_save_refuses_to_replace_a_store_unless_asked(sd3, tmp_path):
    with wb.record(sd3, ["latent.in"]) as first:
        sd3.generate(["a red circle"], steps=1)
    with wb.record(sd3, ["latent.x0"]) as second:
        sd3.generate(["a cyan cross"], steps=1)
    store = first.save(tmp_path / "rec.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        second.save(store)
    assert sorted(wb.open_recording(store)) == ["latent.in"]  # the refused save left the store alone
    second.save(store, overwrite=True)
    assert sorted(wb.open_recording(store)) == ["latent.x0"]  # replaced whole: no group of the first survives


def test_local_checkpoint_round_trip_records_the_same(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = tiny_denoiser("sd3")
    model.save_pretrained(tmp_path / "transformer")
    loaded = wb.load(tmp_path / "transformer", scheduler=FlowMatchEulerDiscreteScheduler())
    assert type(loaded.denoiser).__name__ == "SD3Transformer2DModel"
    pipe = wb.load("tiny-sd3").pipeline
    pipe.save_pretrained(tmp_path / "pipe")
    a, b = wb.load(pipe), wb.load(tmp_path / "pipe")
    with wb.record(a, ["transformer_blocks.1.out.image"]) as rec_a:
        img_a = a.generate(["a red circle"], steps=2, height=32, width=32)
    with wb.record(b, ["transformer_blocks.1.out.image"]) as rec_b:
        img_b = b.generate(["a red circle"], steps=2, height=32, width=32)
    assert np.array_equal(img_a, img_b)
    np.testing.assert_array_equal(rec_a["transformer_blocks.1.out.image"].values, rec_b["transformer_blocks.1.out.image"].values)


def test_bare_denoise_loop_records_steps_and_guidance():
    from diffusers import DDIMScheduler

    unet = tiny_denoiser("unet")
    model = wb.load(unet, scheduler=DDIMScheduler())
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    text = torch.randn(2, 6, unet.config.cross_attention_dim, generator=g)
    with wb.record(model, ["latent.*", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.probs"]) as rec:
        wb.denoise(model, latents, steps=3, conditioning={"encoder_hidden_states": text},
                   negative={"encoder_hidden_states": torch.zeros_like(text)}, guidance_scale=2.0)
    probs = rec["down_blocks.0.attentions.0.transformer_blocks.0.attn2.probs"]
    assert list(probs.branch.values) == ["uncond", "cond"]
    assert probs.sizes["step"] == 3 and set(probs.key_kind.values) == {"text"}
    assert rec["latent.x0"].sizes["step"] == 3


def test_unknown_source_lists_what_loads():
    with pytest.raises(ValueError, match="not a reference model"):
        wb.load("no-such-model")


def test_a_run_resumed_from_its_own_latents_reproduces_it_bit_for_bit():
    """Steps [0, k) then [k, n) from the latents entering k equal the full run exactly, and a
    recorder numbers the resumed steps as in the full run (so step selections keep their meaning)."""
    model = wb.load("toy-mmdit")
    prompt = ["a red circle on the left"]
    full = model.generate(prompt, steps=6, seed=3, output="latents")
    prefix = model.generate(prompt, steps=6, seed=3, stop_step=2, output="latents")
    assert not torch.equal(prefix, full)
    with wb.record(model, ["latent.in"]) as rec:
        rest = model.generate(prompt, steps=6, latents=prefix, start_step=2, output="latents")
    assert torch.equal(rest, full)
    assert list(rec["latent.in"].step.values) == [2, 3, 4, 5]
    assert torch.equal(torch.from_numpy(rec["latent.in"].sel(step=2).values[:, 0]), prefix)


def test_partial_runs_refuse_bad_input():
    model = wb.load("toy-unet")
    prompt = ["a red circle on the left"]
    with pytest.raises(ValueError, match="start_step=4, stop_step=2"):
        model.generate(prompt, steps=6, latents=torch.zeros(1, 3, 32, 32), start_step=4, stop_step=2)
    with pytest.raises(ValueError, match="needs the latents entering that step"):
        model.generate(prompt, steps=6, start_step=2)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 32, 32\)"):
        model.generate(prompt, steps=6, latents=torch.zeros(2, 3, 32, 32), start_step=2)
    with pytest.raises(ValueError, match="cannot start or stop mid-schedule"):
        wb.load("tiny-sd").generate(prompt, steps=2, stop_step=1)
    import diffusers

    multistep = diffusers.DPMSolverMultistepScheduler()
    with pytest.raises(ValueError, match="keeps a history"):
        wb.denoise(model, torch.zeros(1, 3, 32, 32), steps=4, scheduler=multistep, stop_step=2,
                   conditioning=model.encode(prompt))
