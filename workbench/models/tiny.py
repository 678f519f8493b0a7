"""Tiny, randomly initialised, *real* diffusers models and pipelines, built in-process.

Nothing is downloaded: every component is constructed from an explicit config below, text
encoders are tiny ``transformers`` models and tokenizers come from :mod:`workbench.models.tokenizers`.
The classes, module trees, hook sites and call paths are exactly those of the released
checkpoints (SD3/SD3.5, FLUX.1, SD 1.x, PixArt-alpha, DiT, DDPM); only the widths, depths and
vocabularies are shrunk so that a forward pass takes milliseconds on a CPU.

Two entry points:

* :func:`tiny_denoiser` -- one denoiser (transformer or UNet) in eval mode, float32.
* :func:`tiny_pipeline` -- the real diffusers pipeline around a tiny denoiser, a tiny VAE, tiny
  text encoders and real tokenizers, ready to generate at :func:`default_size`.

Sizes shared by all families (see :data:`TINY_CONFIGS`, :data:`TEXT_ENCODER_CONFIGS`,
:data:`VAE_CONFIGS`):

* latents are 16 x 16; every VAE has two levels, so ``vae_scale_factor == 2`` and images are
  32 x 32 (DDPM works in pixel space at 16 x 16);
* transformers have 2 heads x 16 dims (inner dim 32) and patch size 2 -> 8 x 8 = 64 image tokens;
* text encoders: CLIP-L-like (hidden 16), CLIP-G-like (hidden 32), T5-v1.1-like (d_model 64).

Example:
    >>> import torch
    >>> from workbench.models.tiny import tiny_pipeline, example_call_kwargs
    >>> pipe = tiny_pipeline("sd3")
    >>> images = pipe(**example_call_kwargs("sd3", guidance_scale=5.0)).images
    >>> images.shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "FAMILIES",
    "PIPELINE_FAMILIES",
    "TINY_CONFIGS",
    "TEXT_ENCODER_CONFIGS",
    "VAE_CONFIGS",
    "DIT_ID2LABEL",
    "tiny_denoiser",
    "tiny_vae",
    "tiny_pipeline",
    "default_size",
    "example_inputs",
    "example_call_kwargs",
]

# ---------------------------------------------------------------------------------------------
# Denoiser configs
# ---------------------------------------------------------------------------------------------

#: Latent height/width used by every latent-space family (SD3: 128, SD1.5: 64, PixArt-512: 64).
LATENT_SIZE = 16

#: Text encoder widths (the denoisers' text-facing dims below are derived from these).
CLIP_L_HIDDEN = 16  # CLIP ViT-L/14 text tower: 768
CLIP_G_HIDDEN = 32  # OpenCLIP bigG text tower: 1280
T5_D_MODEL = 64  # T5-v1.1-XXL: 4096

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # SD3 / SD3.5-large style MM-DiT (SD3Transformer2DModel).
    "sd3": dict(
        sample_size=LATENT_SIZE,  # default latent size -> default image = 16 * vae_scale_factor
        patch_size=2,  # 8 x 8 = 64 image tokens
        in_channels=16,  # the SD3 VAE has 16 latent channels
        out_channels=16,
        num_layers=3,  # joint blocks; the LAST one is context_pre_only (text stream stops there)
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,  # prompt embeds: [CLIP-L | CLIP-G | zero pad] (77) ++ T5 (256)
        caption_projection_dim=32,  # must equal num_attention_heads * attention_head_dim
        pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,  # pooled CLIP-L ++ pooled CLIP-G = 48
        pos_embed_max_size=24,  # cropped position table, in patches (SD3: 192 for a 64-patch default)
        dual_attention_layers=(),
        qk_norm="rms_norm",  # as in SD3.5 (SD3.0 has None)
    ),
    # SD3.5-medium style MMDiT-X: the first blocks add a second, image-only self-attention (attn2).
    "sd35": dict(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,
        caption_projection_dim=32,
        pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        pos_embed_max_size=24,
        dual_attention_layers=(0, 1),  # SD3.5-medium: (0, ..., 12) of 24 blocks
        qk_norm="rms_norm",
    ),
    # FLUX.1-dev style (FluxTransformer2DModel): double-stream then single-stream blocks.
    "flux": dict(
        patch_size=1,  # patching happens in the pipeline: 2x2 latent patches are packed into channels
        in_channels=64,  # 16 latent channels x 2 x 2 -> 64; 16 x 16 latents -> 8 x 8 = 64 image tokens
        out_channels=None,  # = in_channels
        num_layers=2,  # double-stream (MM-DiT) blocks; FLUX.1: 19
        num_single_layers=2,  # single-stream blocks over [text; image]; FLUX.1: 38
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,  # T5 embeddings only (CLIP only gives the pooled vector)
        pooled_projection_dim=CLIP_L_HIDDEN,  # CLIPTextModel pooler output
        guidance_embeds=True,  # FLUX.1-dev: distilled guidance, `guidance_scale` is an input
        axes_dims_rope=(4, 6, 6),  # RoPE dims per (text id, row, col) axis; must sum to attention_head_dim
    ),
    # SD 1.x style UNet (UNet2DConditionModel) with cross-attention at every level and in the mid block.
    "unet": dict(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # 16x16 -> 8x8
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),  # 8x8 -> 16x16, eating the skips
        block_out_channels=(16, 32),
        layers_per_block=1,  # 1 resnet+attention per down level, 2 per up level (+1 for the skip)
        norm_num_groups=8,
        cross_attention_dim=CLIP_L_HIDDEN,  # CLIP-L last hidden state
        # diffusers naming quirk (issue #2011): for UNet2DConditionModel `attention_head_dim` is
        # the NUMBER of heads (SD1.5: 8). 2 heads -> 8 dims at level 0, 16 dims at level 1 / mid.
        attention_head_dim=2,
    ),
    # DDPM style pixel-space UNet (UNet2DModel), unconditional, self-attention at the low level.
    "unet2d": dict(
        sample_size=16,  # pixels
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=16,  # here it really is the head dim: 32 channels -> 2 heads (also mid block)
    ),
    # DiT (DiTTransformer2DModel), class-conditional, adaLN-Zero.
    "dit": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,  # learned sigma: [eps, variance] as in DiT-XL-2; the pipeline keeps eps
        num_layers=2,
        sample_size=LATENT_SIZE,
        patch_size=2,
        # Number of classes. Must stay 1000: DiTPipeline hard-codes the null (unconditional) class
        # id as 1000, the extra row of the label table.
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    ),
    # PixArt-alpha (PixArtTransformer2DModel): self-attention, cross-attention to T5, adaLN-single.
    "pixart": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,  # learned sigma, as in PixArt-XL-2
        num_layers=2,
        sample_size=LATENT_SIZE,  # != 128 -> no resolution/aspect-ratio micro-conditions
        patch_size=2,
        cross_attention_dim=32,  # = inner dim (captions are projected to it first)
        caption_channels=T5_D_MODEL,
        norm_type="ada_norm_single",
        num_embeds_ada_norm=1000,
        use_additional_conditions=False,
    ),
    # SDXL style UNet: no attention at the top level, cross-attention to [CLIP-L | CLIP-G] hidden
    # states joined on channels, and the "text_time" added conditions (pooled CLIP-G + 6 size ids).
    "sdxl": dict(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        attention_head_dim=(2, 2),  # heads per level (the diffusers naming quirk, as for "unet")
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,  # each of the 6 time ids -> 8 sinusoidal dims
        projection_class_embeddings_input_dim=6 * 8 + CLIP_G_HIDDEN,  # time ids + pooled CLIP-G
    ),
    # AuraFlow (AuraFlowTransformer2DModel): joint blocks then single-stream blocks, register tokens.
    "auraflow": dict(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_D_MODEL,  # UMT5 embeddings
        caption_projection_dim=32,  # must equal the inner dim: captions join the register tokens
        pos_embed_max_size=64,  # position table, in patches (8 x 8 at the default size)
    ),
}

#: Families accepted by :func:`tiny_denoiser`.
FAMILIES: tuple[str, ...] = tuple(TINY_CONFIGS)

_DENOISER_CLASSES: dict[str, str] = {
    "sd3": "SD3Transformer2DModel",
    "sd35": "SD3Transformer2DModel",
    "flux": "FluxTransformer2DModel",
    "unet": "UNet2DConditionModel",
    "unet2d": "UNet2DModel",
    "dit": "DiTTransformer2DModel",
    "pixart": "PixArtTransformer2DModel",
    "sdxl": "UNet2DConditionModel",
    "auraflow": "AuraFlowTransformer2DModel",
}

# ---------------------------------------------------------------------------------------------
# Text encoder and VAE configs
# ---------------------------------------------------------------------------------------------

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

#: ``id2label`` of the tiny DiT pipeline: the 54 (colour, shape) classes of the shapes world.
DIT_ID2LABEL: dict[int, str] = {
    i: f"{colour} {shape}"
    for i, (colour, shape) in enumerate(
        (c, s)
        for c in ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white", "purple")
        for s in ("circle", "square", "triangle", "cross", "diamond", "star")
    )
}

#: Pipeline family -> (diffusers pipeline class, denoiser family, VAE config).
_PIPELINES: dict[str, tuple[str, str, str | None]] = {
    "sd3": ("StableDiffusion3Pipeline", "sd3", "sd3"),
    "sd35": ("StableDiffusion3Pipeline", "sd35", "sd3"),
    "flux": ("FluxPipeline", "flux", "flux"),
    "sd": ("StableDiffusionPipeline", "unet", "sd"),
    "pixart": ("PixArtAlphaPipeline", "pixart", "sd"),
    "dit": ("DiTPipeline", "dit", "sd"),
    "unet2d": ("DDPMPipeline", "unet2d", None),
    "sdxl": ("StableDiffusionXLPipeline", "sdxl", "sd"),
    "auraflow": ("AuraFlowPipeline", "auraflow", "sd"),
}

#: Families accepted by :func:`tiny_pipeline`.
PIPELINE_FAMILIES: tuple[str, ...] = tuple(_PIPELINES)

# Seed offsets, so that the components of one pipeline do not share initial random streams and
# `tiny_pipeline(f, seed).<denoiser>` has exactly the weights of `tiny_denoiser(..., seed)`.
_SEED_OFFSETS = {"denoiser": 0, "vae": 1, "clip_l": 2, "clip_g": 3, "t5": 4}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG inside the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_family(family: str, known: tuple[str, ...], what: str) -> None:
    if family not in known:
        raise ValueError(f"Unknown {what} family {family!r}; expected one of {', '.join(known)}")


def _finalise(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, float32 (cast only if needed: diffusers warns on every ``.to(dtype)``)."""
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module = module.to(dtype=torch.float32)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# Public builders
# ---------------------------------------------------------------------------------------------


def tiny_denoiser(family: str, seed: int = 0, **config_overrides: Any) -> torch.nn.Module:
    """A tiny randomly initialised diffusers denoiser, in eval mode, float32.

    Args:
        family: one of :data:`FAMILIES`: ``"sd3"``, ``"sd35"`` (SD3Transformer2DModel), ``"flux"``
            (FluxTransformer2DModel), ``"unet"`` (UNet2DConditionModel), ``"unet2d"``
            (UNet2DModel), ``"dit"`` (DiTTransformer2DModel), ``"pixart"`` (PixArtTransformer2DModel).
        seed: initialisation seed (the caller's global RNG state is left untouched).
        **config_overrides: replace entries of ``TINY_CONFIGS[family]`` (e.g. ``num_layers=4``);
            unknown names raise the model class's own ``TypeError``.

    Returns:
        The model. Its config is in ``model.config``; :func:`example_inputs` gives matching inputs.

    Example:
        >>> model = tiny_denoiser("sd3", num_layers=2)
        >>> out = model(**example_inputs("sd3")).sample
        >>> tuple(out.shape)
        (1, 16, 16, 16)
    """
    _check_family(family, FAMILIES, "denoiser")
    import diffusers

    cls = getattr(diffusers, _DENOISER_CLASSES[family])
    config = copy.deepcopy(TINY_CONFIGS[family])
    config.update(config_overrides)
    with _seeded(seed + _SEED_OFFSETS["denoiser"]):
        model = cls(**config)
    return _finalise(model)


def tiny_vae(kind: str = "sd", seed: int = 0, **config_overrides: Any) -> torch.nn.Module:
    """A tiny :class:`diffusers.AutoencoderKL` (``kind`` in ``"sd"``, ``"sd3"``, ``"flux"``).

    Example:
        >>> vae = tiny_vae("sd3")
        >>> vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
        (16, 2)
    """
    _check_family(kind, tuple(VAE_CONFIGS), "VAE")
    from diffusers import AutoencoderKL

    config = copy.deepcopy(VAE_CONFIGS[kind])
    config.update(config_overrides)
    with _seeded(seed):
        vae = AutoencoderKL(**config)
    return _finalise(vae)


def _clip_text_encoder(kind: str, tokenizer, seed: int, with_projection: bool) -> torch.nn.Module:
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
    with _seeded(seed):
        model = cls(config)
    return _finalise(model)


def _t5_encoder(tokenizer, seed: int, umt5: bool = False) -> torch.nn.Module:
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
    with _seeded(seed):
        model = model_cls(config)
    return _finalise(model)


def default_size(family: str) -> tuple[int, int]:
    """Default ``(height, width)`` in pixels of a tiny pipeline's images.

    Latent families: ``sample_size (16) * vae_scale_factor (2) = 32``. Other sizes must be
    multiples of ``vae_scale_factor * patch_size = 4`` for SD3 (else ``ValueError``), of
    ``vae_scale_factor * 2 = 4`` for FLUX (else a warning and resizing), and of 8 for SD and
    PixArt (their ``check_inputs`` hard-code ``% 8``, whatever the VAE). SD3 sizes above
    ``pos_embed_max_size * patch_size = 48`` latents (96 px) are refused by the position table.
    DiT and DDPM take no size: they generate at ``sample_size`` (32 px and 16 px).

    Example:
        >>> default_size("sd3"), default_size("unet2d")
        ((32, 32), (16, 16))
    """
    _check_family(family, PIPELINE_FAMILIES, "pipeline")
    if family == "unet2d":
        size = TINY_CONFIGS["unet2d"]["sample_size"]
        return (size, size)
    vae_scale_factor = 2 ** (len(_VAE_COMMON["block_out_channels"]) - 1)
    return (LATENT_SIZE * vae_scale_factor, LATENT_SIZE * vae_scale_factor)


def tiny_pipeline(family: str, seed: int = 0):
    """The real diffusers pipeline of ``family`` with tiny random components, on CPU, float32.

    ============  ===========================  =====================================================
    family        pipeline                     components
    ============  ===========================  =====================================================
    ``sd3``       StableDiffusion3Pipeline     SD3 transformer, 2 x CLIPTextModelWithProjection
                                               (CLIP-L, CLIP-G), T5EncoderModel, 16-ch VAE,
                                               FlowMatchEulerDiscreteScheduler(shift=3)
    ``sd35``      StableDiffusion3Pipeline     as ``sd3`` with dual-attention (MMDiT-X) blocks
    ``flux``      FluxPipeline                 FLUX transformer (guidance-distilled), CLIPTextModel,
                                               T5EncoderModel, 16-ch VAE, dynamic-shift flow matching
    ``sd``        StableDiffusionPipeline      UNet2DConditionModel, CLIPTextModel, 4-ch VAE, DDIM;
                                               no safety checker
    ``pixart``    PixArtAlphaPipeline          PixArt transformer, T5EncoderModel, 4-ch VAE, DPM-Solver++
    ``dit``       DiTPipeline                  DiT transformer, 4-ch VAE, DDIM, :data:`DIT_ID2LABEL`
    ``unet2d``    DDPMPipeline                 UNet2DModel (pixels), DDPMScheduler
    ``sdxl``      StableDiffusionXLPipeline    UNet2DConditionModel (text_time added conditions),
                                               CLIPTextModel + CLIPTextModelWithProjection, 4-ch VAE,
                                               Euler
    ``auraflow``  AuraFlowPipeline             AuraFlow transformer, UMT5EncoderModel, 4-ch VAE,
                                               flow matching
    ============  ===========================  =====================================================

    The denoiser has exactly the weights of ``tiny_denoiser(<denoiser family>, seed)``. Progress
    bars are disabled. :func:`example_call_kwargs` gives arguments that run for each family.

    Notes on the families' quirks:
        * FLUX: the pipeline's default size is a hard-coded ``default_sample_size = 128`` latents
          (256 x 256 px here); this function sets ``pipe.default_sample_size = 16`` on the instance,
          which a reloaded pipeline does not remember: pass ``height``/``width``. Classifier-free
          guidance is ``true_cfg_scale > 1`` plus a ``negative_prompt``; ``guidance_scale`` only
          feeds the distilled guidance embedding.
        * PixArt: ``use_resolution_binning=True`` (the default) only knows sample sizes 32/64/128,
          so pass ``use_resolution_binning=False``; pass ``clean_caption=False`` (needs ``ftfy``).
        * DiT: no prompt; ``class_labels`` are ids < 1000, see ``pipe.get_label_ids(["red circle"])``.

    Example:
        >>> import torch
        >>> pipe = tiny_pipeline("sd")
        >>> out = pipe("a red circle on the left", num_inference_steps=2, guidance_scale=5.0,
        ...            generator=torch.Generator().manual_seed(0), output_type="np")
        >>> out.images.shape
        (1, 32, 32, 3)
    """
    _check_family(family, PIPELINE_FAMILIES, "pipeline")
    import diffusers

    from .tokenizers import build_clip_tokenizer, build_t5_tokenizer

    pipeline_name, denoiser_family, vae_kind = _PIPELINES[family]
    pipeline_cls = getattr(diffusers, pipeline_name)
    denoiser = tiny_denoiser(denoiser_family, seed=seed)
    vae = tiny_vae(vae_kind, seed=seed + _SEED_OFFSETS["vae"]) if vae_kind else None

    if family in ("sd3", "sd35"):
        tokenizer = build_clip_tokenizer()
        tokenizer_2 = build_clip_tokenizer(pad_token="!")  # SD3's bigG tokenizer pads with "!"
        tokenizer_3 = build_t5_tokenizer()
        pipe = pipeline_cls(
            transformer=denoiser,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
            vae=vae,
            text_encoder=_clip_text_encoder("clip_l", tokenizer, seed + _SEED_OFFSETS["clip_l"], True),
            tokenizer=tokenizer,
            text_encoder_2=_clip_text_encoder("clip_g", tokenizer_2, seed + _SEED_OFFSETS["clip_g"], True),
            tokenizer_2=tokenizer_2,
            text_encoder_3=_t5_encoder(tokenizer_3, seed + _SEED_OFFSETS["t5"]),
            tokenizer_3=tokenizer_3,
        )
    elif family == "flux":
        tokenizer = build_clip_tokenizer()
        tokenizer_2 = build_t5_tokenizer()
        pipe = pipeline_cls(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=1000,
                shift=3.0,
                use_dynamic_shifting=True,  # the shift mu depends on the number of image tokens
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=vae,
            text_encoder=_clip_text_encoder("clip_l", tokenizer, seed + _SEED_OFFSETS["clip_l"], False),
            tokenizer=tokenizer,
            text_encoder_2=_t5_encoder(tokenizer_2, seed + _SEED_OFFSETS["t5"]),
            tokenizer_2=tokenizer_2,
            transformer=denoiser,
        )
        pipe.default_sample_size = LATENT_SIZE  # hard-coded to 128 in FluxPipeline.__init__
    elif family == "sd":
        tokenizer = build_clip_tokenizer()
        pipe = pipeline_cls(
            vae=vae,
            text_encoder=_clip_text_encoder("clip_l", tokenizer, seed + _SEED_OFFSETS["clip_l"], False),
            tokenizer=tokenizer,
            unet=denoiser,
            scheduler=diffusers.DDIMScheduler(  # SD1.5's betas
                num_train_timesteps=1000,
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                clip_sample=False,
                set_alpha_to_one=False,
                steps_offset=1,
            ),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif family == "sdxl":
        tokenizer = build_clip_tokenizer()
        tokenizer_2 = build_clip_tokenizer(pad_token="!")  # SDXL's bigG tokenizer pads with "!"
        pipe = pipeline_cls(
            vae=vae,
            text_encoder=_clip_text_encoder("clip_l", tokenizer, seed + _SEED_OFFSETS["clip_l"], False),
            text_encoder_2=_clip_text_encoder("clip_g", tokenizer_2, seed + _SEED_OFFSETS["clip_g"], True),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=denoiser,
            scheduler=diffusers.EulerDiscreteScheduler(  # SDXL's betas
                num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, timestep_spacing="leading",
            ),
            add_watermarker=False,
        )
    elif family == "auraflow":
        tokenizer = build_t5_tokenizer()
        pipe = pipeline_cls(
            tokenizer=tokenizer,
            text_encoder=_t5_encoder(tokenizer, seed + _SEED_OFFSETS["t5"], umt5=True),
            vae=vae,
            transformer=denoiser,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.73),
        )
    elif family == "pixart":
        tokenizer = build_t5_tokenizer()
        pipe = pipeline_cls(
            tokenizer=tokenizer,
            text_encoder=_t5_encoder(tokenizer, seed + _SEED_OFFSETS["t5"]),
            vae=vae,
            transformer=denoiser,
            scheduler=diffusers.DPMSolverMultistepScheduler(
                num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"
            ),
        )
    elif family == "dit":
        pipe = pipeline_cls(
            transformer=denoiser,
            vae=vae,
            scheduler=diffusers.DDIMScheduler(
                num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False
            ),
            id2label=DIT_ID2LABEL,
        )
        # DiTPipeline does not put id2label in its config; registering it makes save_pretrained
        # write it to model_index.json, from where from_pretrained passes it back to __init__.
        pipe.register_to_config(id2label={str(k): v for k, v in DIT_ID2LABEL.items()})
    else:  # "unet2d"
        pipe = pipeline_cls(unet=denoiser, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000))

    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# Example inputs
# ---------------------------------------------------------------------------------------------


def example_inputs(family: str, batch_size: int = 1, text_len: int = 8, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for one forward pass of ``tiny_denoiser(family)`` (random, seeded).

    Output ``.sample`` shapes: sd3/sd35 ``(B, 16, 16, 16)``; flux ``(B, 64, 64)`` (packed tokens);
    unet ``(B, 4, 16, 16)``; unet2d ``(B, 3, 16, 16)``; dit and pixart ``(B, 8, 16, 16)``
    (eps and learned variance).

    Example:
        >>> sorted(example_inputs("unet"))
        ['encoder_hidden_states', 'sample', 'timestep']
    """
    _check_family(family, FAMILIES, "denoiser")
    cfg = TINY_CONFIGS[family]
    b = batch_size
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    t = torch.full((b,), 500.0)
    if family in ("sd3", "sd35"):
        s = cfg["sample_size"]
        return dict(
            hidden_states=randn(b, cfg["in_channels"], s, s),
            encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
            pooled_projections=randn(b, cfg["pooled_projection_dim"]),
            timestep=t,
        )
    if family == "flux":
        h = w = LATENT_SIZE // 2  # packed 2x2 patches
        img_ids = torch.zeros(h, w, 3)
        img_ids[..., 1] = torch.arange(h)[:, None]
        img_ids[..., 2] = torch.arange(w)[None, :]
        return dict(
            hidden_states=randn(b, h * w, cfg["in_channels"]),
            encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
            pooled_projections=randn(b, cfg["pooled_projection_dim"]),
            timestep=t / 1000.0,  # FluxPipeline passes t / 1000
            img_ids=img_ids.reshape(h * w, 3),
            txt_ids=torch.zeros(text_len, 3),
            guidance=torch.full((b,), 3.5),
        )
    if family in ("unet", "sdxl"):
        s = cfg["sample_size"]
        kwargs = dict(
            sample=randn(b, cfg["in_channels"], s, s),
            timestep=t,
            encoder_hidden_states=randn(b, text_len, cfg["cross_attention_dim"]),
        )
        if family == "sdxl":
            kwargs["added_cond_kwargs"] = {"text_embeds": randn(b, CLIP_G_HIDDEN),
                                           "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * b)}
        return kwargs
    if family == "auraflow":
        s = cfg["sample_size"]
        return dict(
            hidden_states=randn(b, cfg["in_channels"], s, s),
            encoder_hidden_states=randn(b, text_len, cfg["joint_attention_dim"]),
            timestep=t / 1000.0,  # AuraFlowPipeline passes t / 1000
        )
    if family == "unet2d":
        s = cfg["sample_size"]
        return dict(sample=randn(b, cfg["in_channels"], s, s), timestep=t)
    if family == "dit":
        s = cfg["sample_size"]
        return dict(
            hidden_states=randn(b, cfg["in_channels"], s, s),
            timestep=t.long(),
            class_labels=torch.arange(b) % len(DIT_ID2LABEL),
        )
    # pixart
    s = cfg["sample_size"]
    return dict(
        hidden_states=randn(b, cfg["in_channels"], s, s),
        encoder_hidden_states=randn(b, text_len, cfg["caption_channels"]),
        timestep=t.long(),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    )


def example_call_kwargs(
    family: str,
    prompt: str = "a red circle on the left",
    num_inference_steps: int = 2,
    guidance_scale: float = 1.0,
    seed: int = 0,
    output_type: str = "np",
) -> dict[str, Any]:
    """Keyword arguments that make ``tiny_pipeline(family)(**kwargs)`` generate one image.

    ``guidance_scale > 1`` turns classifier-free guidance on (for FLUX: ``true_cfg_scale`` with an
    empty ``negative_prompt``, the distilled ``guidance_scale`` embedding stays 3.5; for DiT the
    prompt must be a label of :data:`DIT_ID2LABEL`, e.g. ``"red circle"``, else class 0 is used;
    DDPM is unconditional and ignores prompt and guidance).

    Example:
        >>> example_call_kwargs("pixart", guidance_scale=4.5)["use_resolution_binning"]
        False
    """
    _check_family(family, PIPELINE_FAMILIES, "pipeline")
    common = dict(
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    )
    if family == "unet2d":
        return dict(batch_size=1, **common)
    if family == "dit":
        labels = {v: k for k, v in DIT_ID2LABEL.items()}
        return dict(class_labels=[labels.get(prompt, 0)], guidance_scale=guidance_scale, **common)
    height, width = default_size(family)
    kwargs = dict(prompt=prompt, height=height, width=width, **common)
    if family == "flux":
        kwargs.update(guidance_scale=3.5, true_cfg_scale=guidance_scale)
        if guidance_scale > 1.0:
            kwargs["negative_prompt"] = ""
    else:
        kwargs["guidance_scale"] = guidance_scale
    if family == "pixart":
        kwargs.update(use_resolution_binning=False, clean_caption=False)
    return kwargs
