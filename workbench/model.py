"""``Model``: a denoiser with what it needs to run, and the one owner of pipeline knowledge.

Whatever runs the model, recording works the same: ``record`` hooks the denoiser instance. What
``Model`` adds is everything the hooks cannot see, behind typed fields and methods:

* prompts -> conditioning (``encode``), the token strings of the denoiser's text axis
  (``text_tokens``) and their character offsets (``token_offsets``);
* images <-> latents (``encode_images``, ``decode_latents``), noising (``add_noise``) and the
  timesteps the scheduler was trained on (``timestep_range``);
* guidance branches: which branches a call batches (``branches``), in which order;
* one denoiser call (``predict``) and whole generations (``generate``, through the diffusers
  pipeline when there is one, else :func:`denoise`, a plain denoiser + scheduler loop).

Facts that differ between pipeline classes are read from their declarations in ``hooks/``
(:class:`workbench.sitemap.PipelineFacts`); nothing here names a model family. Analysis, features,
widgets and the demo ask ``Model`` and never look inside a pipeline themselves.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .chain import RunAnnouncement, announce_run
from .hooks import pipeline_facts_for, site_map_for
from .schedulers import add_noise, resumable, timestep_range
from .sitemap import PipelineFacts, SiteMap


@dataclass
class Model:
    """A denoiser with what it needs to run: ``pipeline`` (may be None) and ``scheduler``.

    Models without a pipeline (the reference models) bring their own pieces: ``prompt_encoder``
    (prompts -> conditioning kwargs), ``decoder`` (latents -> images), ``tokenizer`` and
    ``max_tokens`` (the text axis), ``latent_shape`` and a default ``guidance_scale``.
    """

    denoiser: torch.nn.Module
    pipeline: Any = None
    scheduler: Any = None
    name: str = ""
    prompt_encoder: Callable[[list[str]], dict] | None = None
    decoder: Callable[[torch.Tensor], np.ndarray] | None = None  # latents -> images (N, H, W, 3) in [0, 1]
    image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None  # pixels in [-1, 1] -> latents
    latent_shape: tuple[int, ...] | None = None  # (channels, height, width) of one latent
    tokenizer: Any = None  # the tokenizer of the text axis, for models without a pipeline
    max_tokens: int | None = None  # the length of the text axis, for models without a pipeline
    guidance_scale: float | None = None  # generate()'s default (None: the pipeline's own default)
    generate_defaults: dict = field(default_factory=dict)  # extra pipeline call arguments
    provenance: dict = field(default_factory=dict)  # where the weights come from (a training record)

    def __post_init__(self):
        site_map_for(self.denoiser)  # fail early on an unsupported architecture
        if self.pipeline is not None:
            pipeline_facts_for(self.pipeline)

    # -- what the model is ------------------------------------------------------------------------
    @property
    def site_map(self) -> SiteMap:
        return site_map_for(self.denoiser)

    @property
    def family(self) -> str:
        return self.site_map.family

    @property
    def facts(self) -> PipelineFacts | None:
        return None if self.pipeline is None else pipeline_facts_for(self.pipeline)

    @property
    def conditions_on_text(self) -> bool:
        """Whether ``encode`` can turn prompts into conditioning for this model."""
        return self.prompt_encoder is not None or (self.facts is not None and self.facts.encode_prompts is not None)

    @property
    def latent_channels(self) -> int:
        if self.latent_shape is not None:
            return int(self.latent_shape[0])
        return int(self.denoiser.config.in_channels)

    @property
    def pixel_space(self) -> bool:
        """Whether the latent is the RGB image itself (no VAE, no image encoder)."""
        return self._vae is None and self.image_encoder is None and self.latent_channels == 3

    @property
    def image_size(self) -> int:
        """The side in pixels of the images the model was trained on."""
        if self.latent_shape is not None and self.pixel_space:
            return int(self.latent_shape[-1])
        sample = self.denoiser.config.get("sample_size")
        if sample is None and self.generate_defaults.get("height"):  # a pipeline told what size to draw
            return int(self.generate_defaults["height"])
        if sample is None:
            raise ValueError(f"{self.name}: cannot tell its image size (no sample_size in the denoiser config)")
        sample = sample[-1] if isinstance(sample, (list, tuple)) else sample
        vae = self._vae
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        return int(sample) * factor

    @property
    def timestep_range(self) -> tuple[int, int]:
        """(first, last) timestep the scheduler was trained on, inclusive."""
        if self.scheduler is None:
            raise ValueError(f"{self.name or 'this model'} has no scheduler")
        return timestep_range(self.scheduler)

    @property
    def _vae(self):
        return getattr(self.pipeline, "vae", None) if self.pipeline is not None else None

    # -- text -------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> dict:
        """The denoiser's conditioning kwargs for ``prompts`` (conditional branch, no guidance)."""
        prompts = list(prompts)
        if self.prompt_encoder is not None:
            return dict(self.prompt_encoder(prompts))
        facts = self.facts
        if facts is None or facts.encode_prompts is None:
            raise ValueError(f"{self.name or 'this model'} cannot encode prompts: it has no prompt encoder"
                             + ("" if facts is None else f" ({type(self.pipeline).__name__} declares none in hooks/)"))
        return facts.encode_prompts(self.pipeline, prompts, self.denoiser.device)

    def text_tokens(self, prompts: Sequence[str], text_len: int | None = None) -> list[list[str]] | None:
        """Token strings of the denoiser's text axis, per prompt, or None where unknown.

        ``text_len`` is the length of that axis as the denoiser saw it (pipelines pad to it)."""
        prompts = list(prompts)
        if self.tokenizer is not None:
            return [self.tokenizer.convert_ids_to_tokens(row) for row in self._token_ids(prompts)["input_ids"]]
        if self.pipeline is None or text_len is None:
            return None
        try:
            return self.facts.text_tokens(self.pipeline, prompts, text_len)
        except (TypeError, ValueError):  # a tokenizer that cannot pad to this length: leave tokens unlabelled
            return None

    def text_encoders(self, text_len: int) -> list[tuple[str, int]] | None:
        """Which encoder made each stretch of the denoiser's text axis, as ``[(encoder, positions)]``
        in axis order, where several encoders' tokens are joined on it (SD3: CLIP then T5); None
        where one encoder fills it or it is unknown."""
        if self.pipeline is None or self.facts is None or self.facts.text_encoders is None:
            return None
        return self.facts.text_encoders(self.pipeline, text_len)

    def token_offsets(self, prompts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per prompt, the (start, stop) character span of each token on the text axis ((0, 0) for
        special and padding tokens): what aligns caption words to text tokens."""
        if self.tokenizer is None:
            raise ValueError(f"{self.name or 'this model'}: token offsets are known for models with their own "
                             "tokenizer (the reference models), not through a pipeline's several encoders")
        encoded = self._token_ids(list(prompts), return_offsets_mapping=True)
        return [[tuple(span) for span in row] for row in encoded["offset_mapping"]]

    def _token_ids(self, prompts: list[str], **options) -> dict:
        return self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True, **options)

    # -- guidance ---------------------------------------------------------------------------------
    def branches(self, guidance_scale: float | None) -> tuple[str, ...]:
        """The guidance branches one denoiser call batches at ``guidance_scale``, in batch order."""
        facts = self.facts
        scale = 1.0 if guidance_scale is None else guidance_scale
        if facts is None:
            return ("uncond", "cond") if scale > 1.0 else ("cond",)
        # a guidance embedding (FLUX.1-dev, LCM's time_cond_proj_dim) replaces the second branch
        embedded = facts.guidance != "batched" or self.denoiser.config.get("time_cond_proj_dim") is not None
        return facts.cfg_order if scale > 1.0 and not embedded else ("cond",)

    def branches_in_call(self) -> tuple[str, ...] | None:
        """During a pipeline call: the branches the pipeline batched, as it says itself; None when
        there is no pipeline call to ask."""
        if self.pipeline is None or not hasattr(type(self.pipeline), "do_classifier_free_guidance"):
            return None
        return self.facts.cfg_order if self.pipeline.do_classifier_free_guidance else ("cond",)

    # -- images and latents -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images ``(n, H, W, 3)`` -> the denoiser's clean latents ``(n, C, h, w)``: the image
        itself in pixel space, else the image encoder or the VAE's posterior mean (deterministic),
        shifted and scaled as the pipelines do."""
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if self.image_encoder is not None:
            return self.image_encoder(pixels)
        vae = self._vae
        if vae is not None:
            latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            return ((latents - shift) * vae.config.scaling_factor).float()
        if self.pixel_space:
            return pixels
        raise ValueError(
            f"{self.name or 'this model'} denoises {self.latent_channels}-channel latents but has no image encoder: "
            "load it as a pipeline with its VAE, or pass Model(image_encoder=pixels -> latents)"
        )

    def decode_latents(self, latents) -> np.ndarray:
        """Latents (sample, ...) as the denoiser sees them -> images (sample, H, W, 3) in [0, 1]."""
        latents = torch.as_tensor(np.asarray(latents))
        if self.decoder is not None:
            return np.asarray(self.decoder(latents), dtype=np.float32)
        vae = self._vae
        if vae is None:
            raise ValueError(f"{self.name or 'this model'} has no decoder for its latents")
        latents = latents.to(vae.dtype)
        if self.facts.unpack_latents is not None:
            latents = self.facts.unpack_latents(self.pipeline, latents)
        latents = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
        with torch.no_grad():
            images = vae.decode(latents, return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()

    def add_noise(self, clean: torch.Tensor, timestep: float, noise: torch.Tensor) -> torch.Tensor:
        """``clean`` latents noised to ``timestep`` the way this model's scheduler trains."""
        if self.scheduler is None:
            raise ValueError(f"{self.name or 'this model'} has no scheduler to noise with")
        return add_noise(self.scheduler, clean, noise, timestep)

    # -- running ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, timestep: float, conditioning: dict | None = None,
                prompts: list[str] | None = None) -> torch.Tensor:
        """One denoiser call on ``noisy`` at ``timestep`` (a single step: what probes and
        segmentation on real images run). Recording contexts see it as one step."""
        site_map = self.site_map
        site_map.check_scheduler_time("Model.predict")
        announce_run(self.denoiser, RunAnnouncement(prompts, ("cond",), expected_steps=None))
        call = {
            site_map.latent_input.kwarg: noisy,
            site_map.timestep_input.kwarg: torch.full((noisy.shape[0],), float(timestep)),
            **(conditioning or {}),
        }
        return self.denoiser(**call, return_dict=False)[0]

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        steps: int = 20,
        seed: int | Sequence[int] = 0,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        start_step: int = 0,
        stop_step: int | None = None,
        output: str = "images",
        negative_prompts: str | Sequence[str] | None = None,
        grad: bool = False,
        **pipeline_kwargs,
    ) -> np.ndarray | torch.Tensor:
        """Images as float arrays (sample, height, width, rgb) in [0, 1] (a video pipeline's frames:
        (sample, frame, height, width, rgb)): through the diffusers pipeline if there is one, else
        through :func:`denoise` with the model's own pieces.

        Models run by :func:`denoise` can also run part of a schedule: ``latents`` enter step
        ``start_step`` (default: the seed's noise at step 0), the run stops before ``stop_step``,
        and ``output="latents"`` returns the latents instead of images. Running steps [0, k) and
        then [k, steps) from the returned latents reproduces the full run bit for bit, so a sweep
        computes the steps its variants share once, and an edited latent continues from exactly
        that state.

        ``negative_prompts`` (one string, or one per prompt) replace the empty prompt of the
        unconditional branch of classifier-free guidance (a pipeline gets them as ``negative_prompt``);
        they need a guidance scale > 1.

        ``grad=True`` (with ``output="latents"``, models run by :func:`denoise` only) keeps autograd on
        through the whole loop, so the returned latents carry the graph back to whatever an
        intervention made require grad (attribution patching); the denoiser's own parameters stay
        frozen. Default: no graph, as before.

        ``seed``: one seed for the run, or one per prompt, so that a sample's image depends on its
        own seed, not on the batch it ran in (up to the rounding of batched kernels, ~1e-6), so a
        study's pairs run in chunks stay reproducible."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not isinstance(seed, (int, np.integer)):
            seed = [int(s) for s in seed]
            if len(seed) != len(prompts):
                raise ValueError(f"seed= has {len(seed)} seeds for {len(prompts)} prompts: give one seed, or one per prompt")
        negatives = _negatives(prompts, negative_prompts)
        if grad and output != "latents":
            raise ValueError("grad=True returns latents with their graph: pass output='latents'")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if output not in ("images", "latents"):
            raise ValueError(f"output must be 'images' or 'latents', got {output!r}")
        if self.pipeline is None:
            return self._generate_bare(prompts, steps, seed, guidance_scale, latents, start_step, stop_step, output,
                                       grad, negatives=negatives)
        if start_step or stop_step is not None or output != "images":
            raise ValueError(f"{self.name or 'this model'} runs through {type(self.pipeline).__name__}, which cannot "
                             "start or stop mid-schedule; run its denoiser with workbench.denoise(start_step=...)")
        facts = self.facts
        if not facts.prompt_arg:
            raise ValueError(f"{type(self.pipeline).__name__} is unconditional and takes no prompts: "
                             "load its denoiser alone and run workbench.denoise()")
        kwargs = dict(self.generate_defaults)
        if negatives is not None:
            if "negative_prompt" not in inspect.signature(self.pipeline.__call__).parameters:
                raise ValueError(f"{type(self.pipeline).__name__} takes no negative prompt")
            kwargs["negative_prompt"] = negatives
        if guidance_scale is None:
            guidance_scale = self.guidance_scale
        if guidance_scale is None:  # say the pipeline's own default out loud: branches depend on it
            default = inspect.signature(self.pipeline.__call__).parameters.get("guidance_scale")
            guidance_scale = None if default is None else default.default
        if guidance_scale is not None:
            kwargs["guidance_scale"] = guidance_scale
        _require_guidance(negatives, guidance_scale)
        kwargs.update(pipeline_kwargs)
        if height is not None:
            kwargs["height"] = height
        if width is not None:
            kwargs["width"] = width
        announce_run(self.denoiser, RunAnnouncement(prompts, self.branches(kwargs.get("guidance_scale")),
                                                    expected_steps=steps))
        generator = ([torch.Generator("cpu").manual_seed(s) for s in seed] if isinstance(seed, list)
                     else torch.Generator("cpu").manual_seed(int(seed)))
        if facts.prompt_arg == "class_labels":  # prompts are class names or ids
            prompt_value = [self.pipeline.get_label_ids([p])[0] if isinstance(p, str) else p for p in prompts]
        else:
            prompt_value = prompts
        result = self.pipeline(
            **{facts.prompt_arg: prompt_value}, num_inference_steps=steps, generator=generator, output_type="np", **kwargs
        )
        pictures = getattr(result, "images", None)
        if pictures is None:  # a video pipeline's output holds frames
            pictures = result.frames
        return np.clip(np.asarray(pictures, dtype=np.float32), 0.0, 1.0)

    def _generate_bare(self, prompts: list[str], steps: int, seed: int | list[int], guidance_scale: float | None,
                       latents: torch.Tensor | None, start_step: int, stop_step: int | None, output: str,
                       grad: bool = False, negatives: list[str] | None = None):
        if self.prompt_encoder is None or self.decoder is None or self.latent_shape is None:
            raise ValueError(f"{self.name or 'this model'} has no pipeline and no prompt encoder/decoder; "
                             "run it with workbench.denoise(...)")
        scale = (self.guidance_scale or 1.0) if guidance_scale is None else guidance_scale
        shape = (len(prompts), *self.latent_shape)
        if latents is None:
            if start_step:
                raise ValueError(f"start_step={start_step} needs the latents entering that step (latents=...)")
            if isinstance(seed, list):  # one noise per sample, drawn alone from its seed
                latents = torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator("cpu").manual_seed(s))
                                     for s in seed])
            else:
                latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; {len(prompts)} prompts need {shape}")
        _require_guidance(negatives, scale)
        negative = self.encode(negatives or [""] * len(prompts)) if scale > 1.0 else None
        with torch.set_grad_enabled(grad):
            latents = denoise(self, latents, steps=steps, conditioning=self.encode(prompts), negative=negative,
                              guidance_scale=scale, prompts=prompts, start_step=start_step, stop_step=stop_step,
                              grad=grad)
            if output == "latents":
                return latents
            return np.clip(np.asarray(self.decoder(latents), dtype=np.float32), 0.0, 1.0)


def _require_guidance(negatives: list[str] | None, guidance_scale: float | None) -> None:
    """Negative prompts live in the unconditional branch, which exists only with guidance > 1."""
    if negatives is not None and (guidance_scale is None or guidance_scale <= 1.0):
        raise ValueError(f"negative prompts act through classifier-free guidance: guidance_scale={guidance_scale} "
                         "has no unconditional branch to put them in (use a scale > 1)")


def _negatives(prompts: list[str], negative_prompts) -> list[str] | None:
    """``negative_prompts`` as one string per prompt (a single string is every prompt's)."""
    if negative_prompts is None:
        return None
    negatives = [negative_prompts] * len(prompts) if isinstance(negative_prompts, str) else list(negative_prompts)
    if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
        raise ValueError(f"negative_prompts must be one string or one string per prompt ({len(prompts)}), "
                         f"got {negative_prompts!r}")
    return negatives


def denoise(
    model: Model,
    latents: torch.Tensor,
    *,
    steps: int,
    conditioning: dict | None = None,
    negative: dict | None = None,
    guidance_scale: float = 1.0,
    scheduler=None,
    prompts: list[str] | None = None,
    start_step: int = 0,
    stop_step: int | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """A plain denoising loop: ``latents`` from the first timestep to the last.

    ``conditioning`` holds the denoiser's extra keyword inputs (e.g. ``encoder_hidden_states``);
    with ``negative`` and ``guidance_scale > 1`` both are batched as [negative, conditioning] and
    combined with classifier-free guidance, as the diffusers pipelines do.

    ``start_step`` / ``stop_step`` run only steps [start_step, stop_step) of the ``steps``-step
    schedule: ``latents`` are those entering ``start_step`` and the result is the latents entering
    ``stop_step``. Recorders number the steps as in the full run. Only schedulers whose state is a
    function of the step index can resume (``workbench.schedulers.resumable``).

    The loop runs without autograd unless ``grad=True`` (then the result carries the graph back to
    any tensor that requires grad inside the run, e.g. one an intervention adds).
    """
    with torch.set_grad_enabled(grad):
        return _denoise(model, latents, steps=steps, conditioning=conditioning, negative=negative,
                        guidance_scale=guidance_scale, scheduler=scheduler, prompts=prompts, start_step=start_step,
                        stop_step=stop_step)


def _denoise(model, latents, *, steps, conditioning, negative, guidance_scale, scheduler, prompts, start_step,
             stop_step) -> torch.Tensor:
    if isinstance(model, torch.nn.Module):
        model = Model(denoiser=model, scheduler=scheduler, name=type(model).__name__)
    scheduler = scheduler or model.scheduler
    if scheduler is None:
        raise ValueError("denoise needs a scheduler (pass scheduler=...)")
    denoiser, site_map = model.denoiser, model.site_map
    site_map.check_scheduler_time("workbench.denoise")
    stop = steps if stop_step is None else stop_step
    if not 0 <= start_step <= stop <= steps:
        raise ValueError(f"start_step={start_step}, stop_step={stop_step} must satisfy 0 <= start <= stop <= steps={steps}")
    if (start_step or stop != steps) and not resumable(scheduler):
        raise ValueError(f"{type(scheduler).__name__} keeps a history of past predictions: a run cannot stop or "
                         "resume mid-schedule with it; use an Euler, flow-matching Euler or DDIM scheduler")
    cfg = negative is not None and guidance_scale > 1.0
    announce_run(denoiser, RunAnnouncement(prompts, ("uncond", "cond") if cfg else ("cond",), expected_steps=steps,
                                           first_step=start_step))
    conditioning = conditioning or {}
    if cfg:
        conditioning = {k: _concat(negative[k], v) for k, v in conditioning.items()}
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "set_begin_index"):  # index-keyed schedulers: start counting at start_step
        scheduler.set_begin_index(start_step)
    for t in scheduler.timesteps[start_step:stop]:
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = scheduler.scale_model_input(model_input, t) if hasattr(scheduler, "scale_model_input") else model_input
        call = {
            site_map.latent_input.kwarg: model_input,
            site_map.timestep_input.kwarg: t.expand(model_input.shape[0]),
            **conditioning,
        }
        pred = denoiser(**call, return_dict=False)[0]
        if cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents


def _concat(negative, positive):
    """[negative, positive] along the batch, through nested dicts (SDXL's added_cond_kwargs)."""
    if isinstance(positive, dict):
        return {k: _concat(negative[k], v) for k, v in positive.items()}
    return torch.cat([negative, positive])
