"""Tiny in-process diffusers models, pipelines and tokenizers; local checkpoint loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.models.local import LocalCheckpointError, load_local, realign_tensors
from workbench.models.tiny import (
    DIT_ID2LABEL,
    FAMILIES,
    PIPELINE_FAMILIES,
    TINY_CONFIGS,
    default_size,
    example_call_kwargs,
    example_inputs,
    tiny_denoiser,
    tiny_pipeline,
)
from workbench.models.tokenizers import (
    DEFAULT_WORDS,
    build_clip_tokenizer,
    build_t5_tokenizer,
    tokenize_words,
)

from conftest import as_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on the left"

EXPECTED_SAMPLE_SHAPES = {
    "sd3": (2, 16, 16, 16),
    "sd35": (2, 16, 16, 16),
    "flux": (2, 64, 64),  # packed 2x2 latent patches: 8 x 8 tokens of 16 x 4 channels
    "unet": (2, 4, 16, 16),
    "unet2d": (2, 3, 16, 16),
    "dit": (2, 8, 16, 16),  # eps + learned variance
    "pixart": (2, 8, 16, 16),
    "sdxl": (2, 4, 16, 16),
    "auraflow": (2, 4, 16, 16),
    "wan": (2, 4, 3, 8, 8),  # (batch, channels, frames, height, width)
    "cogvideox": (2, 3, 4, 8, 8),  # (batch, frames, channels, height, width)
    "ltx": (2, 48, 8),  # packed tokens: 3 frames of 4 x 4
    "hunyuan_video15": (2, 4, 3, 4, 4),
    "flux2": (2, 64, 32),  # packed 2x2 latent patches: 8 x 8 tokens of 8 x 4 channels
    "qwenimage": (2, 64, 16),  # packed 2x2 latent patches, 4 latent channels x 4
    "chroma": (2, 64, 64),  # as FLUX.1
    "sana": (2, 4, 16, 16),
    "hunyuandit": (2, 8, 16, 16),  # eps + learned variance
    "cogview4": (2, 16, 16, 16),
    "lumina2": (2, 16, 16, 16),
    "mochi": (2, 12, 3, 8, 8),  # (batch, channels, frames, height, width)
    "zimage": (2, 16, 1, 16, 16),  # a list of (channels, 1, height, width) latents, stacked
}

# Parameters diffusers fixes whatever the config: HunyuanVideo 1.5's byT5 projection has a hidden
# width of 2048 written into the class (4.2M of the tiny model's 4.4M parameters).
FIXED_PARAMETERS = {"hunyuan_video15": 2048 * 2048 + 2 * 2048 + 16 * 2048 + 2048 * 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for these tiny models: on the two shared cores of the dev machine a
    second OpenMP thread spin-waits for a busy core and makes every small op 30-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pictures(output) -> np.ndarray:
    """A pipeline's images, or a video pipeline's frames."""
    return output.images if hasattr(output, "images") else output.frames


def _forward(model: torch.nn.Module, family: str, batch_size: int = 2) -> torch.Tensor:
    with torch.no_grad():
        return as_batch(model(**example_inputs(family, batch_size=batch_size)).sample)


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_tok():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def t5_tok():
    return build_t5_tokenizer()


def test_tokenizer_classes_are_the_ones_pipelines_declare(clip_tok, t5_tok):
    from transformers import CLIPTokenizer, CLIPTokenizerFast, T5Tokenizer, T5TokenizerFast

    # transformers 5: the *Fast names are aliases of the tokenizers-backed classes.
    assert isinstance(clip_tok, CLIPTokenizer) and isinstance(clip_tok, CLIPTokenizerFast)
    assert isinstance(t5_tok, T5TokenizerFast) and isinstance(t5_tok, T5Tokenizer)
    assert clip_tok.model_max_length == 77
    assert t5_tok.model_max_length == 512


def test_every_vocabulary_word_is_one_token(clip_tok, t5_tok):
    for tok in (clip_tok, t5_tok):
        multi = {w: t for w, t in tokenize_words(tok, DEFAULT_WORDS).items() if len(t) != 1}
        assert not multi, f"{type(tok).__name__}: {multi}"
    assert clip_tok.tokenize("Magenta DIAMOND") == ["magenta</w>", "diamond</w>"]  # CLIP lowercases
    assert t5_tok.tokenize("Magenta diamond") == ["▁Magenta", "▁diamond"]  # T5 keeps case


def test_custom_word_list():
    clip = build_clip_tokenizer(["zyzzyva", "quokka"], model_max_length=16)
    t5 = build_t5_tokenizer(["zyzzyva", "quokka"], model_max_length=16)
    assert clip.tokenize("quokka zyzzyva") == ["quokka</w>", "zyzzyva</w>"]
    assert t5.tokenize("quokka zyzzyva") == ["▁quokka", "▁zyzzyva"]
    assert clip.model_max_length == t5.model_max_length == 16
    with pytest.raises(TypeError):
        build_clip_tokenizer("not a list")


def test_special_token_layout(clip_tok, t5_tok):
    # CLIP: startoftext / endoftext are the last two ids, as in openai/clip-vit-large-patch14.
    assert clip_tok.bos_token_id == len(clip_tok) - 2
    assert clip_tok.eos_token_id == clip_tok.pad_token_id == len(clip_tok) - 1
    ids = clip_tok(PROMPT).input_ids
    assert ids[0] == clip_tok.bos_token_id and ids[-1] == clip_tok.eos_token_id
    # T5: pad=0, eos=1, unk=2, sentinels at the end.
    assert (t5_tok.pad_token_id, t5_tok.eos_token_id, t5_tok.unk_token_id) == (0, 1, 2)
    assert t5_tok(PROMPT).input_ids[-1] == 1
    assert t5_tok.convert_tokens_to_ids("<extra_id_0>") == len(t5_tok) - 1
    # The SD3-style second CLIP tokenizer pads with "!".
    assert build_clip_tokenizer(pad_token="!").pad_token == "!"


def test_unknown_text_never_crashes(clip_tok, t5_tok):
    text = "Zyzzyva naïve café 日本 🙂 — x-ray 3.14 'quoted' \"double\""
    clip_ids = clip_tok(text).input_ids
    assert clip_tok.unk_token_id not in clip_ids[1:-1]  # byte-level: nothing is unknown
    assert clip_tok.decode(clip_ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    t5_ids = t5_tok(text).input_ids
    assert t5_ids[-1] == t5_tok.eos_token_id
    assert t5_tok.tokenize("Zyzzyva")[:2] == ["▁Z", "y"]  # spelled from characters
    assert t5_tok.unk_token_id in t5_ids  # "日" has no piece (the real T5 has no byte fallback)


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_offsets_align_with_words(kind, clip_tok, t5_tok):
    tok = clip_tok if kind == "clip" else t5_tok
    enc = tok(PROMPT, return_offsets_mapping=True, add_special_tokens=False)
    assert [PROMPT[a:b] for a, b in enc.offset_mapping] == PROMPT.split()


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_tokenizer_save_and_reload(kind, tmp_path):
    tok = build_clip_tokenizer() if kind == "clip" else build_t5_tokenizer()
    tok.save_pretrained(tmp_path)
    reloaded = type(tok).from_pretrained(tmp_path, local_files_only=True)
    via_load_local = load_local(tmp_path)
    assert type(reloaded) is type(tok) and type(via_load_local) is type(tok)
    assert len(reloaded) == len(tok) and reloaded.model_max_length == tok.model_max_length
    texts = [PROMPT, 'The letter "B" in a Tiny cyan star, top-right!', "zyzzyva naïve 日本 🙂 42"]
    for text in texts:
        a = tok(text, return_offsets_mapping=True)
        for other in (reloaded, via_load_local):
            b = other(text, return_offsets_mapping=True)
            assert a.input_ids == b.input_ids
            assert a.offset_mapping == b.offset_mapping
    padded = dict(padding="max_length", max_length=tok.model_max_length, truncation=True)
    assert tok(texts, **padded).input_ids == reloaded(texts, **padded).input_ids


def test_tokenizer_ids_are_the_same_in_every_process(clip_tok, t5_tok):
    """Token ids feed the text encoders' embeddings: they must not depend on hash seeds."""
    code = (
        "from workbench.models.tokenizers import build_clip_tokenizer, build_t5_tokenizer\n"
        "c, t = build_clip_tokenizer(), build_t5_tokenizer()\n"
        f"print(len(c), len(t), c({PROMPT!r}).input_ids, t({PROMPT!r}).input_ids)\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = f"{len(clip_tok)} {len(t5_tok)} {clip_tok(PROMPT).input_ids} {t5_tok(PROMPT).input_ids}"
    assert out.stdout.strip() == here


# ---------------------------------------------------------------------------------------------
# Denoisers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_denoiser_forward(family):
    model = tiny_denoiser(family)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) - FIXED_PARAMETERS.get(family, 0) < 500_000
    out = _forward(model, family)
    assert tuple(out.shape) == EXPECTED_SAMPLE_SHAPES[family]
    assert torch.isfinite(out).all()


def test_tiny_denoiser_architectures():
    sd3 = tiny_denoiser("sd3")
    blocks = sd3.transformer_blocks
    assert len(blocks) >= 2
    assert [b.context_pre_only for b in blocks] == [False] * (len(blocks) - 1) + [True]
    assert sd3.config.qk_norm == "rms_norm"
    assert type(blocks[0].attn.norm_q).__name__ == "RMSNorm"

    sd35 = tiny_denoiser("sd35")
    assert [b.use_dual_attention for b in sd35.transformer_blocks] == [True, True, False]

    flux = tiny_denoiser("flux")
    assert len(flux.transformer_blocks) >= 2 and len(flux.single_transformer_blocks) >= 2
    assert sum(flux.config.axes_dims_rope) == flux.config.attention_head_dim

    unet = tiny_denoiser("unet")
    assert len(unet.config.block_out_channels) >= 2
    assert all(hasattr(b, "attentions") for b in unet.down_blocks)
    assert all(hasattr(b, "attentions") for b in unet.up_blocks)
    cross = [m for name, m in unet.named_modules() if name.endswith("attn2")]
    assert len(cross) == 2 + 1 + 4  # down (1 per level) + mid + up (2 per level)
    assert all(m.is_cross_attention for m in cross)

    unet2d = tiny_denoiser("unet2d")
    assert any(type(m).__name__ == "Attention" for m in unet2d.modules())

    dit = tiny_denoiser("dit")
    assert dit.config.num_embeds_ada_norm == 1000  # DiTPipeline's null class id is 1000
    out_a = dit(**{**example_inputs("dit"), "class_labels": torch.tensor([3])}).sample
    out_b = dit(**{**example_inputs("dit"), "class_labels": torch.tensor([4])}).sample
    assert not torch.equal(out_a, out_b)

    pixart = tiny_denoiser("pixart")
    assert all(b.attn2.is_cross_attention for b in pixart.transformer_blocks)


def test_tiny_denoiser_seed_and_overrides():
    rng_state = torch.random.get_rng_state()
    a, b, c = tiny_denoiser("sd3", seed=0), tiny_denoiser("sd3", seed=0), tiny_denoiser("sd3", seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # caller's RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)

    deeper = tiny_denoiser("sd3", num_layers=4)
    assert len(deeper.transformer_blocks) == 4
    assert TINY_CONFIGS["sd3"]["num_layers"] == 3  # overrides do not leak into the shared config
    with pytest.raises(TypeError):
        tiny_denoiser("sd3", not_a_config_key=1)
    with pytest.raises(ValueError, match="Unknown denoiser family"):
        tiny_denoiser("hunyuan-dit")


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", PIPELINE_FAMILIES)
def test_tiny_pipeline_generates_with_and_without_cfg(family):
    pipe = tiny_pipeline(family)
    height, width = default_size(family)
    prompt = "red circle" if family == "dit" else PROMPT
    no_cfg = _pictures(pipe(**example_call_kwargs(family, prompt=prompt, guidance_scale=1.0)))
    cfg = _pictures(pipe(**example_call_kwargs(family, prompt=prompt, guidance_scale=4.0)))
    again = _pictures(pipe(**example_call_kwargs(family, prompt=prompt, guidance_scale=4.0)))
    for images in (no_cfg, cfg):
        assert images.shape[0] == 1 and images.shape[-3:] == (height, width, 3)  # video: (1, frames, h, w, 3)
        assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(cfg, again)  # seeded generator -> deterministic
    if family != "unet2d":  # DDPM is unconditional
        assert not np.array_equal(no_cfg, cfg)


def test_pipeline_components():
    from diffusers import (
        DDIMScheduler,
        FlowMatchEulerDiscreteScheduler,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    sd3 = tiny_pipeline("sd3")
    assert isinstance(sd3, StableDiffusion3Pipeline)
    assert isinstance(sd3.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(sd3.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(sd3.text_encoder_3, T5EncoderModel)
    assert isinstance(sd3.scheduler, FlowMatchEulerDiscreteScheduler)
    assert sd3.vae.config.latent_channels == 16 and sd3.vae_scale_factor == 2
    assert sd3.text_encoder.config.vocab_size == len(sd3.tokenizer)
    assert sd3.text_encoder_3.config.vocab_size == len(sd3.tokenizer_3)
    # The pipeline's denoiser is exactly tiny_denoiser(family, seed).
    ref = tiny_denoiser("sd3", seed=0).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in sd3.transformer.state_dict().items())

    sd = tiny_pipeline("sd")
    assert isinstance(sd, StableDiffusionPipeline)
    assert isinstance(sd.text_encoder, CLIPTextModel) and isinstance(sd.scheduler, DDIMScheduler)
    assert sd.safety_checker is None and sd.feature_extractor is None

    assert tiny_pipeline("dit").get_label_ids(["red circle", "blue star"]) == [0, 17]
    with pytest.raises(ValueError, match="Unknown pipeline family"):
        tiny_pipeline("unet")


@pytest.mark.parametrize("family", ["sd3", "sd", "flux"])
def test_pipeline_default_size_matches_default_size(family):
    pipe = tiny_pipeline(family)
    images = pipe(PROMPT, num_inference_steps=1, guidance_scale=1.0, output_type="np").images
    assert images.shape[1:3] == default_size(family)


# ---------------------------------------------------------------------------------------------
# save_pretrained -> load_local
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_denoiser_round_trip_is_bitwise_identical(family, tmp_path):
    model = tiny_denoiser(family)
    model.save_pretrained(tmp_path)
    loaded = load_local(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    direct = type(model).from_pretrained(tmp_path, local_files_only=True)
    realign_tensors(direct)
    for other in (loaded, direct):
        assert torch.equal(_forward(model, family), _forward(other, family))


@pytest.mark.parametrize("family", PIPELINE_FAMILIES)
def test_pipeline_round_trip_is_bitwise_identical(family, tmp_path):
    pipe = tiny_pipeline(family)
    kwargs = dict(prompt="red circle" if family == "dit" else PROMPT, guidance_scale=4.0)
    expected = _pictures(pipe(**example_call_kwargs(family, **kwargs)))
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").is_file()
    loaded = load_local(tmp_path)
    assert type(loaded) is type(pipe)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_pictures(loaded(**example_call_kwargs(family, **kwargs))), expected)
    if family == "dit":
        assert loaded.get_label_ids(["blue star"]) == [17] and len(loaded.labels) == len(DIT_ID2LABEL)


def test_load_local_components_and_subfolder(tmp_path):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTokenizer, T5EncoderModel

    tiny_pipeline("sd3").save_pretrained(tmp_path)
    assert isinstance(load_local(tmp_path / "transformer"), SD3Transformer2DModel)
    assert isinstance(load_local(tmp_path, subfolder="vae"), AutoencoderKL)
    assert isinstance(load_local(tmp_path / "text_encoder_3"), T5EncoderModel)
    assert isinstance(load_local(tmp_path / "scheduler"), FlowMatchEulerDiscreteScheduler)
    assert isinstance(load_local(tmp_path / "tokenizer"), CLIPTokenizer)


def test_load_local_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint folder"):
        load_local(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="No checkpoint folder"):
        load_local("stabilityai/stable-diffusion-3.5-medium")  # hub ids are never downloaded

    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        load_local(a_file)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LocalCheckpointError, match=r"model_index\.json.*config\.json.*the folder is empty"):
        load_local(empty)
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(LocalCheckpointError, match=r"expected model_index\.json.*found: notes\.txt"):
        load_local(empty)

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"_class_name": "HyperTransformer9000"}))
    with pytest.raises(LocalCheckpointError, match="Unknown _class_name 'HyperTransformer9000'"):
        load_local(unknown)

    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    with pytest.raises(LocalCheckpointError, match="not a model class"):
        load_local(not_a_model)

    no_class = tmp_path / "no_class"
    no_class.mkdir()
    (no_class / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(LocalCheckpointError, match="neither `_class_name`"):
        load_local(no_class)

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "model_index.json").write_text("{not json")
    with pytest.raises(LocalCheckpointError, match="not valid JSON"):
        load_local(bad_json)

    with pytest.raises(ValueError, match="local_files_only"):
        load_local(tmp_path, local_files_only=False)
    with pytest.raises(FileNotFoundError, match="No subfolder 'unet'"):
        load_local(empty, subfolder="unet")
