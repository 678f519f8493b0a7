"""The memory budget is projected from the site shapes at the first denoiser call, before the
denoiser's forward allocates anything (issue 22, item 6): an impossible request fails in
milliseconds, the projection equals the bytes a recording then holds, and what fits still runs."""

import time
from fnmatch import fnmatchcase

import pytest
import torch

import workbench as wb
from workbench.capture import all_sites
from workbench.capture.budget import _mib
from workbench.sitemap import InputTap
from workbench.models.tiny import example_inputs, tiny_denoiser

from conftest import denoiser_forward, hook_count

pytestmark = pytest.mark.usefixtures("one_thread")

# SD3 at 1024 px: a 64 x 64 patch grid (4096 image tokens) and 333 text tokens ([CLIP | T5]).
GRID, TEXT_LEN, BATCH = 64, 333, 2  # batch 2: the guidance branches


@pytest.fixture(scope="module")
def sd3_1024():
    """A tiny SD3 (2 joint blocks, the second context_pre_only; 2 heads x 16) on SD3-1024's token counts."""
    model = tiny_denoiser("sd3", sample_size=2 * GRID, pos_embed_max_size=GRID, num_layers=2)
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(BATCH, 16, 2 * GRID, 2 * GRID, generator=g),
        encoder_hidden_states=torch.randn(BATCH, TEXT_LEN, model.config.joint_attention_dim, generator=g),
        pooled_projections=torch.randn(BATCH, model.config.pooled_projection_dim, generator=g),
        timestep=torch.full((BATCH,), 500.0),
    )
    return model, inputs


class _ForwardCounter:
    """Counts forward calls of every submodule of a denoiser (its blocks, embedders, norms)."""

    def __init__(self, model):
        self.calls = 0
        self.handles = [m.register_forward_pre_hook(self._count) for m in list(model.modules())[1:]]

    def _count(self, module, args):
        self.calls += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_an_impossible_request_fails_before_any_forward_with_the_figure_and_the_ways_out(sd3_1024):
    model, inputs = sd3_1024
    steps, limit = 28, 8 << 30
    counter = _ForwardCounter(model)
    recorder = wb.record(model, ["**.attn.probs"], expected_steps=steps, max_bytes=limit)
    try:
        start = time.perf_counter()
        with pytest.raises(wb.CaptureTooLarge) as refused:
            with recorder:
                denoiser_forward(model, inputs)
        elapsed = time.perf_counter() - start
    finally:
        counter.remove()
    assert counter.calls == 0, "a submodule ran before the refusal"
    assert elapsed < 0.1, f"the refusal took {elapsed:.3f} s"
    # whole N x N per layer, N = 4096 + 333, float32, every layer and step
    tokens, layers, heads = GRID * GRID + TEXT_LEN, model.config.num_layers, model.config.num_attention_heads
    expected = layers * BATCH * heads * tokens * tokens * 4 * steps
    assert recorder.projection.total == expected
    message = str(refused.value)
    assert _mib(expected) in message and _mib(limit) in message
    for way_out in ("steps=", "image->text", "reduce=", "dtype=", "store=", "max_bytes="):
        assert way_out in message, way_out
    assert hook_count(model) == 0


def test_a_request_that_fits_runs_and_holds_what_was_projected(sd3_1024):
    model, inputs = sd3_1024
    recorder = wb.record(model, ["**.attn.probs.image->text", "**.out.image"], expected_steps=1)
    with recorder as rec:
        denoiser_forward(model, inputs)
    assert rec.nbytes() == recorder.projection.total
    assert rec["transformer_blocks.0.attn.probs.image->text"].sizes["query"] == GRID * GRID


# Every tiny family (listed, so that a family added later joins this check on purpose): joint
# image-first and text-first attention, single-stream blocks, fused q/k/v projections, masked
# text keys, learned variances, conditioning channels, video tokens, refiners and U-Net levels.
FAMILIES = ("auraflow", "chroma", "cogvideox", "cogview4", "dit", "pixart", "flux", "flux2", "hunyuan_video15",
            "hunyuandit", "ltx", "lumina2", "mochi", "qwenimage", "sana", "sd3", "sd35", "sdxl", "unet", "unet2d", "wan",
            "zimage")
# Sites projected short, on purpose and by a known amount: Lumina 2's caption refiner runs over the
# padded caption, while its Geometry.text_len counts the valid tokens its joint blocks keep (what
# labels the joint axis). Projected at the valid count, they are short by the padding; the measured
# backstop after the first step holds them to the limit.
SHORT = {"lumina2": "context_refiner.*"}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_projection_of_every_site_is_the_bytes_it_holds(family):
    """Exact, site by site (tolerance 0 bytes), for attention probabilities whole and in blocks,
    q/k/v, block and resnet outputs and latents; the U-Net's skip/backbone inputs are the sites
    the projection leaves to the measured backstop, named as such."""
    model, inputs = tiny_denoiser(family), example_inputs(family, batch_size=2)
    sites = [s for s in all_sites(model) if s.name != "latent.x0"]  # x0 needs a scheduler
    names = [s.name for s in sites]
    recorder = wb.record(model, names, expected_steps=1)
    with recorder as rec:
        denoiser_forward(model, inputs)
    projection = recorder.projection
    unprojected = {s.name for s in sites if isinstance(s.tap, InputTap)}  # skip.j, backbone.0
    assert set(projection.unprojected) == unprojected
    for name in names:
        if name in unprojected:
            continue
        held = rec.kept(name, 0).nbytes
        if fnmatchcase(name, SHORT.get(family, "")):
            assert 0 < projection.per_call[name] < held, name
        else:
            assert projection.per_call[name] == held, name


def test_reduce_dtype_steps_and_guidance_calls_enter_the_projection():
    model = tiny_denoiser("sd3")
    inputs = example_inputs("sd3", batch_size=1)
    sites = ["transformer_blocks.*.attn.probs", "transformer_blocks.*.out.image"]
    recorder = wb.record(model, sites, reduce=("head",), dtype=torch.float16, steps=[1, 3],
                         branch_calls=("uncond", "cond"), expected_steps=4)
    with recorder as rec:
        for t in (900.0, 600.0, 300.0, 100.0):  # 4 steps of two calls each (guidance as separate calls)
            for _ in range(2):
                denoiser_forward(model, dict(inputs, timestep=torch.tensor([t])))
    assert recorder.projection.steps_held == 2 and recorder.projection.calls_per_step == 2
    assert rec.nbytes() == recorder.projection.total
    assert rec["transformer_blocks.0.attn.probs"].dtype == "float16"


def test_streaming_projects_one_step_in_memory(sd3_1024, tmp_path):
    """The same request is refused in memory and accepted when each step goes to a store."""
    model, inputs = sd3_1024
    sites = ["transformer_blocks.0.attn.probs.image->text"]
    one_step = BATCH * model.config.num_attention_heads * GRID * GRID * TEXT_LEN * 4
    with pytest.raises(wb.CaptureTooLarge, match="50 step"):
        with wb.record(model, sites, expected_steps=50, max_bytes=10 * one_step):
            denoiser_forward(model, inputs)
    recorder = wb.record(model, sites, expected_steps=50, max_bytes=10 * one_step, store=tmp_path / "run.zarr")
    with recorder:
        denoiser_forward(model, inputs)
    assert recorder.projection.steps_held == 1 and recorder.projection.total == one_step


def test_sites_the_projection_cannot_size_are_caught_by_the_measured_backstop():
    """A U-Net's skips are sized by its down path: measured after the first step and refused there."""
    model, inputs = tiny_denoiser("unet"), example_inputs("unet", batch_size=2)
    recorder = wb.record(model, ["up_blocks.*.skip.*"], expected_steps=10, max_bytes=100_000)
    with pytest.raises(wb.CaptureTooLarge, match=r"measured on its first step"):
        with recorder:
            denoiser_forward(model, inputs)
    assert recorder.projection.total == 0 and recorder.projection.unprojected
    assert hook_count(model) == 0
