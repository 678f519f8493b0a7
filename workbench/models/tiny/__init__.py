"""Tiny, randomly initialised, *real* diffusers models and pipelines, built in-process.

Nothing is downloaded: every component is constructed from an explicit config, text encoders are
tiny ``transformers`` models and tokenizers come from :mod:`workbench.models.tokenizers`. The
classes, module trees, hook sites and call paths are exactly those of the released checkpoints;
only the widths, depths and vocabularies are shrunk so that a forward pass takes milliseconds on
a CPU.

One module per family (``models/tiny/<family>.py``, shaped like ``hooks/<family>.py``) declares
``DENOISERS`` (:class:`TinyDenoiser`: the diffusers class, its tiny config, example inputs) and
``PIPELINES`` (:class:`TinyPipeline`: the pipeline class, its other components, its call
arguments). The registry below collects every module of this package, in name order; adding a
family is adding one module. What the families share (sizes, CLIP/T5 encoders, the AutoencoderKL
configs, seeding) is in :mod:`._parts`.

Two entry points:

* :func:`tiny_denoiser` -- one denoiser (transformer or UNet) in eval mode, float32.
* :func:`tiny_pipeline` -- the real diffusers pipeline around a tiny denoiser, a tiny VAE, tiny
  text encoders and real tokenizers, ready to generate at :func:`default_size`.

Sizes shared by all image families: latents are 16 x 16; every AutoencoderKL has two levels, so
``vae_scale_factor == 2`` and images are 32 x 32 (DDPM works in pixel space at 16 x 16);
transformers have 2 heads x 16 dims (inner dim 32) and patch size 2 -> 8 x 8 = 64 image tokens;
text encoders: CLIP-L-like (hidden 16), CLIP-G-like (hidden 32), T5-v1.1-like (d_model 64).

Example:
    >>> import torch
    >>> from workbench.models.tiny import tiny_pipeline, example_call_kwargs
    >>> pipe = tiny_pipeline("sd3")
    >>> images = pipe(**example_call_kwargs("sd3", guidance_scale=5.0)).images
    >>> images.shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from typing import Any

import torch

from ._parts import (
    LATENT_SIZE,
    SEED_OFFSETS,
    TEXT_ENCODER_CONFIGS,
    VAE_CONFIGS,
    VAE_SCALE_FACTOR,
    TinyDenoiser,
    TinyPipeline,
    build_seeded,
    text_call_kwargs,
)
from .dit import DIT_ID2LABEL

__all__ = [
    "FAMILIES",
    "PIPELINE_FAMILIES",
    "TINY_CONFIGS",
    "TEXT_ENCODER_CONFIGS",
    "VAE_CONFIGS",
    "DIT_ID2LABEL",
    "TinyDenoiser",
    "TinyPipeline",
    "tiny_denoiser",
    "tiny_vae",
    "tiny_pipeline",
    "default_size",
    "example_inputs",
    "example_call_kwargs",
]


def _declarations() -> tuple[dict[str, TinyDenoiser], dict[str, TinyPipeline]]:
    denoisers: dict[str, TinyDenoiser] = {}
    pipelines: dict[str, TinyPipeline] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for registry, declared in ((denoisers, "DENOISERS"), (pipelines, "PIPELINES")):
            for entry in getattr(module, declared, ()):
                if entry.family in registry:
                    raise RuntimeError(f"tiny family {entry.family!r} is declared twice ({declared} in {info.name})")
                registry[entry.family] = entry
    for pipeline in pipelines.values():
        if pipeline.denoiser not in denoisers:
            raise RuntimeError(f"tiny pipeline {pipeline.family!r} names unknown denoiser {pipeline.denoiser!r}")
    return denoisers, pipelines


_DENOISERS, _PIPELINES = _declarations()

#: Families accepted by :func:`tiny_denoiser`.
FAMILIES: tuple[str, ...] = tuple(_DENOISERS)
#: Families accepted by :func:`tiny_pipeline`.
PIPELINE_FAMILIES: tuple[str, ...] = tuple(_PIPELINES)
#: Each denoiser family's tiny config (read-only by convention: builders copy it).
TINY_CONFIGS: dict[str, dict[str, Any]] = {name: d.config for name, d in _DENOISERS.items()}


def _check_family(family: str, known: tuple[str, ...], what: str) -> None:
    if family not in known:
        raise ValueError(f"Unknown {what} family {family!r}; expected one of {', '.join(known)}")


def tiny_denoiser(family: str, seed: int = 0, **config_overrides: Any) -> torch.nn.Module:
    """A tiny randomly initialised diffusers denoiser, in eval mode, float32.

    Args:
        family: one of :data:`FAMILIES` (e.g. ``"sd3"``, ``"flux"``, ``"unet"``, ``"pixart"``).
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

    declared = _DENOISERS[family]
    cls = getattr(diffusers, declared.model_class)
    config = copy.deepcopy(declared.config)
    config.update(config_overrides)
    return build_seeded(lambda: cls(**config), seed + SEED_OFFSETS["denoiser"])


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
    return build_seeded(lambda: AutoencoderKL(**config), seed)


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
    size = _PIPELINES[family].size
    return size if size is not None else (LATENT_SIZE * VAE_SCALE_FACTOR, LATENT_SIZE * VAE_SCALE_FACTOR)


def tiny_pipeline(family: str, seed: int = 0):
    """The real diffusers pipeline of ``family`` with tiny random components, on CPU, float32.

    Each family's module in this package says which pipeline class and components it builds
    (``sd3``/``sd35``: StableDiffusion3Pipeline with CLIP-L, CLIP-G and T5; ``flux``: FluxPipeline;
    ``sd``: StableDiffusionPipeline without safety checker; ``pixart``: PixArtAlphaPipeline;
    ``dit``: DiTPipeline with :data:`DIT_ID2LABEL`; ``unet2d``: DDPMPipeline; ``sdxl``;
    ``auraflow``; ...). The denoiser has exactly the weights of ``tiny_denoiser(<denoiser family>,
    seed)``. Progress bars are disabled. :func:`example_call_kwargs` gives arguments that run for
    each family.

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

    declared = _PIPELINES[family]
    components = declared.components(seed)
    components[declared.denoiser_argument] = tiny_denoiser(declared.denoiser, seed=seed)
    vae_seed = seed + SEED_OFFSETS["vae"]
    if isinstance(declared.vae, str):
        components["vae"] = tiny_vae(declared.vae, seed=vae_seed)
    elif declared.vae is not None:
        components["vae"] = declared.vae(vae_seed)
    pipe = getattr(diffusers, declared.pipeline_class)(**components)
    if declared.finish is not None:
        declared.finish(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    declared = _DENOISERS[family]
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return declared.example_inputs(declared.config, batch_size, text_len, randn, torch.full((batch_size,), 500.0))


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
    declared = _PIPELINES[family]
    height, width = default_size(family)
    call = declared.call_kwargs or text_call_kwargs
    kwargs = call(prompt, guidance_scale, height, width)
    kwargs.update(
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    )
    return kwargs
