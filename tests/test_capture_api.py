"""The public capture API: one factory per intervention, ``edit`` with a plain function, ``record``'s
keywords visible to signature help, and a short printed summary of a Recording."""

import inspect

import numpy as np
import pytest
import torch

import workbench as wb

SITE = "transformer_blocks.0.attn.k.text"


@pytest.fixture(scope="module")
def model():
    return wb.load("tiny-sd3")


def test_edit_runs_a_plain_function_with_the_calls_context(model):
    seen = []

    def zero_text_keys_early(value, context):
        seen.append((context.step, context.timestep, context.site_name, tuple(context.branches), context.dims))
        return value * 0 if context.step == 0 else value

    plain = model.generate("a red circle", steps=2)
    with wb.record(model, [SITE], interventions=[wb.edit(SITE, zero_text_keys_early)]) as rec:
        edited = model.generate("a red circle", steps=2)
    with wb.intervene(model, [wb.scale(SITE, 0.0, steps=0)]):
        scaled = model.generate("a red circle", steps=2)
    np.testing.assert_array_equal(edited, scaled)  # the same change as the built-in intervention
    assert np.abs(edited - plain).max() > 1e-4
    assert rec[SITE].isel(step=0).values.max() == 0 and np.abs(rec[SITE].isel(step=1).values).max() > 0
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][2] == SITE and seen[0][3] == ("uncond", "cond") and seen[0][4] == ("batch", "head", "token", "channel")
    assert seen[0][1] > seen[1][1]  # timesteps run down


def test_edit_refuses_what_it_cannot_use(model):
    with pytest.raises(TypeError, match="fn\\(value, context\\)"):
        wb.edit(SITE, 3.0)
    with pytest.raises(ValueError, match="replacement has shape"):
        with wb.intervene(model, [wb.edit(SITE, lambda v, ctx: v[:, :1])]):
            model.generate("a red circle", steps=1)
    with pytest.raises(TypeError, match="returned float"):
        with wb.intervene(model, [wb.edit(SITE, lambda v, ctx: 1.0)]):
            model.generate("a red circle", steps=1)


def test_public_api_has_one_way_per_intervention_and_explicit_record_keywords():
    for name in ("patch", "ablate", "scale", "steer", "edit", "record", "intervene"):
        assert name in wb.__all__
    for cls in ("Patch", "Ablate", "Scale", "Steer", "Edit"):
        assert cls not in wb.__all__ and not hasattr(wb, cls)
    assert not hasattr(wb, "run_with_cache") and not hasattr(wb, "run_with_hooks")
    params = inspect.signature(wb.record).parameters
    for keyword in ("steps", "timesteps", "reduce", "dtype", "interventions", "max_bytes", "store"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_printing_a_recording_summarises_sites_dims_and_steps(model):
    with wb.record(model, ["transformer_blocks.0.attn.probs.image->text", "latent.x0"], steps=[0, 1, 3]) as rec:
        model.generate("a red circle", steps=4)
    text = repr(rec)
    assert "steps 0-1, 3" in text
    assert "transformer_blocks.0.attn.probs.image->text: (sample: 1, branch: 2, step: 3, head: 2, query: 64, key: 333) float32" in text
    assert "latent.x0: (sample: 1, branch: 1, step: 3, channel: 16, y: 16, x: 16) float32" in text
    assert "tensor(" not in text and len(text.splitlines()) == 3
    assert str(rec) == text


def test_transform_keeps_only_its_result_and_never_the_live_tensor(model):
    site = "transformer_blocks.0.out.image"
    with wb.record(model, [site]) as full:
        model.generate("a red circle", steps=1)
    seen = []

    def token_mean(s, x, geometry):
        seen.append((s.name, tuple(x.shape), geometry.text_len))
        return x.mean(dim=1)

    with wb.record(model, [site], transform=token_mean) as rec:
        model.generate("a red circle", steps=1)
    captured = full.raw(site, 0)
    torch.testing.assert_close(rec.kept(site, 0), captured.mean(dim=1), rtol=0, atol=0)
    assert seen and seen[0][0] == site and seen[0][1] == tuple(captured.shape) and seen[0][2] > 0
    # An identity transform hands back the live tensor: it is copied, not kept as it is.
    live = []

    def identity(s, x, geometry):
        live.append(x)
        return x

    with wb.record(model, [site], transform=identity) as same:
        model.generate("a red circle", steps=1)
    kept = same.kept(site, 0)
    assert kept.untyped_storage().data_ptr() != live[0].untyped_storage().data_ptr()
    torch.testing.assert_close(kept, captured, rtol=0, atol=0)
    # The kept tensors have no site dims: labelled reads and patching refuse them, by name.
    with pytest.raises(ValueError, match="transform=token_mean"):
        rec[site]
    with pytest.raises(ValueError, match="transform=token_mean"):
        rec.raw(site, 0)
    with pytest.raises(ValueError, match="cannot be combined with reduce"):
        wb.record(model, [site], transform=token_mean, reduce=("head",))
