"""What every tiny family shares: sizes, the text encoders and VAEs several families reuse, the
seeding rules, and the two declarations (:class:`TinyDenoiser`, :class:`TinyPipeline`) that a
family module fills in.

A family module (``models/tiny/<family>.py``, shaped like ``hooks/<family>.py``) declares
``DENOISERS`` and/or ``PIPELINES``; :mod:`workbench.models.tiny` collects them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

#: Latent height/width used by every latent-space family (SD3: 128, SD1.5: 64, PixArt-512: 64).
LATENT_SIZE = 16

#: Text encoder widths (the denoisers' text-facing dims are derived from these).
CLIP_L_HIDDEN = 16  # CLIP ViT-L/14 text tower: 768
CLIP_G_HIDDEN = 32  # OpenCLIP bigG text tower: 1280
T5_D_MODEL = 64  # T5-v1.1-XXL: 4096

#: ``transformers`` configs (vocab sizes and special ids are filled in from the tokenizers).
TEXT_ENCODER_CONFIGS: dict[str, dict[str, Any]] = {
    # CLIP ViT-L/14 text tower (SD1.x, SD3 text_encoder, FLUX text_encoder).
    "clip_l": dict(
        hidden_size=CLIP_L_HIDDEN,
        intermediate_size=4 * CLIP_L_HIDDEN,
        num_hidden_layers=2,  # SD3 reads hidden_states[-2] (penultimate layer)
        num_attention_heads=2,
        projection_dim=CLIP_L_HIDDEN,  # text_embeds (pooled) size for CLIPTextModelWithProjection
        max_position_embeddings=77,
        hidden_act="quick_gelu",
    ),
    # OpenCLIP bigG text tower (SD3 text_encoder_2).
    "clip_g": dict(
        hidden_size=CLIP_G_HIDDEN,
        intermediate_size=4 * CLIP_G_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=CLIP_G_HIDDEN,
        max_position_embeddings=77,
        hidden_act="gelu",
    ),
    # T5-v1.1 encoder (SD3 text_encoder_3, FLUX text_encoder_2, PixArt text_encoder).
    "t5": dict(
        d_model=T5_D_MODEL,
        d_kv=16,
        d_ff=2 * T5_D_MODEL,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",  # T5 v1.1
        dropout_rate=0.0,
    ),
}

_VAE_COMMON: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),  # one downsample
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16),  # two levels -> vae_scale_factor = 2 ** (2 - 1) = 2
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=2 * LATENT_SIZE,
)

#: Pixels per latent cell of every tiny VAE.
VAE_SCALE_FACTOR = 2 ** (len(_VAE_COMMON["block_out_channels"]) - 1)

#: AutoencoderKL configs. Scaling/shift factors are those of the released VAEs.
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    # SD 1.x / PixArt / DiT: 4 latent channels.
    "sd": dict(_VAE_COMMON, latent_channels=4, scaling_factor=0.18215),
    # SD3: 16 latent channels, no quant convs.
    "sd3": dict(
        _VAE_COMMON,
        latent_channels=16,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ),
    # FLUX.1: 16 latent channels, no quant convs.
    "flux": dict(
        _VAE_COMMON,
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ),
}

# Seed offsets, so that the components of one pipeline do not share initial random streams and
# `tiny_pipeline(f, seed).<denoiser>` has exactly the weights of `tiny_denoiser(..., seed)`.
SEED_OFFSETS = {"denoiser": 0, "vae": 1, "clip_l": 2, "clip_g": 3, "t5": 4, "llm": 5, "llm_2": 6}


@dataclass(frozen=True)
class TinyDenoiser:
    """One tiny denoiser family.

    ``example_inputs(config, batch_size, text_len, randn, t)`` returns keyword arguments for one
    forward pass (``randn(*shape)`` draws from the caller's seeded generator; ``config`` is this
    family's ``config``; ``t`` is the timestep 500 of a 1000-step schedule, one per sample).
    """

    family: str
    model_class: str  # the diffusers class name
    config: dict[str, Any]
    example_inputs: Callable[[dict[str, Any], int, int, Callable[..., torch.Tensor], torch.Tensor], dict[str, Any]]


@dataclass(frozen=True)
class TinyPipeline:
    """One tiny pipeline family.

    ``components(denoiser, vae, seed)`` returns the pipeline's constructor arguments other than
    the denoiser and the VAE (text encoders, tokenizers, scheduler, ...); ``call_kwargs(prompt,
    guidance_scale, height, width)`` the family's arguments of one generation (the common
    ``num_inference_steps``, ``generator`` and ``output_type`` are added by the caller).
    """

    family: str
    pipeline_class: str  # the diffusers class name
    denoiser: str  # a TinyDenoiser family
    components: Callable[[int], dict[str, Any]]
    vae: str | Callable[[int], torch.nn.Module] | None  # a VAE_CONFIGS kind, a builder, or none
    denoiser_argument: str = "transformer"
    call_kwargs: Callable[[str, float, int, int], dict[str, Any]] | None = None
    size: tuple[int, int] | None = None  # default (height, width); None: LATENT_SIZE * VAE_SCALE_FACTOR
    finish: Callable[[Any], None] | None = None  # fixes applied to the built pipeline instance


def text_call_kwargs(prompt: str, guidance_scale: float, height: int, width: int) -> dict[str, Any]:
    """The usual text-to-image call: prompt, size and ``guidance_scale`` (> 1 turns on CFG)."""
    return dict(prompt=prompt, height=height, width=width, guidance_scale=guidance_scale)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG inside the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def finalise(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, float32 (cast only if needed: diffusers warns on every ``.to(dtype)``)."""
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module = module.to(dtype=torch.float32)
    return module.eval()


def build_seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``factory()`` under ``seed``, in eval mode, float32."""
    with seeded(seed):
        module = factory()
    return finalise(module)


def clip_text_encoder(kind: str, tokenizer, seed: int, with_projection: bool) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        # The real id (not the legacy 2): CLIP pools at the first eos token.
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_ENCODER_CONFIGS[kind],
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return build_seeded(lambda: cls(config), seed)


def t5_encoder(tokenizer, seed: int, umt5: bool = False) -> torch.nn.Module:
    """A T5-v1.1 encoder (SD3, FLUX, PixArt), or with ``umt5`` its UMT5 sibling (AuraFlow)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **TEXT_ENCODER_CONFIGS["t5"],
    )
    return build_seeded(lambda: model_cls(config), seed)


#: Qwen3 causal LM, the text encoder of FLUX.2 Klein and Z-Image (Klein 4B: Qwen3-4B, hidden 2560).
QWEN3_HIDDEN = 16
QWEN3_CONFIG: dict[str, Any] = dict(
    hidden_size=QWEN3_HIDDEN,
    intermediate_size=2 * QWEN3_HIDDEN,
    num_hidden_layers=3,  # Klein stacks three hidden states (layers 9, 18, 27 of 36); here 1, 2, 3
    num_attention_heads=2,
    num_key_value_heads=1,  # grouped-query attention, as in Qwen3
    head_dim=8,
    max_position_embeddings=512,
)


def qwen3_causal_lm(tokenizer, seed: int) -> torch.nn.Module:
    """A tiny ``Qwen3ForCausalLM`` (the pipelines read its hidden states, not its logits)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, **QWEN3_CONFIG,
    )
    return build_seeded(lambda: Qwen3ForCausalLM(config), seed)


#: Gemma 2, the text encoder of Sana and Lumina 2 (Gemma-2-2B: hidden 2304).
GEMMA2_HIDDEN = 16


def gemma2_model(tokenizer, seed: int) -> torch.nn.Module:
    """A tiny ``Gemma2Model`` (Sana reads its last hidden state, Lumina 2 its penultimate one)."""
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=GEMMA2_HIDDEN, intermediate_size=2 * GEMMA2_HIDDEN,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
        sliding_window=64, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return build_seeded(lambda: Gemma2Model(config), seed)


def eight_x_vae(kind: str, seed: int) -> torch.nn.Module:
    """A four-level (8x) AutoencoderKL of ``VAE_CONFIGS[kind]``, for pipelines that hard-code
    ``vae_scale_factor = 8`` instead of reading the VAE (HunyuanDiT, Lumina 2): with it their 16 x 16
    latents are 128 px images."""
    from diffusers import AutoencoderKL

    config = dict(VAE_CONFIGS[kind], block_out_channels=(8, 8, 16, 16), sample_size=8 * LATENT_SIZE,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return build_seeded(lambda: AutoencoderKL(**config), seed)
