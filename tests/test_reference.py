"""The reference models, their training loop and the judge (fast: well under a minute in all)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.models import reference
from workbench.models.judge import evaluate_judge, load_judge
from workbench.models.train import flow_matching_loss, sample_batch

# Tinier denoisers than the shipped ones: enough to check that the loop learns.
TINY_OVERRIDES = {
    "toy-mmdit": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, caption_projection_dim=32),
    "toy-unet": dict(block_out_channels=(16, 32, 32), norm_num_groups=8, attention_head_dim=2),
}

# Eight single-object prompts (shape, colour, position), spread over the vocabulary.
SINGLE = [
    ("circle", "red", "left"), ("square", "blue", "right"), ("triangle", "yellow", "centre"),
    ("cross", "green", "top"), ("diamond", "magenta", "bottom"), ("circle", "cyan", "centre"),
    ("square", "white", "left"), ("triangle", "orange", "right"),
]


@pytest.fixture(scope="module")
def judge():
    return load_judge()


@pytest.fixture(scope="module", params=reference.NAMES)
def model(request):
    return wb.load(request.param)


@pytest.mark.parametrize("name", reference.NAMES)
@torch.enable_grad()  # conftest runs every test under no_grad
def test_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    c = reference.build_components(name, seed=0, **TINY_OVERRIDES[name])
    x0, captions = sample_batch(c.spec, step=0, batch_size=8, seed=0)
    params = [p for m in (c.text_encoder, c.denoiser) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3)

    def loss_on_fixed_noise():
        return flow_matching_loss(c, x0, captions, torch.Generator().manual_seed(1))

    with torch.no_grad():
        before = loss_on_fixed_noise().item()
    assert torch.is_grad_enabled()
    for _ in range(3):
        loss = loss_on_fixed_noise()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on_fixed_noise().item()
    assert after < before, (before, after)


def test_batches_are_deterministic():
    spec = reference.SPECS["toy-mmdit"]
    a, captions_a = sample_batch(spec, step=3, batch_size=4, seed=0)
    b, captions_b = sample_batch(spec, step=3, batch_size=4, seed=0)
    assert torch.equal(a, b) and captions_a == captions_b
    assert a.shape == (4, 3, 32, 32) and a.min() >= -1 and a.max() <= 1


def _phrase(name: str, colour: str, pos: str) -> str:
    where = "in the" if pos == "centre" else "on the" if pos in ("left", "right") else "at the"
    if len(name) > 1:
        return f"a {colour} {name} {where} {pos}"
    kind = "digit" if name.isdigit() else "letter"
    return f'the {kind} "{name}" in {colour} {where} {pos}'


def _judge_single(model, judge):
    """(shape and colour right, colour right) counts over the 8 SINGLE prompts, 10 steps."""
    prompts = [_phrase(shape, colour, pos) for shape, colour, pos in SINGLE]
    images = model.generate(prompts, steps=10, seed=0)
    assert images.shape == (8, 32, 32, 3) and images.min() >= 0 and images.max() <= 1
    verdict = judge.judge(images)
    seen = [[(verdict["name"][p][i], verdict["colour"][p][i]) for p in verdict["name"] if verdict["name"][p][i] != "none"]
            for i in range(len(SINGLE))]
    both = sum((shape, colour) in seen[i] for i, (shape, colour, _) in enumerate(SINGLE))
    colour_only = sum(any(c == colour for _, c in seen[i]) for i, (_, colour, _) in enumerate(SINGLE))
    return both, colour_only


def test_shipped_models_follow_prompt_colours(model, judge):
    """What the shipped models do learn in their training budget: the asked colour."""
    _, colour_right = _judge_single(model, judge)
    assert colour_right >= 6, f"{model.name}: only {colour_right}/8 prompts show the asked colour"


def test_shipped_models_follow_prompt_shapes_and_colours(model, judge):
    """A regression floor, not the target: >= 6 of 8 (75%) single-object prompts show the asked
    shape in the asked colour. The documented target is >= 97% on the 200-prompt quality benchmark
    (docs/reference_models.md, workbench/studies/quality/job.py); 8 prompts are too few to test it here."""
    both, _ = _judge_single(model, judge)
    assert both >= 6, f"{model.name}: only {both}/8 single-object prompts judged right"


def test_model_info_and_text_tokens(model):
    assert model.latent_shape == (3, 32, 32)
    assert model.guidance_scale > 1
    tokens = model.text_tokens(["a red circle on the left"])
    assert len(tokens) == 1 and len(tokens[0]) == reference.MAX_TOKENS
    assert tokens[0][:4] == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>"]
    cond = model.encode(["a red circle on the left", ""])
    assert cond["encoder_hidden_states"].shape == (2, reference.MAX_TOKENS, reference.TEXT_HIDDEN)


def test_recording_a_reference_model(model):
    pattern = "transformer_blocks.0.attn.probs" if model.name == "toy-mmdit" else "up_blocks.1.attentions.0.*.attn2.probs"
    with wb.record(model, [pattern]) as rec:
        model.generate(["a red circle on the left"], steps=2, seed=0)
    (var,) = rec.dataset.data_vars.values()
    probs = var.values
    assert np.allclose(probs.sum(-1), 1, atol=1e-4)
    if model.name == "toy-mmdit":  # joint attention: keys are [image tokens | text tokens]
        image_tokens = (32 // model.denoiser.config.patch_size) ** 2
        assert probs.shape[-1] == image_tokens + reference.MAX_TOKENS
    else:  # cross-attention: keys are the text tokens
        assert probs.shape[-1] == reference.MAX_TOKENS


@pytest.mark.parametrize("name", reference.NAMES)
def test_save_load_round_trip_is_exact(name, tmp_path):
    c = reference.load_components(reference.reference_dir(name))
    c.save_pretrained(tmp_path, dtype=torch.float32)
    d = reference.load_components(tmp_path)
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500.0, 250.0])
    with torch.no_grad():
        cond_c = reference.encode_prompts(c, ["a red circle on the left", ""])
        cond_d = reference.encode_prompts(d, ["a red circle on the left", ""])
        out_c = c.denoiser(x, timestep=t, **cond_c, return_dict=False)[0]
        out_d = d.denoiser(x, timestep=t, **cond_d, return_dict=False)[0]
    for k in cond_c:
        assert torch.equal(cond_c[k], cond_d[k])
    assert torch.equal(out_c, out_d)


def test_judge_is_accurate_on_real_images(judge):
    accuracy = evaluate_judge(judge, n=200)
    assert accuracy["shape"] > 0.97 and accuracy["glyph"] > 0.97 and accuracy["colour"] > 0.97, accuracy
    assert accuracy["empty"] > 0.97, accuracy


def test_training_from_the_seed_is_deterministic(tmp_path):
    """Two runs of `train_reference` from the same seed save identical weights (and checkpoints)."""
    from safetensors.torch import load_file

    from workbench.models.train import train_reference

    runs = []
    for run in ("a", "b"):
        record = train_reference("toy-mmdit", steps=3, batch_size=4, threads=1, progress=False, seed=3,
                                 out=tmp_path / run, checkpoint_every=2)
        assert record["steps_done"] == 3 and len(record["loss_curve"]) == 1
        runs.append(record)
    assert runs[0]["loss_curve"] == runs[1]["loss_curve"]
    for sub in ("transformer", "text_encoder", "checkpoints/step-000002/transformer"):
        (a,) = (tmp_path / "a" / sub).glob("*.safetensors")
        (b,) = (tmp_path / "b" / sub).glob("*.safetensors")
        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), sub
    # and a different seed trains differently (the comparison above can fail)
    other = train_reference("toy-mmdit", steps=3, batch_size=4, threads=1, progress=False, seed=4, out=tmp_path / "c")
    assert other["loss_curve"] != runs[0]["loss_curve"]


def test_held_out_combinations_never_reach_training():
    from workbench.data.holdout import held_out_shapes
    from workbench.data.recipe import default_recipe

    recipe = default_recipe()
    phrases = {f"{colour} {shape} {recipe.positions[position].phrase}" for shape, colour, position in held_out_shapes()}
    assert len(phrases) == 20
    only_shapes = dict(two_object_fraction=0.0, glyph_fraction=0.0, caption_dropout=0.0)
    spec = dataclasses.replace(reference.SPECS["toy-unet"], **only_shapes)
    _, captions = sample_batch(spec, step=0, batch_size=96, seed=0)
    assert not [c for c in captions if any(c.endswith(p) for p in phrases)]
    # Without the exclusion the same batch does show some (10% of shape triples are held out).
    _, captions = sample_batch(dataclasses.replace(spec, exclude_held_out=False), step=0, batch_size=96, seed=0)
    assert [c for c in captions if any(c.endswith(p) for p in phrases)]


def test_warm_started_rounds_are_numbered_and_counted(tmp_path):
    from workbench.models.train import train_reference

    kwargs = dict(steps=1, batch_size=2, threads=1, progress=False)
    first = train_reference("toy-mmdit", out=tmp_path / "r1", stop_after=1, **(kwargs | {"steps": 5}))
    assert (first["steps_done"], first["steps_planned"]) == (1, 5)  # a capped round replayed with --stop-after
    second = train_reference("toy-mmdit", out=tmp_path / "r2", init_from=tmp_path / "r1", **kwargs)
    third = train_reference("toy-mmdit", out=tmp_path / "r3", init_from=tmp_path / "r2", **kwargs)
    assert (second["round"], third["round"]) == (2, 3)
    assert [r.get("round") for r in third["rounds"]] == [None, 2, 3]
    assert third["cumulative_steps"] == 3 and third["cumulative_images"] == 6


# The shipped weights (round 7 since issue 9; docs/reference_models.md) against issue 9's targets.
# Eight glyph prompts and eight two-object prompts, fixed, spread over glyphs, colours and positions.
GLYPHS = [("K", "red", "left"), ("7", "blue", "right"), ("A", "yellow", "centre"), ("3", "green", "top"),
          ("M", "magenta", "bottom"), ("0", "cyan", "centre"), ("S", "white", "left"), ("9", "orange", "right")]
TWO = [(("circle", "red", "left"), ("square", "blue", "right")), (("K", "yellow", "top"), ("triangle", "green", "bottom")),
       (("7", "magenta", "left"), ("A", "cyan", "right")), (("diamond", "white", "centre"), ("cross", "orange", "top")),
       (("square", "green", "left"), ("E", "red", "right")), (("circle", "blue", "top"), ("5", "yellow", "bottom")),
       (("triangle", "cyan", "left"), ("diamond", "magenta", "right")), (("X", "orange", "centre"), ("circle", "white", "bottom"))]


@pytest.mark.parametrize("name", reference.NAMES)
def test_shipped_weights_meet_the_glyph_and_two_object_targets(name, judge):
    """Issue 9's targets on a small fixed prompt set at 20 steps: >= 90% right glyph (7 of 8 here)
    and >= 60% two-object scenes with both objects right at their positions (5 of 8 here).
    Round 4 (shipped before) fails it: 5 and 1 of 8 glyphs, 0 and 1 of 8 two-object scenes
    (toy-unet, toy-mmdit)."""
    model = wb.load(name)
    glyph_images = model.generate([_phrase(*g) for g in GLYPHS], steps=20, seed=0)
    two_images = model.generate([f"{_phrase(*a)} and {_phrase(*b)}" for a, b in TWO], steps=20, seed=0)
    glyphs, two = judge.judge(glyph_images), judge.judge(two_images)

    def right(verdict, i, obj):
        return verdict["name"][obj[2]][i] == obj[0] and verdict["colour"][obj[2]][i] == obj[1]

    glyph_right = sum(right(glyphs, i, g) for i, g in enumerate(GLYPHS))
    both_right = sum(right(two, i, a) and right(two, i, b) for i, (a, b) in enumerate(TWO))
    assert glyph_right >= 7, f"{name}: only {glyph_right}/8 glyph prompts show the asked glyph"
    assert both_right >= 5, f"{name}: only {both_right}/8 two-object prompts have both objects right"
