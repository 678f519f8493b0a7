"""Text localization by activation patching: layers from site maps, token alignment, patching,
clear errors, and the sweep engine against the naive loop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
import workbench.data as wd
from workbench.analysis.metrics import psnr_outside, ssim_outside
from workbench.studies.localization import patching as L
from workbench.studies.localization import sweeps as S
from workbench.studies.localization.protocol import greedy_head_set, smallest_layer_set


def _scenes(glyphs, seed=3, colour="red", position="left"):
    return [wd.make_scene([dict(glyph=g, colour=colour, position=position, template=0)], seed=seed) for g in glyphs]


def test_text_layers_come_from_the_site_map(unet, mmdit):
    assert [layer.module for layer in L.text_layers(mmdit)] == [f"transformer_blocks.{i}.attn" for i in range(4)]
    layers = L.text_layers(unet)
    assert len(layers) == 7 and all(layer.module.endswith("attn2") for layer in layers)
    assert layers[0].key == layers[0].module + ".k" and layers[0].value == layers[0].module + ".v"
    # the parameters the text K/V depend on, found by perturbation: U-Net attn2's to_k / to_v
    owners = L.text_kv_parameters(unet, layers[:1])
    assert sorted(n.rsplit(".", 2)[-2] for n in owners) == ["to_k", "to_v"]
    share = L.layer_parameter_share(unet, layers[:1])
    expected = sum(p.numel() for p in owners.values()) / sum(p.numel() for p in unet.denoiser.parameters())
    assert share == pytest.approx(expected) and 0 < share < 0.01
    assert L.layer_parameter_share(unet) > share


def test_align_tokens_maps_pieces_and_refuses_a_split_glyph():
    # "the letter "K" in red" vs "the letter "KK" in red" with a tokenizer that splits KK in two
    target = [(0, 0), (0, 3), (4, 10), (11, 12), (12, 13), (13, 14), (15, 17), (18, 21), (0, 0), (0, 0)]
    spans = {"name": (12, 13), "colour": (18, 21)}
    assert L.align_tokens(target, target, spans, spans).tolist() == list(range(10))
    # the source's words before the glyph take one more token ("capital letter"): the roles still align
    source = [(0, 0), (0, 3), (4, 11), (12, 18), (19, 20), (20, 21), (21, 22), (23, 25), (26, 29), (0, 0)]
    source_spans = {"name": (20, 21), "colour": (26, 29)}
    assert L.align_tokens(target, source, spans, source_spans).tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 9]
    shifted = [(0, 0), (0, 5), (6, 12), (13, 14), (14, 15), (15, 16), (17, 19), (20, 23), (0, 0), (0, 0)]
    mapping = L.align_tokens(target, shifted, spans, {"name": (14, 15), "colour": (20, 23)})
    assert mapping.tolist() == list(range(10))  # same counts per piece: one to one
    split = [(0, 0), (0, 3), (4, 10), (11, 12), (12, 13), (13, 14), (14, 15), (16, 18), (19, 22), (0, 0)]
    with pytest.raises(ValueError, match="the glyph tokenizes into 2 token"):
        L.align_tokens(target, split, spans, {"name": (12, 14), "colour": (19, 22)})


def test_patching_every_layer_from_step_zero_is_the_prompt_swap(unet):
    # in this U-Net text enters only through attn2's K/V: patching all of them is the source run
    a, b = _scenes(["7", "K"])
    out = L.patched_generate(unet, a.caption, b.caption, steps=3, seed=3, target_spans=a.spans[0],
                             source_spans=b.spans[0])
    np.testing.assert_array_equal(out["patched"], out["source"])
    assert np.abs(out["target"] - out["source"]).max() > 0.05
    one_head = L.patched_generate(unet, a.caption, b.caption, layers=[3], heads=[1], start_step=1, steps=3, seed=3)
    assert 0 < np.abs(one_head["patched"] - one_head["target"]).max()


def test_clear_errors_for_bad_input(unet):
    a, b = _scenes(["7", "K"])
    with pytest.raises(ValueError, match="not a layer with a text stream.*attn2"):
        L.pick_layers(unet, ["down_blocks.0.resnets.0"])
    with pytest.raises(IndexError, match="7 text layers"):
        L.pick_layers(unet, [7])
    with pytest.raises(ValueError, match="beyond the run"):
        L.patched_generate(unet, a.caption, b.caption, start_step=3, steps=3)
    _, cache = L.cache_text(unet, [b.caption], steps=2, seed=3)
    with pytest.raises(IndexError, match=r"head\(s\) \[4\] out of range: .* 4 heads"):
        L.patched_generate(unet, a.caption, b.caption, layers=[0], heads=[4], steps=2, seed=3, cache=cache)
    with pytest.raises(ValueError, match="seeds \\[3\\] but the target run \\[4\\]"):
        L.patched_generate(unet, a.caption, b.caption, steps=2, seed=4, cache=cache)
    with pytest.raises(ValueError, match="2 steps but the target run 3"):
        L.patched_generate(unet, a.caption, b.caption, steps=3, seed=3, cache=cache)
    with pytest.raises(ValueError, match="pass the captions' role spans"):
        L.prompt_token_maps(unet, [a.caption], ["the digit 7 in red on the far far left"])
    from workbench.models.tiny import tiny_denoiser

    with pytest.raises(ValueError, match="no text keys/values"):
        L.text_layers(wb.load(tiny_denoiser("dit")))


@pytest.mark.parametrize("family", ["sd3", "sdxl", "sd", "flux"])
def test_same_call_on_tiny_pipelines(family):
    from workbench.models.tiny import tiny_pipeline

    model = wb.load(tiny_pipeline(family))
    layers = L.text_layers(model)
    out = L.patched_generate(model, "a red circle", "a blue square", layers=[len(layers) // 2], start_step=1, steps=2)
    assert out["patched"].shape == out["target"].shape
    assert np.abs(out["patched"] - out["target"]).max() > 0  # the patch reached the run
    assert 0 < L.layer_parameter_share(model, layers[:1]) < 1


def test_sweep_engine_equals_the_naive_loop_with_fewer_model_calls(mmdit):
    targets, sources = _scenes(["7", "K"]), _scenes(["3", "A"])
    t, s = [x.caption for x in targets], [x.caption for x in sources]
    maps = L.prompt_token_maps(mmdit, t, s, [x.spans[0] for x in targets], [x.spans[0] for x in sources])
    variants = S.layer_start_grid(mmdit, [0, 1, 2]) + [S.Variant((1,), 1, heads=(0, 2)), S.Variant((0, 3), 2)]
    fast = S.sweep(mmdit, t, s, [3, 3], variants, steps=3, token_maps=maps)
    slow = S.naive_sweep(mmdit, t, s, [3, 3], variants, steps=3, token_maps=maps)
    assert fast.images.shape == (2, len(variants), 32, 32, 3)
    assert np.abs(fast.images - slow.images).max() <= 1e-5
    np.testing.assert_array_equal(fast.target, slow.target)
    assert fast.cost.calls * 4 <= slow.cost.calls  # prefixes run once, variants batched
    assert fast.cost.rows < slow.cost.rows
    assert np.abs(fast.images - fast.target[:, None]).max(axis=(2, 3, 4)).min() > 0  # every variant patched


def test_sweep_rejects_starts_beyond_the_run_and_pipelines(mmdit):
    with pytest.raises(ValueError, match="start beyond the run"):
        S.sweep(mmdit, ["a"], ["b"], [0], [S.Variant((0,), 5)], steps=3)
    from workbench.models.tiny import tiny_pipeline

    with pytest.raises(ValueError, match="naive_sweep"):
        S.sweep(wb.load(tiny_pipeline("sd3")), ["a"], ["b"], [0], [S.Variant((0,), 0)], steps=2)


def test_greedy_head_set_and_smallest_layer_set():
    table = {(0,): 0.2, (1,): 0.5, (2,): 0.1, (0, 1): 0.85, (1, 2): 0.6, (0, 2): 0.3, (0, 1, 2): 0.9}
    assert greedy_head_set(table, 3, 0.8) == ([0, 1], 0.85)
    assert greedy_head_set(table, 3, 0.95) == ([0, 1, 2], 0.9)
    # unmeasured pairs: the greedy jumps to the smallest measured superset
    assert greedy_head_set({(0,): 0.2, (1,): 0.5, (0, 1, 2): 0.9}, 3, 0.8) == ([0, 1, 2], 0.9)
    # a tie goes to the lower head (issue 23: a tie rule flipped to the higher head went unnoticed)
    assert greedy_head_set({(0,): 0.5, (1,): 0.5, (2,): 0.1}, 3, 0.4) == ([0], 0.5)
    assert smallest_layer_set(table, 0.55) == ([0, 1], 0.85)  # size 2: the higher success
    assert smallest_layer_set(table, 0.86) == ([0, 1, 2], 0.9)
    assert smallest_layer_set(table, 0.99) is None


def test_psnr_and_ssim_ignore_the_glyph():
    rng = np.random.default_rng(0)
    ref = rng.random((2, 16, 16, 3))
    img = ref.copy()
    img[:, 4:8, 4:8] = 0  # changed only inside the mask
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:8, 4:8] = True
    assert np.isinf(psnr_outside(img, ref, mask)).all()
    assert psnr_outside(img, ref, ~mask).max() < 20
    assert ssim_outside(img, ref, np.zeros_like(mask)).max() < 0.99
    assert np.allclose(ssim_outside(ref, ref, mask), 1.0)


def test_localize_job_resumes_after_a_kill(tmp_path):
    """A real process killed after its first chunk; the rerun finishes the rest, same store."""
    out = tmp_path / "sweep.zarr"
    command = [sys.executable, "-m", "workbench.cli.main", "localize", "--model", "toy-mmdit", "--pairs", "3",
               "--cells", "1", "--steps", "2", "--starts", "0,1", "--chunk", "1", "--no-screen", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    job = Path(str(out) + ".job")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(job.glob("grid-*.done")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert list(job.glob("grid-*.done")), "the job finished no chunk"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    done_before = sorted(p.name for p in job.glob("*.done"))
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    from workbench.studies.localization.job import open_sweep

    grid = open_sweep(out, "grid")
    n = grid.sizes["pair"]
    assert len(list(job.glob("grid-*.done"))) == n and len(done_before) < 2 * n
    assert (grid["target_read"] != "").all() and np.isfinite(grid["psnr"]).all()
    assert (grid["image"].max(("y", "x", "rgb")) > 0).all()
    assert "chosen" in open_sweep(out, "focus").attrs
    import warnings

    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # created atomically and consolidated: plain open_zarr does not warn
        for group in ("grid", "focus"):
            assert xr.open_zarr(out, group=group).sizes["pair"] == n
    assert all((job / "chunks" / group / f"{i}.json").exists() for group in ("grid", "focus") for i in range(n))


def test_screening_stops_once_the_pairs_are_drawn(tmp_path):
    """Cells past the one that fills ``--pairs`` only add pairs that are cut: the job screens no
    more cells, and the pairs it keeps are those a full screening keeps."""
    from types import SimpleNamespace

    from workbench.studies.localization import job as J
    from workbench.studies.localization import protocol as gp

    class Generator:  # each "image" is its caption, read back as the glyph it names
        latent_shape, denoiser, calls = (1, 2, 2), torch.nn.Linear(1, 1), 0

        def generate(self, prompts, steps, latents):
            self.calls += 1
            return list(prompts)

    first = gp.cells(1)[0]  # one colour and position; seeds differ, so each cell shuffles its own pairs
    fake_gp = SimpleNamespace(
        cells=lambda n, seed: [gp.Cell(first.colour, first.position, 1000 + i) for i in range(n)],
        glyph_scene=lambda glyph, cell: SimpleNamespace(caption=glyph),
        reads=lambda judge, images, positions: {"name": images, "colour": [first.colour] * len(images)})

    def pairs(limit, folder):
        model = Generator()
        folder.mkdir()
        table = J._pairs(folder, model, None, fake_gp, 16, 14, limit, 2, 0, None)
        return table, model.calls

    few, calls_few = pairs(3, tmp_path / "few")
    many, calls_many = pairs(30, tmp_path / "many")
    assert (calls_few, calls_many) == (1, 3)  # 14 pairs per cell: one cell gives 3, three give 30
    assert len(few["cell"]) == 3 and len(many["cell"]) == 30
    assert few == {key: values[:3] for key, values in many.items()}
