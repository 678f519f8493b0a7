"""Applications of text localization (docs/localization.md, "Applications"): attention reuse sites
from the site map, prevention of banned glyphs, negative prompts in Model.generate, the selection
rules, and the sweep engine's equality with the naive loop in float64."""

import numpy as np
import pytest
import torch

import workbench.data as wd
from workbench.analysis.stats import bootstrap
from workbench.studies.localization import patching as L
from workbench.studies.localization import sweeps as S
from workbench.studies.localization import text_editing as te
from workbench.studies.attention.editing import METHODS
from workbench.capture import resolve


def _scenes(glyphs, seed=3, colour="red", position="left"):
    return [wd.make_scene([dict(glyph=g, colour=colour, position=position, template=0)], seed=seed) for g in glyphs]


# -- banned list and prompts --------------------------------------------------------------------
def test_banned_list_refuses_bad_input():
    with pytest.raises(ValueError, match="not glyphs of this world"):
        te.BannedGlyphs(("Q",), "7")
    with pytest.raises(ValueError, match="empty"):
        te.BannedGlyphs((), "7")
    with pytest.raises(ValueError, match="itself banned"):
        te.BannedGlyphs(("K", "7"), "7")
    with pytest.raises(ValueError, match="no benign replacement"):
        te.BannedGlyphs(("K", "A"), {"K": "7"})
    with pytest.raises(ValueError, match="not a glyph of this world"):
        te.BannedGlyphs(("K",), "Z")
    with pytest.raises(ValueError, match="not banned"):
        te.BannedGlyphs(("K",), {"K": "7", "A": "3"})
    banned = te.BannedGlyphs(("K",), "7")
    with pytest.raises(KeyError, match="not banned"):
        banned.benign("A")


def test_prevention_prompts_flag_banned_glyphs_and_build_twins():
    banned = te.BannedGlyphs(("K", "A"), {"K": "7", "A": "3"})
    scenes = _scenes(["K", "5", "A"])
    found = te.prevention_prompts([s.caption for s in scenes], banned, [s.spans for s in scenes])
    assert found["banned"].tolist() == [True, False, True]
    assert found["benign"] == [scenes[0].caption.replace('"K"', '"7"'), scenes[1].caption,
                               scenes[2].caption.replace('"A"', '"3"')]
    no_spans = te.prevention_prompts([s.caption for s in scenes], banned)
    assert no_spans["benign"] == found["benign"]
    with pytest.raises(ValueError, match="not a glyph of this world"):
        te.prevention_prompts(['the word "hello" in red'], banned)


def test_prevention_changes_the_banned_image_and_leaves_the_rest(unet):
    banned = te.BannedGlyphs(("K",), "7")
    scenes = _scenes(["K", "3"], seed=4)
    prompts = [s.caption for s in scenes]
    seeds = [11, 12]
    plain = unet.generate(prompts, steps=4, latents=S.noise_for(unet, seeds))
    out = te.prevent(unet, prompts, banned, layers=[3, 4], steps=4, seed=seeds, spans=[s.spans for s in scenes])
    assert out["banned"].tolist() == [True, False]
    assert np.abs(out["images"][0] - plain[0]).max() > 0.05  # the banned prompt's image changed
    assert np.abs(out["images"][1] - plain[1]).max() <= 1e-5  # the other prompt did not
    # patching every text layer from step 0 is exactly the benign prompt (U-Net: text enters only there)
    every = te.prevent(unet, prompts[:1], banned, layers=None, steps=4, seed=seeds[:1], spans=[scenes[0].spans])
    twin = unet.generate([out["benign"][0]], steps=4, latents=S.noise_for(unet, seeds[:1]))
    assert np.abs(every["images"] - twin).max() <= 1e-5
    with pytest.raises(IndexError, match="out of range"):
        te.prevent(unet, prompts, banned, layers=[99], steps=4, seed=seeds)
    with pytest.raises(ValueError, match="one seed per prompt"):
        te.prevent(unet, prompts, banned, layers=[3], steps=4, seed=[1])
    with pytest.raises(ValueError, match="beyond"):
        te.prevent(unet, prompts, banned, layers=[3], steps=4, seed=seeds, start_step=4)


def test_negative_prompt_form():
    prompt = _scenes(["K"])[0].caption
    assert te.negative_prompt_for(prompt, "K", "glyph") == '"K"'
    assert te.negative_prompt_for(prompt, "K", "object") == 'the letter "K"'
    assert te.negative_prompt_for(prompt, "K", "prompt") == prompt
    with pytest.raises(ValueError, match="unknown negative-prompt form"):
        te.negative_prompt_for(prompt, "K", "word")
    with pytest.raises(ValueError, match="does not quote"):
        te.negative_prompt_for(prompt, "A", "object")


# -- negative prompts in Model.generate ---------------------------------------------------------
def test_generate_takes_negative_prompts(unet):
    prompt = _scenes(["K"])[0].caption
    base = unet.generate([prompt], steps=3, seed=2)
    empty = unet.generate([prompt], steps=3, seed=2, negative_prompts="")
    np.testing.assert_array_equal(base, empty)  # the empty negative is the default unconditional branch
    negative = unet.generate([prompt], steps=3, seed=2, negative_prompts=['the letter "K"'])
    assert np.abs(negative - base).max() > 0.01
    same = unet.generate([prompt], steps=3, seed=2, negative_prompts=[prompt], guidance_scale=3.0)
    unguided = unet.generate([prompt], steps=3, seed=2, guidance_scale=1.0)
    assert np.abs(same - unguided).max() <= 1e-5  # cond == uncond: guidance cancels
    with pytest.raises(ValueError, match="one string per prompt"):
        unet.generate([prompt, prompt], steps=1, negative_prompts=["a", "b", "c"])
    with pytest.raises(ValueError, match="classifier-free guidance"):
        unet.generate([prompt], steps=1, negative_prompts="x", guidance_scale=1.0)


def test_generate_passes_negative_prompts_to_a_pipeline():
    import workbench as wb
    from workbench.models.tiny import tiny_pipeline

    model = wb.load(tiny_pipeline("sd"))
    base = model.generate(["a red circle"], steps=2, seed=0, guidance_scale=5.0)
    negative = model.generate(["a red circle"], steps=2, seed=0, guidance_scale=5.0, negative_prompts="a blue square")
    assert np.abs(negative - base).max() > 0
    with pytest.raises(ValueError, match="classifier-free guidance"):
        model.generate(["a red circle"], steps=2, negative_prompts="x", guidance_scale=1.0)


# -- attention reuse ----------------------------------------------------------------------------
def test_reuse_sites_come_from_layouts(unet, mmdit):
    for method in te.REUSE_METHODS:  # MM-DiT: exactly analysis/editing.py's sites
        expected = sorted(s.name for s in resolve(mmdit.denoiser, list(METHODS[method])))
        assert sorted(te.reuse_sites(mmdit, method)) == expected
    assert all(".attn1." in s for s in te.reuse_sites(unet, "image->image"))
    assert len(te.reuse_sites(unet, "image q,k")) == 2 * len(te.reuse_sites(unet, "image->image"))
    with pytest.raises(te.NotApplicable, match="text queries"):
        te.reuse_sites(unet, "image->image + text->image")
    with pytest.raises(KeyError, match="unknown reuse method"):
        te.reuse_sites(unet, "prompt-to-prompt")


def test_reuse_edit_of_the_same_prompt_is_the_original_and_edits_otherwise(unet):
    a, b = [s.caption for s in _scenes(["K", "7"])]
    original, same = te.reuse_edit(unet, [a], [a], [5], "image->image", reuse_steps=3, steps=4)
    np.testing.assert_allclose(same, original, atol=1e-5)  # probs applied outside the fused kernel: float32 rounding
    _, edited = te.reuse_edit(unet, [a], [b], [5], "image->image", reuse_steps=3, steps=4)
    swapped = unet.generate([b], steps=4, latents=S.noise_for(unet, [5]))
    assert np.abs(edited - original).max() > 0.01 and np.abs(edited - swapped).max() > 1e-4  # reuse acted
    with pytest.raises(ValueError, match="reuse_steps"):
        te.reuse_edit(unet, [a], [b], [5], "image->image", reuse_steps=0, steps=4)
    with pytest.raises(ValueError, match="one of each"):
        te.reuse_edit(unet, [a], [b, b], [5], "image->image", reuse_steps=1, steps=4)


# -- selection rules and scores -----------------------------------------------------------------
def test_selection_rules():
    rates = {(0, 1, 2, 3): 0.0, (3, 4): 0.02, (4,): 0.2, (2, 3): 0.04}
    psnr = {(0, 1, 2, 3): 30.0, (3, 4): 35.0, (4,): 40.0, (2, 3): 36.0}
    assert te.choose_prevention_layers(rates, psnr) == (2, 3)  # both within 0.05, higher PSNR
    assert te.choose_prevention_layers(rates, psnr, tolerance=0.0) == (0, 1, 2, 3)
    assert te.choose_reuse_steps({2: 0.95, 4: 0.91, 6: 0.5}, {}, swap_success=1.0) == 4
    assert te.choose_reuse_steps({2: 0.5, 4: 0.4}, {2: 30, 4: 35}, swap_success=1.0) == 2
    with pytest.raises(ValueError):
        te.choose_prevention_layers({}, {})
    low, high = bootstrap(np.r_[np.zeros(50), np.ones(50)])
    assert low < 0.5 < high
    with pytest.raises(ValueError, match="no values"):
        bootstrap(np.array([]))


# -- the sweep engine in float64 ----------------------------------------------------------------
def test_sweep_engine_equals_the_naive_loop_in_float64():
    """In float64 the engine and the naive loop agree to ~1e-15: the float32 differences
    (docs/localization.md) are rounding at other batch sizes, not a patching difference."""
    from workbench.models.reference import load_reference

    model = load_reference("toy-unet", dtype=torch.float64)
    targets, sources = _scenes(["7", "K"]), _scenes(["3", "A"])
    t, s = [x.caption for x in targets], [x.caption for x in sources]
    maps = L.prompt_token_maps(model, t, s, [x.spans[0] for x in targets], [x.spans[0] for x in sources])
    variants = [S.Variant((3,), 0), S.Variant((4,), 2), S.Variant((0, 1, 2, 3, 4, 5, 6), 1)]
    fast = S.sweep(model, t, s, [3, 4], variants, steps=3, token_maps=maps, keep_latents=True)
    slow = S.naive_sweep(model, t, s, [3, 4], variants, steps=3, token_maps=maps, keep_latents=True, pairs_per_run=1)
    assert fast.latents.dtype == np.float64
    assert np.abs(fast.latents - slow.latents).max() <= 1e-12
    assert np.abs(fast.latents - fast.latents[:, :1]).max() > 1e-3  # variants differ: the check has teeth
