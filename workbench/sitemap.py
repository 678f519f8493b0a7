"""The vocabulary every site map speaks.

A *site* is a place inside a denoiser whose tensor can be recorded or changed. Its name is the
module path you see in ``print(model)`` plus a *kind* from a small fixed vocabulary::

    transformer_blocks.3.out.image       block output, image stream
    transformer_blocks.3.attn.probs      joint attention probabilities (query x key)
    transformer_blocks.3.attn.probs.image->text   one block of them (image queries, text keys)
    transformer_blocks.3.attn.k.text     attention keys of the text tokens, as the kernel sees them
    up_blocks.1.skip.0                   the skip tensor up block 1 concatenates first
    latent.in / latent.pred / latent.x0  the latent entering a step, the model's prediction, its x0

A site map (one per architecture family, declared in the top-level ``hooks/`` folder, installed as
``workbench.hooks``) only *describes*: which module, which tensor of its inputs or outputs, what the
axes mean, and how a joint token axis splits into image and text. Pipeline facts (guidance branch
order, prompt argument, text tokens, prompt encoding, latent packing) are declared beside it as
:class:`PipelineFacts`. Neither knows of torch hooks or storage: ``workbench.capture`` does the
hooking and ``workbench.model.Model`` answers pipeline questions by reading these declarations.

This module is the vocabulary those declarations are written in, and the builders they share.
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

# The site-name grammar, owned here and parsed only by ``parse_site``:
#   <module>.out[.<stream>]          a module's output (one stream of a joint block's output)
#   <module>.probs[.<q>-><k>]        attention probabilities (one query->key block of them)
#   <module>.{q,k,v}[.<stream>]      queries / keys / values as the attention kernel sees them
#   <module>.skip.<j> / .backbone.<j>  what an up block concatenates, and what it is joined to
#   latent.in / latent.pred / latent.x0   the denoising loop's latent, prediction and x0
STREAMS = ("image", "text", "video")  # token kinds a stream, segment or block can name
SITE_KINDS = ("out", "probs", "q", "k", "v", "skip", "backbone", "latent.in", "latent.pred", "latent.x0")

# Token kinds laid on a grid, with the grid's axes. A family declares which one its visual tokens
# are through the segments of its TokenLayouts ("video" for a video denoiser's (frame, y, x)
# tokens); the engine labels every kind listed here the same way, so no family is special-cased.
GRID_AXES = {"image": ("y", "x"), "video": ("frame", "y", "x")}
# Order of kinds in block names and decompositions: visual kinds first, text last.
KIND_ORDER = ("image", "video", "text")


def blocks_of(kinds) -> tuple[str, ...]:
    """The query->key blocks among ``kinds`` in :data:`KIND_ORDER` (image->image, image->text,
    text->image, text->text for an image model; video->video, video->text, ... for a video model)."""
    ordered = [k for k in KIND_ORDER if k in set(kinds)]
    return tuple(f"{q}->{k}" for q in ordered for k in ordered)


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
    joint sequence, ("text", "image") for FLUX, ("image",) for U-Net self-attention queries,
    ("text", "video") for CogVideoX. A joint axis holds text and one visual kind (image or video)."""

    segments: tuple[str, ...]

    def __post_init__(self):
        unknown = [s for s in self.segments if s not in KIND_ORDER]
        if unknown or len(set(self.segments)) != len(self.segments) or (len(self.segments) > 1 and "text" not in self.segments):
            raise ValueError(f"token layout {self.segments}: segments are distinct kinds among {KIND_ORDER}, "
                             "and a joint layout is text plus one visual kind")

    @property
    def visual(self) -> str | None:
        """The grid kind of this axis ("image" or "video"), None for text only."""
        return next((s for s in self.segments if s in GRID_AXES), None)

    def split(self, total: int, text_len: int) -> list[tuple[str, int, int]]:
        """Segments as (kind, start, stop) for a sequence of ``total`` tokens."""
        if len(self.segments) == 1:
            return [(self.segments[0], 0, total)]
        visual_len = total - text_len
        if visual_len < 0:
            raise ValueError(f"a joint sequence of {total} tokens cannot hold {text_len} text tokens")
        lengths = {self.visual: visual_len, "text": text_len}
        spans, start = [], 0
        for kind in self.segments:
            spans.append((kind, start, start + lengths[kind]))
            start += lengths[kind]
        return spans


@dataclass(frozen=True)
class SiteName:
    """A site name taken apart (:func:`parse_site`).

    ``module``: the module path the name starts with ("" for latents). ``kind``: one of
    :data:`SITE_KINDS`. ``block``: the query->key block of a probabilities site ("image->text"),
    else None. ``stream``: the token kind of an ``out``/``q``/``k``/``v`` site that keeps one
    ("image", "text", "video"), else None. ``index``: j of ``skip.j`` / ``backbone.j``, else None.
    """

    name: str
    module: str
    kind: str
    block: str | None = None
    stream: str | None = None
    index: int | None = None

    def as_attrs(self) -> dict[str, str | int]:
        """The parts as attributes a recording's variables carry (netCDF/zarr-safe: no None)."""
        return {"site_module": self.module, "site_kind": self.kind, "site_block": self.block or "",
                "site_stream": self.stream or "", "site_index": -1 if self.index is None else self.index}


_GRAMMAR = ("<module>.out[.<stream>], <module>.probs[.<query>-><key>], <module>.q|k|v[.<stream>], "
            "<module>.skip.<j>, <module>.backbone.<j>, latent.in|pred|x0")


def parse_site(name: str) -> SiteName:
    """Take a site name apart: module, kind, block, stream (and the index of skip/backbone).

    >>> parse_site("transformer_blocks.3.attn.probs.image->text")
    SiteName(name='transformer_blocks.3.attn.probs.image->text', module='transformer_blocks.3.attn', kind='probs', block='image->text', stream=None, index=None)

    The one parser of the grammar above; a malformed name raises ``ValueError`` saying what is
    wrong and what is valid. The module part may be a glob (``transformer_blocks.*``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a site name must be a non-empty string, got {name!r}; valid forms: {_GRAMMAR}")

    def bad(why: str) -> ValueError:
        return ValueError(f"malformed site name {name!r}: {why}; valid forms: {_GRAMMAR}")

    parts = name.split(".")
    if parts[0] == "latent" and len(parts) == 2:
        if name not in SITE_KINDS:
            raise bad(f"the latent sites are latent.in, latent.pred and latent.x0, not latent.{parts[1]}")
        return SiteName(name, "", name)
    if any(not p for p in parts):
        raise bad("an empty part between dots")
    last = parts[-1]
    block = stream = index = None
    if "->" in last:
        query, _, key = last.partition("->")
        if query not in STREAMS or key not in STREAMS:
            raise bad(f"the block {last!r} must be <query>-><key> with each one of {', '.join(STREAMS)}")
        block, parts = last, parts[:-1]
        if parts[-1] != "probs":
            raise bad(f"a query->key block follows 'probs', not {parts[-1]!r}")
    elif last in STREAMS:
        stream, parts = last, parts[:-1]
        if parts[-1] not in ("out", "q", "k", "v"):
            raise bad(f"a stream ({last}) follows out, q, k or v, not {parts[-1]!r}")
    elif last.isdigit() or (last == "*" and len(parts) > 1 and parts[-2] in ("skip", "backbone")):
        # a pattern may glob the index (``up_blocks.*.skip.*``): every j of that module
        index, parts = (int(last) if last.isdigit() else None), parts[:-1]
        if parts[-1] not in ("skip", "backbone"):
            raise bad(f"an index ({last}) follows skip or backbone, not {parts[-1]!r}")
    elif last in ("skip", "backbone"):
        raise bad(f"{last} needs its index j ({last}.0, {last}.1, ...)")
    kind = parts[-1]
    if kind not in ("out", "probs", "q", "k", "v", "skip", "backbone"):
        raise bad(f"it ends in {last!r}, which is no site kind, stream, block or index")
    module = ".".join(parts[:-1])
    if not module:
        raise bad(f"{kind} needs the module it belongs to in front of it")
    return SiteName(name, module, kind, block, stream, index)


def site_name(module: str, kind: str, *, block: str | None = None, stream: str | None = None,
              index: int | None = None) -> str:
    """The name of a site from its parts: the inverse of :func:`parse_site` (checked by it)."""
    parts = [module, kind] if module else [kind]
    parts += [str(x) for x in (block, stream, index) if x is not None]
    name = ".".join(parts)
    parse_site(name)  # refuses parts that make no valid name
    return name


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
        """What follows the module in the name (``out.image``, ``probs.image->text``, ``skip.0``)."""
        parsed = parse_site(self.name)
        return self.name[len(parsed.module) + 1 :] if parsed.module else self.name

    @property
    def parts(self) -> SiteName:
        """The name taken apart (:func:`parse_site`): module, kind, block, stream, index."""
        return parse_site(self.name)


@dataclass
class Geometry:
    """What a site map reads off the denoiser's inputs at each call, so that token axes can be
    labelled: the text length of the joint sequence and the finest image token grid."""

    text_len: int = 0
    grid: tuple[int, int] | None = None  # (rows, cols) of the finest image-token grid
    extra: dict[str, Any] = field(default_factory=dict)
    frames: int | None = None  # latent frames of a video denoiser's tokens (frame, y, x)

    def grid_of(self, kind: str, n_tokens: int) -> tuple[int, ...]:
        """The grid of ``n_tokens`` tokens of a grid ``kind`` (:data:`GRID_AXES`): (rows, cols) for
        image tokens, (frames, rows, cols) for video tokens, laid frame by frame, row by row."""
        if kind == "image":
            return self.image_grid(n_tokens)
        if kind != "video":
            raise ValueError(f"{kind!r} tokens lie on no grid; grid kinds: {', '.join(GRID_AXES)}")
        if not self.frames or n_tokens % self.frames:
            raise ValueError(f"cannot lay {n_tokens} video tokens on {self.frames} frames: the site map's "
                             "read_geometry must set Geometry.frames to the denoiser's token frames")
        return (self.frames, *self.image_grid(n_tokens // self.frames))

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
    # The kind of a packed latent's tokens (latent_dims with "token"): "image" (FLUX) or "video"
    # (LTX-Video), so that latent sites label them (y, x) or (frame, y, x).
    latent_tokens: str = "image"
    # Top-level module lists in forward order (sorting sites by depth: down, mid, up; double, single).
    stages: tuple[str, ...] = ()
    # Patterns of the attention-probability sites where image queries meet text keys (word maps,
    # segmentation), and of the sites holding the keys/values computed from text tokens (patching
    # what the prompt contributes). Empty where the family has no text (DiT, DDPM).
    text_attention: tuple[str, ...] = ()
    text_keys: tuple[str, ...] = ()
    text_values: tuple[str, ...] = ()
    # Patterns of the long skip connections (U-Net: what each up block concatenates); a skip site is
    # ``<module>.skip.<j>``; ``<module>.backbone.<j>`` is the backbone tensor it is concatenated to (the
    # module's input for j = 0) and ``<module>.out`` the module's output.
    skips: tuple[str, ...] = ()
    # Sites the family has in principle but the recorder cannot observe, by name, with the reason
    # (Sana's linear self-attention has no softmax matrix and no SDPA call to intercept). Asking for
    # one is refused with that reason instead of matching nothing or returning an empty recording.
    unrecordable: Callable[[torch.nn.Module], dict[str, str]] | None = None
    # Where attention runs one sample at a time: every attention module of the family calls its
    # kernel once per batch row, over [visual | the text tokens that row keeps] (Mochi drops its
    # padding tokens so). The tap names the attention module's argument holding the (batch, text)
    # mask of kept tokens; the recorder lays each call out on the whole token axis (dropped tokens
    # zero, their probabilities zero) and gathers the rows into one batch. None: one call per batch.
    per_sample_attention: InputTap | None = None
    # True where the denoiser's timestep input rises over a run (Lumina 2 and Z-Image: their pipelines
    # pass 1 - t / 1000, time running from noise to image, and negate the prediction). The step clock
    # then starts a new run when the timestep falls back, and the loops that feed the scheduler's
    # timesteps to the denoiser as they are (``denoise``, ``Model.predict``) refuse the family.
    timestep_rises: bool = False
    # For a denoiser that takes and returns its latents as something other than one batched tensor
    # (Z-Image: a list of per-sample (channel, 1, y, x) tensors): (to_batch, from_batch), turning
    # them into the (batch, *latent_dims) tensor the latent sites hold and a changed batch back into
    # the denoiser's form (given the original). None: the latents are one batched tensor already.
    latent_batching: tuple[Callable[[Any], torch.Tensor], Callable[[torch.Tensor, Any], Any]] | None = None

    def check_scheduler_time(self, what: str) -> None:
        """Refuse ``what`` (a loop that hands the denoiser the scheduler's timesteps as they are)
        for a family whose timestep runs the other way (:attr:`timestep_rises`)."""
        if self.timestep_rises:
            raise ValueError(f"{self.family}: its pipeline hands the denoiser the time reversed (1 - t / 1000) and negates "
                             f"the prediction; {what} feeds it the scheduler's timesteps as they are, which would be "
                             "silently wrong: run it through its pipeline (Model.generate)")

    def batched_latent(self, latent) -> torch.Tensor:
        """The denoiser's latent input (or prediction) as one (batch, *latent_dims) tensor."""
        return latent if self.latent_batching is None else self.latent_batching[0](latent)

    def unbatched_latent(self, batch: torch.Tensor, original):
        """A changed latent batch in the form the denoiser takes or returns (that of ``original``)."""
        return batch if self.latent_batching is None else self.latent_batching[1](batch, original)

    def stage_of(self, site_name: str) -> int:
        """Position of the site's top-level module in the forward pass (0 for latents/unknown)."""
        return stage_index(self.stages, site_name)


def stage_index(stages: tuple[str, ...], site_name: str) -> int:
    """Position, in ``stages``, of the top-level module a site belongs to (0 for latents/unknown)."""
    module = parse_site(site_name).module
    head = module.split(".", 1)[0]  # a module path, not a site name: its first part is the stage
    return stages.index(head) if head in stages else 0


def kwarg_or_arg(args: tuple, kwargs: dict, tap: InputTap) -> Any:
    """The value a forward call received for ``tap`` (keyword first, then positional)."""
    if tap.kwarg in kwargs:
        return kwargs[tap.kwarg]
    if tap.position is not None and tap.position < len(args):
        return args[tap.position]
    return None


# ---------------------------------------------------------------------------------------------
# Builders shared by several families: attention modules and plain module outputs.

IMAGE = TokenLayout(("image",))
TEXT = TokenLayout(("text",))
IMAGE_TEXT = TokenLayout(("image", "text"))  # SD3: image tokens first
TEXT_IMAGE = TokenLayout(("text", "image"))  # FLUX: text tokens first
VIDEO = TokenLayout(("video",))  # video denoisers: (frame, y, x) tokens
VIDEO_TEXT = TokenLayout(("video", "text"))  # HunyuanVideo, Mochi: video tokens first
TEXT_VIDEO = TokenLayout(("text", "video"))  # CogVideoX: text tokens first


def attention_sites(path: str, query: TokenLayout, key: TokenLayout, what: str) -> list[Site]:
    """Probabilities (whole and, for joint attention, per block) and q/k/v of one attention module.

    ``what`` is a short human description used in the one-line meanings ("joint attention",
    "cross-attention to the prompt", ...).
    """
    sites = [
        Site(
            f"{path}.probs",
            path,
            AttentionTap("probs", query=query, key=key),
            PROBS_DIMS,
            f"{what}: softmax(q k^T * scale) over all keys, per head",
            query,
            key,
        )
    ]
    joint = len(query.segments) > 1
    if joint:
        for block in blocks_of(query.segments):
            q_kind, k_kind = block.split("->")
            sites.append(
                Site(
                    f"{path}.probs.{block}",
                    path,
                    AttentionTap("probs", block=block, query=query, key=key),
                    PROBS_DIMS,
                    f"{what}: {q_kind} queries attending to {k_kind} keys (rows sum to <1; mass sent to {k_kind})",
                    TokenLayout((q_kind,)),
                    TokenLayout((k_kind,)),
                )
            )
    for role, layout in (("q", query), ("k", key), ("v", key)):
        segments = layout.segments if len(layout.segments) > 1 else (None,)
        for segment in segments:
            suffix = f".{segment}" if segment else ""
            seg_layout = TokenLayout((segment,)) if segment else layout
            sites.append(
                Site(
                    f"{path}.{role}{suffix}",
                    path,
                    AttentionTap(role, segment=segment, query=query, key=key),
                    QKV_DIMS,
                    f"{what}: per-head {dict(q='queries', k='keys', v='values')[role]}"
                    f"{' of ' + segment + ' tokens' if segment else ''} as the attention kernel sees them",
                    seg_layout,
                )
            )
    return sites


def output_site(path: str, kind: str, index: int | None, dims: tuple[str, ...], meaning: str,
                layout: TokenLayout | None = None) -> Site:
    """A module's output (or one element of its output tuple)."""
    name = f"{path}.{kind}" if path else kind
    return Site(name, path, OutputTap(index), dims, meaning, layout)


# ---------------------------------------------------------------------------------------------
# Pipeline facts: what a diffusers pipeline does around its denoiser.


def padded_tokens(tokenizer, prompt: str, length: int) -> list[str]:
    """Token strings of ``prompt`` padded/truncated to ``length``, as a text encoder is fed them."""
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids)


def tokens_of(attribute: str) -> Callable:
    """``text_tokens`` for a pipeline whose denoiser sees one tokenizer's tokens (``attribute``)."""

    def text_tokens(pipeline, prompts: list[str], text_len: int) -> list[list[str]] | None:
        tokenizer = getattr(pipeline, attribute, None)
        if tokenizer is None:
            return None
        return [padded_tokens(tokenizer, p, text_len) for p in prompts]

    return text_tokens


@dataclass(frozen=True)
class PipelineFacts:
    """What a family of diffusers pipelines does around its denoiser, as recording and runs need it.

    Every field is a fact about the pipeline class, never about one checkpoint. ``text_tokens``,
    ``encode_prompts`` and ``unpack_latents`` are small functions because the facts are procedures
    (SD3 feeds [CLIP | T5] tokens, FLUX packs 2x2 latent patches into tokens).
    """

    pipeline_classes: tuple[str, ...]  # diffusers pipeline class names (subclasses are served too)
    denoiser_attribute: str  # the pipeline attribute that holds its denoiser ("unet", "transformer")
    cfg_order: tuple[str, ...] = ("uncond", "cond")  # branch order in a batched guidance call
    guidance: Literal["batched", "embedded", "none"] = "batched"  # embedded: a distilled guidance input
    prompt_arg: str = "prompt"  # the __call__ argument that takes the prompts (DiT: class_labels)
    # (pipeline, prompts, text_len) -> token strings of the denoiser's text axis, per prompt
    text_tokens: Callable[[Any, list[str], int], list[list[str]] | None] = tokens_of("tokenizer")
    # (pipeline, prompts, device) -> the denoiser's conditioning kwargs (conditional branch only)
    encode_prompts: Callable[[Any, list[str], Any], dict] | None = None
    # (pipeline, latents) -> latents as the VAE takes them (FLUX unpacks its token packing)
    unpack_latents: Callable[[Any, Any], Any] | None = None
    # (pipeline, text_len) -> [(encoder, positions), ...] in text-axis order, where the text axis
    # joins several encoders' tokens (SD3: [CLIP | T5]); None where one encoder fills it
    text_encoders: Callable[[Any, int], list[tuple[str, int]]] | None = None
    description: str = ""
