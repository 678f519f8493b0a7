"""What extraction needs from a model, beyond what ``workbench.load`` gives: its input resolution,
clean images turned into the latents its denoiser works on, prompts turned into conditioning
kwargs, and a fingerprint of its weights (so that a store is never filled by two models).

* Pixel-space models (the reference models, a bare ``UNet2DModel`` on RGB): the latent *is* the
  image in [-1, 1].
* Latent models: the VAE's posterior mean, shifted and scaled as the pipelines do
  (``Model.encode_images``). The mean, not a sample: extraction must be deterministic and the
  posterior is narrow.
* Conditioning: ``Model.encode``; unconditional denoisers take none.

Every fact comes from ``Model``; this module only caches and fingerprints.

Example:
    >>> import numpy as np
    >>> model = load_model("tiny-sd")
    >>> model.image_size, model.latent_channels
    (32, 4)
    >>> model.encode_images(np.zeros((2, 32, 32, 3), np.uint8)).shape
    torch.Size([2, 4, 16, 16])
"""

from __future__ import annotations

import hashlib

import torch


def load_model(spec):
    """A ``workbench.Model`` from a ``Model`` or anything ``workbench.load`` takes (a name, a
    diffusers folder, a saved reference folder)."""
    from workbench.loading import load

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


class Conditioner:
    """Prompts -> the denoiser's conditioning kwargs, encoding each distinct prompt once."""

    def __init__(self, model):
        self.model = model
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self.unconditional = not model.conditions_on_text
        if self.unconditional and model.site_map.text_attention:
            raise ValueError(
                f"{model.name or 'this model'} needs text conditioning but has no prompt encoder (neither its own "
                "nor a pipeline whose hooks/ declaration can encode prompts)"
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
        return self.model.encode(prompts)
