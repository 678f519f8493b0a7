"""What extraction needs from a model, beyond what ``workbench.load`` gives: its input resolution,
clean images turned into the latents its denoiser works on, prompts turned into conditioning
kwargs, and a fingerprint of its weights (so that a store is never filled by two models).

* Pixel-space models (the reference models, a bare ``UNet2DModel`` on RGB): the latent *is* the
  image in [-1, 1].
* Latent models: the VAE's posterior mean, shifted and scaled as the pipelines do, from
  ``model.info["encode_images"]`` if given, else the pipeline's VAE. The mean, not a sample:
  extraction must be deterministic and the posterior is narrow.
* Conditioning: ``Model.encode`` (the reference models), else the pipeline's ``encode_prompt``
  for Stable Diffusion 1.x/2.x and SD3 pipelines; unconditional denoisers take none.

Example:
    >>> import numpy as np
    >>> model = load_model("tiny-sd")
    >>> image_size(model), latent_channels(model)
    (32, 4)
    >>> images_to_latents(model, np.zeros((2, 32, 32, 3), np.uint8)).shape
    torch.Size([2, 4, 16, 16])
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..hooks.pipelines import can_encode_prompts, encode_prompts, vae_encode


def load_model(spec):
    """A ``workbench.Model`` from a ``Model`` or anything ``workbench.load`` takes (a name, a
    diffusers folder, a saved reference folder)."""
    from workbench.run import load

    return load(spec)


def model_identity(model) -> dict:
    """The model's class, family and a digest of its denoiser's weights.

    The digest reads every tensor's name, shape, sum and a strided sample of its values: cheap
    for a multi-GB model, and any retraining or different checkpoint changes it.
    """
    digest = hashlib.sha1()
    for name, tensor in model.denoiser.state_dict().items():
        flat = tensor.detach().reshape(-1).float()
        sample = flat[:: max(1, flat.numel() // 256)]
        digest.update(f"{name}{tuple(tensor.shape)}{float(flat.double().sum()):.6e}".encode())
        digest.update(sample.numpy().tobytes())
    return {"class": type(model.denoiser).__name__, "family": model.family, "weights_sha1": digest.hexdigest()[:16]}


def _vae(model):
    return getattr(model.pipeline, "vae", None) if model.pipeline is not None else None


def latent_channels(model) -> int:
    if model.latent_shape is not None:
        return int(model.latent_shape[0])
    return int(model.denoiser.config.in_channels)


def image_size(model) -> int:
    """The side in pixels of the images the model was trained on."""
    if model.latent_shape is not None and _is_pixel_space(model):
        return int(model.latent_shape[-1])
    sample = model.denoiser.config.get("sample_size")
    if sample is None:
        raise ValueError(f"{model.name}: cannot tell its image size (no sample_size in the denoiser config)")
    sample = sample[-1] if isinstance(sample, (list, tuple)) else sample
    vae = _vae(model)
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    return int(sample) * factor


def _is_pixel_space(model) -> bool:
    return _vae(model) is None and "encode_images" not in model.info and latent_channels(model) == 3


@torch.no_grad()
def images_to_latents(model, images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(n, H, W, 3)`` -> the denoiser's clean latents ``(n, C, h, w)``."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if "encode_images" in model.info:
        return model.info["encode_images"](pixels)
    if _vae(model) is not None:
        return vae_encode(model.pipeline, pixels)
    if _is_pixel_space(model):
        return pixels
    raise ValueError(
        f"{model.name or 'this model'} denoises {latent_channels(model)}-channel latents but exposes no image "
        "encoder: load it as a pipeline with its VAE, or set model.info['encode_images'] = pixels -> latents"
    )


class Conditioner:
    """Prompts -> the denoiser's conditioning kwargs, encoding each distinct prompt once."""

    def __init__(self, model):
        self.model = model
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self.unconditional = model.encode is None and not can_encode_prompts(model.pipeline)
        text_dims = ("cross_attention_dim", "joint_attention_dim", "caption_channels")
        if self.unconditional and any(model.denoiser.config.get(k) is not None for k in text_dims):
            raise ValueError(
                f"{model.name or 'this model'} needs text conditioning but has neither Model.encode nor a "
                "pipeline with encode_prompt"
            )

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        if self.unconditional:
            return {}
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            encoded = self._encode(missing)
            for row, prompt in enumerate(missing):
                self._cache[prompt] = {k: v[row : row + 1] for k, v in encoded.items()}
        keys = self._cache[prompts[0]].keys()
        return {k: torch.cat([self._cache[p][k] for p in prompts]) for k in keys}

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        model = self.model
        if model.encode is not None:
            return dict(model.encode(prompts))
        return encode_prompts(model.pipeline, prompts, model.denoiser.device)
