"""The reference models: small text-to-image denoisers trained on the shapes world, shipped with
the package (``workbench/reference/<name>/``), so every study has a real, trained model whose
outputs can be scored against ground truth.

* ``toy-mmdit``: :class:`diffusers.SD3Transformer2DModel` (joint [image | text] attention, the
  last block ``context_pre_only`` as SD3 builds it), rectified-flow trained, sampled with
  :class:`diffusers.FlowMatchEulerDiscreteScheduler` exactly as SD3 (timestep = sigma * 1000).
* ``toy-unet``: :class:`diffusers.UNet2DConditionModel` with cross-attention in its down/up
  blocks and skip connections, trained with the same rectified-flow objective and sampler.

Both work in pixel space (32 x 32 RGB in [-1, 1], no VAE) and read prompts through a tiny real
:class:`transformers.CLIPTextModel` with the project's CLIP tokenizer, trained jointly with the
denoiser (see ``docs/reference_models.md`` for why).

This module holds what defines a model (its configs: :data:`SPECS`), builds fresh ones for
training (:func:`build_components`), turns prompts into conditioning (:func:`encode_prompts`) and
loads the shipped weights (:func:`load_reference`). Training lives in ``workbench.models.train``.

Example:
    >>> import workbench as wb
    >>> model = wb.load("toy-mmdit")                      # doctest: +SKIP
    >>> images = model.generate(["a red circle on the left"], steps=20, seed=0)   # doctest: +SKIP
    >>> images.shape                                      # doctest: +SKIP
    (1, 32, 32, 3)
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "NAMES",
    "SPECS",
    "ReferenceSpec",
    "Components",
    "build_components",
    "encode_prompts",
    "text_tokens",
    "reference_dir",
    "load_components",
    "load_reference",
]

NAMES: tuple[str, ...] = ("toy-mmdit", "toy-unet")

IMAGE_SIZE = 32  # pixels; the shapes world's native size
TEXT_HIDDEN = 64  # width of the text encoder; the denoisers' text-facing dims equal it
MAX_TOKENS = 24  # tokenizer length: two-object captions fit (<= 22 tokens with specials), and
# a short text axis keeps the joint sequence (256 image + 24 text tokens) cheap on a CPU.

#: The text encoder (a real CLIP text tower, just small). Vocabulary size and special ids are
#: filled in from the tokenizer.
TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    hidden_size=TEXT_HIDDEN,
    intermediate_size=4 * TEXT_HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",
    attention_dropout=0.0,
)

#: Rectified flow sampler. shift=1: SD3 shifts sigmas towards noise (3.0) for 1024 px images,
#: where more pixels keep more signal at a given noise level; 32 px images need no shift.
SCHEDULER_CONFIG: dict[str, Any] = dict(num_train_timesteps=1000, shift=1.0)


@dataclass(frozen=True)
class ReferenceSpec:
    """Everything that defines one reference model and its training run."""

    name: str
    denoiser_class: str  # a diffusers class name
    denoiser_subfolder: str  # "transformer" or "unet", as in the diffusers pipelines
    denoiser_config: dict
    guidance_scale: float  # default classifier-free guidance for generation
    # Training (see workbench.models.train for how each is used).
    steps: int
    batch_size: int
    lr: float
    warmup: int = 100
    ema_decay: float = 0.995
    caption_dropout: float = 0.1  # share of empty prompts, so that guidance has an unconditional branch
    two_object_fraction: float = 0.25  # share of two-object scenes (the rest have one object)
    glyph_fraction: float = 0.5  # per object: glyph rather than shape
    # Redraw training scenes that show a held-out (name, colour, position) triple
    # (workbench.data.holdout), so the quality benchmark can test composition. Rounds 1-4 of the
    # shipped weights predate this and saw every triple.
    exclude_held_out: bool = True
    extra: dict = field(default_factory=dict)


SPECS: dict[str, ReferenceSpec] = {
    "toy-mmdit": ReferenceSpec(
        name="toy-mmdit",
        denoiser_class="SD3Transformer2DModel",
        denoiser_subfolder="transformer",
        denoiser_config=dict(
            sample_size=IMAGE_SIZE,
            # 8 x 8 = 64 image tokens. Patch 2 (256 tokens) trained ~3x slower per step on the shared
            # CPU and got only 1150 steps in the time budget: too few to learn shapes (see docs).
            patch_size=4,
            in_channels=3,  # pixel space: RGB
            out_channels=3,
            num_layers=4,  # joint blocks; the last is context_pre_only (SD3 does this itself)
            attention_head_dim=32,
            num_attention_heads=3,  # width 96
            joint_attention_dim=TEXT_HIDDEN,  # encoder_hidden_states = CLIP last hidden state
            caption_projection_dim=96,  # = heads * head dim
            pooled_projection_dim=TEXT_HIDDEN,  # pooled_projections = CLIP pooled output
            pos_embed_max_size=8,  # = the patch grid: no cropping of the position table
            qk_norm="rms_norm",  # as SD3.5: keeps attention logits tame at a high learning rate
        ),
        guidance_scale=3.0,
        steps=3000,
        batch_size=32,
        lr=1e-3,
    ),
    "toy-unet": ReferenceSpec(
        name="toy-unet",
        denoiser_class="UNet2DConditionModel",
        denoiser_subfolder="unet",
        denoiser_config=dict(
            sample_size=IMAGE_SIZE,
            in_channels=3,
            out_channels=3,
            # 32 -> 16 -> 8 px. No cross-attention at 32 px (1024 queries would dominate the cost;
            # SD keeps it at every level, but the layout is decided at the coarser ones).
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            # Narrow at 32 px, where convolutions cost the most: (32, 64, 96) trained at ~1-3 s a
            # step on the shared CPU and got only 850 steps in the time budget.
            block_out_channels=(16, 32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=TEXT_HIDDEN,  # CLIP last hidden state
            # diffusers quirk: for UNet2DConditionModel attention_head_dim is the number of heads.
            attention_head_dim=4,
        ),
        guidance_scale=3.0,
        steps=1300,
        batch_size=32,
        lr=1e-3,
    ),
}


@dataclass
class Components:
    """A reference model's parts: tokenizer, text encoder, denoiser, scheduler."""

    spec: ReferenceSpec
    tokenizer: Any
    text_encoder: torch.nn.Module
    denoiser: torch.nn.Module
    scheduler: Any

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype = torch.float16, info: dict | None = None) -> Path:
        """Write the diffusers/transformers folders (``tokenizer``, ``text_encoder``, the denoiser,
        ``scheduler``) and ``reference.json`` (spec and training record). Weights are stored as
        ``dtype`` (float16 halves the committed size); loading casts back to float32."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        copy.deepcopy(self.text_encoder).to(dtype).save_pretrained(folder / "text_encoder")
        copy.deepcopy(self.denoiser).to(dtype).save_pretrained(folder / self.spec.denoiser_subfolder)
        self.scheduler.save_pretrained(folder / "scheduler")
        record = {"name": self.spec.name, "guidance_scale": self.spec.guidance_scale, "max_tokens": MAX_TOKENS}
        record.update(info or {})
        (folder / "reference.json").write_text(json.dumps(record, indent=2, default=str))
        return folder


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tokenizer():
    """The project's CLIP tokenizer, padding/truncating to :data:`MAX_TOKENS`."""
    from workbench.models.tokenizers import build_clip_tokenizer

    return build_clip_tokenizer(model_max_length=MAX_TOKENS)


def build_components(name: str, seed: int = 0, spec: ReferenceSpec | None = None, **denoiser_overrides) -> Components:
    """Freshly initialised components of reference model ``name`` (for training).

    ``denoiser_overrides`` replace entries of the spec's denoiser config (tests use a tinier one).
    """
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = spec or SPECS[_check_name(name)]
    tokenizer = build_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # the real id: CLIP pools at the first eos token
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_ENCODER_CONFIG,
    )
    with _seeded(seed):
        text_encoder = CLIPTextModel(text_config)
    with _seeded(seed + 1):
        denoiser = getattr(diffusers, spec.denoiser_class)(**{**spec.denoiser_config, **denoiser_overrides})
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    return Components(spec, tokenizer, text_encoder, denoiser, scheduler)


def _tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompts(components_or_model, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The denoiser's conditioning kwargs for ``prompts``.

    SD3: ``encoder_hidden_states`` (CLIP last hidden state, batch x MAX_TOKENS x 64) and
    ``pooled_projections`` (CLIP pooled output, at the first end-of-text token). U-Net:
    ``encoder_hidden_states`` only, as in Stable Diffusion 1.x.
    """
    c = components_or_model
    ids = _tokenize(c.tokenizer, prompts)
    out = c.text_encoder(input_ids=ids.to(c.text_encoder.device))
    cond = {"encoder_hidden_states": out.last_hidden_state}
    if c.spec.denoiser_class == "SD3Transformer2DModel":
        cond["pooled_projections"] = out.pooler_output
    return cond


def text_tokens(tokenizer, prompts: list[str]) -> list[list[str]]:
    """Token strings of the text axis, padded to the encoder length (what the denoiser sees)."""
    ids = _tokenize(tokenizer, prompts)
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]


def to_images(latents: torch.Tensor) -> np.ndarray:
    """Pixel-space latents in [-1, 1] (N, 3, H, W) -> float images (N, H, W, 3) in [0, 1]."""
    images = (latents.detach().float().clamp(-1, 1) + 1) / 2
    return images.permute(0, 2, 3, 1).cpu().numpy()


def reference_dir(name: str) -> Path:
    """The shipped folder of reference model ``name`` (package data ``workbench/reference/<name>``)."""
    _check_name(name)
    root = importlib.resources.files("workbench") / "reference" / name
    # Package data installed as plain files (wheel or editable install): a real path.
    return Path(str(root))


@contextlib.contextmanager
def _quiet_transformers_loading():
    """No "Loading weights" progress bar for a 0.2M-parameter text encoder; restores the setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_components(folder: str | Path, name: str | None = None) -> Components:
    """Load a saved reference folder (from :meth:`Components.save_pretrained`), float32, eval mode,
    never touching the network."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if not (folder / "reference.json").exists():
        raise FileNotFoundError(f"no reference model at {folder} (reference.json missing); train it with "
                                "python -m workbench.models.train <name>")
    record = json.loads((folder / "reference.json").read_text())
    spec = SPECS[_check_name(name or record["name"])]
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    with _quiet_transformers_loading():
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=torch.float32)
    cls = getattr(diffusers, spec.denoiser_class)
    # low_cpu_mem_usage=False says out loud what diffusers falls back to without `accelerate`
    # (it otherwise prints an install suggestion on every load)
    denoiser = cls.from_pretrained(folder / spec.denoiser_subfolder, local_files_only=True, torch_dtype=torch.float32,
                                   low_cpu_mem_usage=False)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    for module in (text_encoder, denoiser):
        module.float().eval().requires_grad_(False)
    return Components(spec, tokenizer, text_encoder, denoiser, scheduler)


def load_reference(name: str, folder: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """The shipped reference model ``name`` as a :class:`workbench.model.Model`, with its prompt
    encoder, pixel-space decoder, tokenizer, default guidance scale and training record
    (``provenance``: steps, time, loss). ``dtype=torch.float64`` casts the text encoder and the
    denoiser (numerical checks: what float32 rounding hides)."""
    from workbench.model import Model

    folder = Path(folder) if folder is not None else reference_dir(name)
    c = load_components(folder, name)
    if dtype != torch.float32:
        for module in (c.text_encoder, c.denoiser):
            module.to(dtype)
    record = json.loads((folder / "reference.json").read_text())

    @torch.no_grad()
    def encode(prompts):
        return encode_prompts(c, list(prompts))

    return Model(
        denoiser=c.denoiser,
        scheduler=c.scheduler,
        name=name,
        prompt_encoder=encode,
        decoder=to_images,
        latent_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        tokenizer=c.tokenizer,
        max_tokens=MAX_TOKENS,
        guidance_scale=float(record.get("guidance_scale", c.spec.guidance_scale)),
        provenance=record,
    )


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(NAMES)}")
    return name
