"""The hook chain (``workbench.chain``): one named, ordered chain per module, through which
recording, interventions, reuse and the step clock attach, and which always detaches."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import workbench as wb
from workbench.capture.reuse import reuse
from workbench.chain import ModelHook, RunAnnouncement, announce_run, attach, attached_names
from workbench.model import Model
from workbench.models.tiny import example_inputs, tiny_denoiser

from conftest import hook_count


@pytest.fixture(scope="module")
def sd3():
    denoiser = tiny_denoiser("sd3")
    return denoiser, example_inputs("sd3")


def _bare(denoiser, inputs):
    return denoiser(**inputs, return_dict=False)[0]


def _pristine(*objects) -> bool:
    """Nothing of ours is left: no chain, no torch hook, no instance forward/step."""
    for obj in objects:
        if "_workbench_hook_chain" in obj.__dict__ or "forward" in obj.__dict__ or "step" in obj.__dict__:
            return False
        if isinstance(obj, torch.nn.Module) and hook_count(obj):
            return False
    return True


class Log(ModelHook):
    def __init__(self, name, log, always_call=False):
        self.name, self.log, self.always_call = name, log, always_call

    def pre_forward(self, module, args, kwargs):
        self.log.append(f"pre {self.name}")

    def post_forward(self, module, args, kwargs, output):
        self.log.append(f"post {self.name}" + (" (raised)" if output is None else ""))

    def around(self, call, *args, **kwargs):
        self.log.append(f"around {self.name}")
        return call(*args, **kwargs)


def test_entries_run_in_the_order_attached_and_names_are_unique(sd3):
    denoiser, inputs = sd3
    log = []
    first = attach(denoiser, "first", Log("first", log))
    second = attach(denoiser, "second", Log("second", log))
    try:
        assert attached_names(denoiser) == ["first", "second"]
        with pytest.raises(ValueError, match="'first' is already attached.*first, second"):
            attach(denoiser, "first", Log("again", log))
        _bare(denoiser, inputs)
    finally:
        second.remove(), first.remove()
    assert log == ["pre first", "pre second", "around first", "around second", "post first", "post second"]
    assert _pristine(denoiser)


def test_a_raising_call_reaches_only_always_call_entries_and_everything_detaches(sd3):
    denoiser, inputs = sd3
    log = []

    def explode(module, args):
        raise RuntimeError("boom")

    handle = denoiser.transformer_blocks[0].register_forward_pre_hook(explode)
    attachments = [attach(denoiser, "plain", Log("plain", log)), attach(denoiser, "always", Log("always", log, True))]
    try:
        with pytest.raises(RuntimeError, match="boom"):
            _bare(denoiser, inputs)
    finally:
        for a in attachments:
            a.remove()
        handle.remove()
    assert log[-1] == "post always (raised)" and "post plain" not in " ".join(log)
    assert _pristine(denoiser)


def test_a_scheduler_takes_around_entries_only():
    scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(TypeError, match="takes `around` entries only"):
        attach(scheduler, "x", Log("x", []), method="step")
    assert _pristine(scheduler)


def test_observers_that_change_nothing_leave_the_result_bitwise_the_bare_one(sd3):
    denoiser, inputs = sd3
    bare = _bare(denoiser, inputs)
    model = wb.load(denoiser)
    with wb.record(model, ["transformer_blocks.*.out.*", "transformer_blocks.0.attn.probs", "latent.in",
                                 "latent.pred"],
                   expected_steps=1):
        watched = _bare(denoiser, inputs)
    assert torch.equal(watched, bare)
    assert _pristine(denoiser, *denoiser.modules())


def test_a_failing_recorded_run_detaches_recorder_reuse_and_scheduler_entries(unet):
    scheduler = unet.scheduler

    def explode(module, args):
        raise RuntimeError("boom")

    handle = unet.denoiser.get_submodule("up_blocks.1").register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with reuse(unet, ["down_blocks.2.out"], every=2), wb.record(unet, ["latent.x0", "up_blocks.0.out"]):
                assert attached_names(scheduler, "step") and len(attached_names(unet.denoiser)) == 4
                unet.generate(["a red circle"], steps=2, seed=0)
    finally:
        handle.remove()
    assert _pristine(scheduler, *unet.denoiser.modules())


def test_a_run_is_announced_through_the_chain_not_a_list_on_the_model(sd3):
    denoiser, _ = sd3
    assert "_recorders" not in {f.name for f in Model.__dataclass_fields__.values()}
    heard = []

    class Listener(ModelHook):
        def begin_run(self, run):
            heard.append(run)

    run = RunAnnouncement(["a"], ("uncond", "cond"), expected_steps=3, first_step=1)
    handle = attach(denoiser, "listener", Listener())
    try:
        announce_run(denoiser, run)
    finally:
        handle.remove()
    announce_run(denoiser, run)  # nobody attached: nothing to tell, no error
    assert heard == [run]


def _separate_guidance_loop(denoiser, inputs, timesteps, branch_outputs=None):
    """Guidance as two denoiser calls per step (uncond, then cond), as some pipelines run it."""
    for t in timesteps:
        for _branch in ("uncond", "cond"):
            out = denoiser(**{**inputs, "timestep": torch.tensor([t])}, return_dict=False)[0]
            if branch_outputs is not None:
                branch_outputs.append(out)


def test_branch_calls_count_separate_guidance_calls_as_one_step_for_recording_and_reuse(sd3):
    denoiser, inputs = sd3
    model = wb.load(denoiser)
    timesteps = [900.0, 600.0, 300.0]
    with reuse(model, ["transformer_blocks.0.out.image"], every=2, branch_calls=("uncond", "cond")) as cache, \
            wb.record(model, ["transformer_blocks.1.out.image"], branch_calls=("uncond", "cond"),
                      expected_steps=3) as rec:
        _separate_guidance_loop(denoiser, inputs, timesteps)
    site = rec["transformer_blocks.1.out.image"]
    assert list(site["step"].values) == [0, 1, 2] and list(site["branch"].values) == ["uncond", "cond"]
    # one clock: the reuse context saw the same three steps, and each call kept its own output
    assert cache.stats.key_steps == [0, 2]
    assert cache.stats.computed["transformer_blocks.0"] == 4 and cache.stats.reused["transformer_blocks.0"] == 2
    assert _pristine(denoiser, *denoiser.modules())
