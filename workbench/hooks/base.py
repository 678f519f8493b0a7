"""The vocabulary every site map speaks.

A *site* is a place inside a denoiser whose tensor can be recorded or changed. Its name is the
module path you see in ``print(model)`` plus a *kind* from a small fixed vocabulary::

    transformer_blocks.3.out.image       block output, image stream
    transformer_blocks.3.attn.probs      joint attention probabilities (query x key)
    transformer_blocks.3.attn.probs.image->text   one block of them (image queries, text keys)
    transformer_blocks.3.attn.k.text     attention keys of the text tokens, as the kernel sees them
    up_blocks.1.skip.0                   the skip tensor up block 1 concatenates first
    latent.in / latent.pred / latent.x0  the latent entering a step, the model's prediction, its x0

A site map (one per architecture family, in this package) only *describes*: which module, which
tensor of its inputs or outputs, what the axes mean, and how a joint token axis splits into image
and text. It knows nothing of torch hooks or storage; ``workbench.capture`` does the hooking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

# Per-call dims of a site's tensor, batch excluded. The capture engine adds sample/branch/step.
STREAM_DIMS = ("token", "channel")  # (batch, tokens, channels) transformer streams
SPATIAL_DIMS = ("channel", "y", "x")  # (batch, channels, height, width) U-Net feature maps
PROBS_DIMS = ("head", "query", "key")  # attention probabilities
QKV_DIMS = ("head", "token", "channel")  # per-head queries/keys/values as the kernel sees them

ATTENTION_BLOCKS = ("image->image", "image->text", "text->image", "text->text")


@dataclass(frozen=True)
class OutputTap:
    """The module's return value, or one element of a returned tuple (``index``)."""

    index: int | None = None


@dataclass(frozen=True)
class InputTap:
    """A keyword argument of the module's forward; ``from_end`` picks an element of a tuple
    argument counted from its end (U-Net up blocks pop skips off the end of their tuple)."""

    kwarg: str
    position: int | None = None  # positional index if the caller passes it positionally
    from_end: int | None = None


@dataclass(frozen=True)
class AttentionTap:
    """Read at the scaled-dot-product-attention call inside an attention module.

    ``role`` is probs, q, k or v; ``segment`` restricts a token axis to one kind (image/text);
    ``block`` picks one query->key block of the probabilities.
    """

    role: Literal["probs", "q", "k", "v"]
    segment: str | None = None
    block: str | None = None
    query: "TokenLayout | None" = None  # the module's whole query axis
    key: "TokenLayout | None" = None  # the module's whole key axis


@dataclass(frozen=True)
class LatentTap:
    """Read in the denoising loop: the latent entering a step, the prediction, or the x0 estimate."""

    what: Literal["in", "pred", "x0"]


Tap = OutputTap | InputTap | AttentionTap | LatentTap


@dataclass(frozen=True)
class TokenLayout:
    """How a token axis is made: an ordered tuple of segments, e.g. ("image", "text") for SD3's
    joint sequence, ("text", "image") for FLUX, ("image",) for U-Net self-attention queries."""

    segments: tuple[str, ...]

    def split(self, total: int, text_len: int) -> list[tuple[str, int, int]]:
        """Segments as (kind, start, stop) for a sequence of ``total`` tokens."""
        if self.segments in (("image",), ("text",)):
            return [(self.segments[0], 0, total)]
        image_len = total - text_len
        if image_len < 0:
            raise ValueError(f"a joint sequence of {total} tokens cannot hold {text_len} text tokens")
        lengths = {"image": image_len, "text": text_len}
        spans, start = [], 0
        for kind in self.segments:
            spans.append((kind, start, start + lengths[kind]))
            start += lengths[kind]
        return spans


@dataclass(frozen=True)
class Site:
    """One recordable place. ``module`` is the path relative to the denoiser ("" for the root)."""

    name: str
    module: str
    tap: Tap
    dims: tuple[str, ...]
    meaning: str
    query_layout: TokenLayout | None = None  # attention: how the query/token axis splits
    key_layout: TokenLayout | None = None  # attention probs: how the key axis splits

    @property
    def kind(self) -> str:
        return self.name[len(self.module) + 1 :] if self.module else self.name


@dataclass
class Geometry:
    """What a site map reads off the denoiser's inputs at each call, so that token axes can be
    labelled: the text length of the joint sequence and the finest image token grid."""

    text_len: int = 0
    grid: tuple[int, int] | None = None  # (rows, cols) of the finest image-token grid
    extra: dict[str, Any] = field(default_factory=dict)

    def image_grid(self, n_tokens: int) -> tuple[int, int]:
        """The (rows, cols) grid of ``n_tokens`` image tokens at some resolution level."""
        if self.grid is None:
            side = int(round(math.sqrt(n_tokens)))
            if side * side != n_tokens:
                raise ValueError(f"cannot lay {n_tokens} image tokens on a grid without the latent's shape")
            return side, side
        rows, cols = self.grid
        factor = math.sqrt(rows * cols / n_tokens)
        grid = (int(round(rows / factor)), int(round(cols / factor)))
        if grid[0] * grid[1] != n_tokens:
            raise ValueError(f"{n_tokens} image tokens do not tile the {rows}x{cols} latent grid")
        return grid


@dataclass(frozen=True)
class SiteMap:
    """Everything workbench knows about one architecture family."""

    family: str
    model_classes: tuple[str, ...]  # diffusers class names this map serves
    enumerate_sites: Callable[[torch.nn.Module], list[Site]]
    read_geometry: Callable[[torch.nn.Module, tuple, dict], Geometry]  # (denoiser, args, kwargs) of its forward
    latent_input: InputTap  # where the denoiser receives the noisy latent
    timestep_input: InputTap  # where it receives the timestep
    description: str = ""
    latent_dims: tuple[str, ...] = SPATIAL_DIMS  # FLUX packs its latent into tokens


def kwarg_or_arg(args: tuple, kwargs: dict, tap: InputTap) -> Any:
    """The value a forward call received for ``tap`` (keyword first, then positional)."""
    if tap.kwarg in kwargs:
        return kwargs[tap.kwarg]
    if tap.position is not None and tap.position < len(args):
        return args[tap.position]
    return None
