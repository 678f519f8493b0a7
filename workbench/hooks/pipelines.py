"""What differs between diffusers pipelines, as far as recording cares: the order of guidance
branches in a batched classifier-free-guidance call, how to find the denoiser, and which text
tokens make up the denoiser's text sequence (so text token axes can carry token strings)."""

from __future__ import annotations

# Most pipelines batch [negative/unconditional, conditional]; DiT puts the class labels first.
_CFG_ORDER = {"DiTPipeline": ("cond", "uncond")}
DEFAULT_CFG_ORDER = ("uncond", "cond")


def cfg_order(pipeline) -> tuple[str, str]:
    for cls in type(pipeline).__mro__:
        if cls.__name__ in _CFG_ORDER:
            return _CFG_ORDER[cls.__name__]
    return DEFAULT_CFG_ORDER


def denoiser_of(pipeline):
    for name in ("transformer", "unet"):
        module = getattr(pipeline, name, None)
        if module is not None:
            return module
    raise TypeError(f"{type(pipeline).__name__} has neither a .transformer nor a .unet to record")


def _tokens(tokenizer, prompt: str, length: int) -> list[str]:
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids)


def text_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]] | None:
    """Token strings of the denoiser's text axis, per prompt, or None where unknown.

    SD3 feeds [CLIP (77, padded) | T5] tokens; FLUX and PixArt feed T5 tokens only; Stable
    Diffusion feeds CLIP tokens. The T5 length is whatever is left of ``text_len``.
    """
    name = type(pipeline).__name__
    tok, tok3 = getattr(pipeline, "tokenizer", None), getattr(pipeline, "tokenizer_3", None)
    try:
        if name.startswith("StableDiffusion3") and tok is not None and tok3 is not None:
            clip_len = tok.model_max_length
            return [_tokens(tok, p, clip_len) + _tokens(tok3, p, text_len - clip_len) for p in prompts]
        if name.startswith("Flux") and getattr(pipeline, "tokenizer_2", None) is not None:
            return [_tokens(pipeline.tokenizer_2, p, text_len) for p in prompts]
        if tok is not None:
            return [_tokens(tok, p, text_len) for p in prompts]
    except (TypeError, ValueError):  # a tokenizer that cannot pad to this length: leave tokens unlabelled
        return None
    return None


def uses_batched_cfg(pipeline, guidance_scale: float) -> bool:
    """Whether a call with this guidance scale batches [uncond, cond] through the denoiser.
    FLUX.1's guidance_scale feeds a distilled guidance embedding instead (no second branch)."""
    if type(pipeline).__name__.startswith("Flux"):
        return False
    if type(pipeline).__name__.startswith("StableDiffusion") and getattr(pipeline.unet.config, "time_cond_proj_dim", None) if hasattr(pipeline, "unet") else False:
        return False  # LCM-style guidance embedding
    return guidance_scale > 1.0


def vae_decode(pipeline, latents):
    """Latents as the denoiser sees them -> images (N, H, W, 3) in [0, 1], the way each pipeline
    decodes: FLUX unpacks its 2x2 token packing first; SD3/FLUX undo a shift and a scale."""
    import torch

    vae = pipeline.vae
    latents = torch.as_tensor(latents, dtype=vae.dtype)
    if type(pipeline).__name__.startswith("Flux"):
        side = int(round((latents.shape[1]) ** 0.5)) * 2 * pipeline.vae_scale_factor
        latents = pipeline._unpack_latents(latents, side, side, pipeline.vae_scale_factor)
    latents = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
    with torch.no_grad():
        images = vae.decode(latents, return_dict=False)[0]
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def vae_encode(pipeline, pixels):
    """Images (N, 3, H, W) in [-1, 1] -> the latents the denoiser is trained on: the inverse of
    ``vae_decode`` (the posterior mean, shifted then scaled)."""
    vae = pipeline.vae
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()


def can_encode_prompts(pipeline) -> bool:
    """Whether ``encode_prompts`` knows this pipeline (Stable Diffusion 1.x/2.x and SD3)."""
    return pipeline is not None and type(pipeline).__name__.startswith("StableDiffusion")


def encode_prompts(pipeline, prompts: list[str], device) -> dict:
    """The denoiser's conditioning kwargs for ``prompts``, through the pipeline's own encoders
    (no guidance: the conditional branch only)."""
    name = type(pipeline).__name__
    if name.startswith("StableDiffusion3"):
        embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}
    if name.startswith("StableDiffusion"):
        embeds, _ = pipeline.encode_prompt(prompts, device, 1, False)
        return {"encoder_hidden_states": embeds}
    raise ValueError(f"workbench does not know how to encode prompts for a {name}")
