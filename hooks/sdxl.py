"""Stable Diffusion XL: the ``UNet2DConditionModel`` site map (``unet.py``) under a pipeline with
two CLIP text encoders whose hidden states are joined along channels (the text axis is still 77
tokens), plus the added conditions the U-Net takes beside the prompt: the pooled text embedding
of the second encoder and six "time ids" (original size, crop corner, target size).

Adding this file was all SDXL needed: no engine code changed.
"""

from __future__ import annotations

from workbench.sitemap import PipelineFacts


def _sdxl_encode(pipeline, prompts: list[str], device) -> dict:
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    size = pipeline.default_sample_size * pipeline.vae_scale_factor
    projection = pipeline.text_encoder_2.config.projection_dim
    time_ids = pipeline._get_add_time_ids((size, size), (0, 0), (size, size), dtype=embeds.dtype,
                                          text_encoder_projection_dim=projection)
    return {
        "encoder_hidden_states": embeds,
        "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.repeat(len(prompts), 1).to(device)},
    }


SITE_MAPS = ()  # the denoiser is a UNet2DConditionModel: unet.py serves it
PIPELINES = (
    PipelineFacts(
        pipeline_classes=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
        denoiser_attribute="unet",
        encode_prompts=_sdxl_encode,
        description="SDXL: [uncond | cond] batched guidance; text axis CLIP (77), two encoders joined on channels",
    ),
)
