"""The memory budget of a recording: projected before the first step, refused in milliseconds.

At the first denoiser call, before the denoiser's forward runs, the recorder knows everything a
capture's size depends on: the token counts (the site map's :class:`~workbench.sitemap.Geometry`),
the batch (guidance branches included: they are rows of the latent), each attention module's
heads and head width, each module's output width (its parameters), the capture dtype,
``reduce=``, and how many steps will be held in memory (the run's selected steps; one when
streaming to a store). :func:`project` turns these into bytes per site, and :func:`check_projection`
refuses a recording that cannot fit with the figure and the ways out, before anything is allocated.

What cannot be projected from shapes is measured instead: ``transform=`` results (arbitrary
tensors), the input sites of a U-Net up block (``skip.j`` / ``backbone.0``: their widths belong to
the down path), and any site whose module holds no projection to read a width from. One family is
projected short by a known amount: Lumina 2's caption refiner runs over the padded caption while
its ``Geometry.text_len`` counts the valid tokens. For all of these, :func:`check_budget` projects
the whole run from the bytes held after the first step (see the engine: the backstop earns its
place there and only there). ``tests/test_budget.py`` checks the projection site by site against
the bytes held for every tiny family, by name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

from ..sitemap import STREAM_DIMS, AttentionTap, Geometry, InputTap, LatentTap, Site, TokenLayout


class CaptureTooLarge(MemoryError):
    """A recording would need more memory than allowed."""


def default_max_bytes() -> int:
    """Half of physical memory, at most 8 GiB, unless WORKBENCH_MAX_CAPTURE_BYTES says otherwise."""
    if "WORKBENCH_MAX_CAPTURE_BYTES" in os.environ:
        return int(float(os.environ["WORKBENCH_MAX_CAPTURE_BYTES"]))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        physical = 16 << 30
    return min(8 << 30, physical // 2)


_WAYS_OUT = (
    "Record fewer sites (one layer, or the blocks you need: '...attn.probs.image->text' instead of the whole "
    "matrix) or fewer steps (steps=[...]), a few image/video queries (queries='center', a box or a stride), "
    "reduce at capture time (reduce=('head',), dtype=torch.float16), "
    "stream each step to a store (store='run.zarr'), or raise max_bytes= / WORKBENCH_MAX_CAPTURE_BYTES."
)


@dataclass(frozen=True)
class Projection:
    """A recording's size, projected from site shapes before its first step.

    ``per_call``: bytes one denoiser call keeps, per site whose shape is known in advance.
    ``unprojected``: the recorded sites whose size is only known once captured (measured after the
    first step instead). ``calls_per_step``: denoiser calls per step (guidance as separate calls).
    ``steps_held``: steps in memory at the end of the run (1 when streaming to a store); None when
    the run's length is unknown, in which case one step is projected.
    """

    per_call: dict[str, int]
    unprojected: tuple[str, ...]
    calls_per_step: int
    steps_held: int | None

    @property
    def per_step(self) -> int:
        return sum(self.per_call.values()) * self.calls_per_step

    @property
    def total(self) -> int:
        return self.per_step * (self.steps_held or 1)


def project(sites: list[Site], denoiser: torch.nn.Module, geometry: Geometry, latent: torch.Tensor, *,
            latent_dims: tuple[str, ...], stages: tuple[str, ...], reduce: tuple[str, ...],
            dtype: torch.dtype | None, calls_per_step: int, steps_held: int | None,
            kept_queries: Callable[[Site, int], int] | None = None) -> Projection:
    """Bytes each recorded site will keep per denoiser call, from the first call's inputs alone.
    ``kept_queries(site, n)``: how many of a probabilities site's ``n`` queries it keeps
    (``record(..., queries=)``); every query when not given."""
    shapes = _SiteShapes(denoiser, geometry, latent, latent_dims, stages, kept_queries)
    model_dtype = next((p.dtype for p in denoiser.parameters() if p.is_floating_point()), latent.dtype)
    per_call, unprojected = {}, []
    for site in sites:
        shape = shapes.of(site)
        if shape is None:
            unprojected.append(site.name)
            continue
        dims = ("batch",) + shapes.dims_of(site)
        kept = [size for dim, size in zip(dims, shape) if dim not in reduce]
        element = (dtype or (latent.dtype if isinstance(site.tap, LatentTap) else model_dtype)).itemsize
        per_call[site.name] = math.prod(kept) * element
    return Projection(per_call, tuple(unprojected), calls_per_step, steps_held)


def check_projection(projection: Projection, max_bytes: int, *, streaming: bool) -> None:
    """Refuse a recording projected over ``max_bytes``, naming the figure, what takes it, and the ways out."""
    if projection.total <= max_bytes:
        return
    largest = sorted(projection.per_call.items(), key=lambda item: -item[1])[:3]
    steps = ("1 step at a time (streamed)" if streaming
             else f"{projection.steps_held} step(s)" if projection.steps_held else "1 step (run length unknown)")
    raise CaptureTooLarge(
        f"this recording is projected to need {_mib(projection.total)} ({len(projection.per_call)} site(s) x "
        f"{projection.calls_per_step} call(s) per step x {steps}), over the limit of {_mib(max_bytes)}; refused "
        f"before the first step. Largest per call: {', '.join(f'{name} {_mib(n)}' for name, n in largest)}. {_WAYS_OUT}"
    )


def check_budget(held_bytes: int, n_steps: int | None, max_bytes: int) -> None:
    """The backstop, after captures exist: ``held_bytes`` is what is held now (each tensor's true
    element size); with ``n_steps`` (after the first step) the whole recording is projected from it."""
    projected = held_bytes * n_steps if n_steps else held_bytes
    if projected > max_bytes:
        raise CaptureTooLarge(
            f"this recording needs about {_mib(projected)} (measured on its first step), over the limit of "
            f"{_mib(max_bytes)}. {_WAYS_OUT}"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class _SiteShapes:
    """Per-call shapes (batch first) of sites, from the denoiser's structure and the first call's inputs."""

    def __init__(self, denoiser, geometry: Geometry, latent: torch.Tensor, latent_dims, stages, kept_queries=None):
        self.denoiser, self.geometry, self.latent = denoiser, geometry, latent
        self.latent_dims, self.stages, self.kept_queries = latent_dims, stages, kept_queries
        self._levels: dict[str, tuple[int, int]] | None = None

    def dims_of(self, site: Site) -> tuple[str, ...]:
        return self.latent_dims if isinstance(site.tap, LatentTap) else site.dims

    def of(self, site: Site) -> tuple[int, ...] | None:
        tap, batch = site.tap, self.latent.shape[0]
        if isinstance(tap, LatentTap):
            return self._latent_shape(tap.what)
        if isinstance(tap, InputTap):
            return None  # what an up block receives is sized by the down path: measured instead
        module = self.denoiser.get_submodule(site.module)
        sizes = {}
        if isinstance(tap, AttentionTap):
            heads = getattr(module, "heads", None)
            if not isinstance(heads, int):
                return None
            sizes["head"], sizes["channel"] = heads, _head_width(module, heads)
            sizes["query"] = sizes["token"] = self._tokens(site.query_layout, site.module, output=False)
            sizes["key"] = self._tokens(site.key_layout, site.module, output=False)
            if self.kept_queries is not None and sizes["query"] is not None:
                sizes["query"] = self.kept_queries(site, sizes["query"])
        else:
            sizes["channel"] = _output_width(module, site.dims)
            sizes["token"] = self._tokens(site.query_layout, site.module, output=True)
            sizes["y"], sizes["x"] = self._grid(self._level(site.module, output=True))
        shape = [sizes.get(dim) for dim in site.dims]
        return None if any(size is None for size in shape) else (batch, *shape)

    def _latent_shape(self, what: str) -> tuple[int, ...]:
        shape = list(self.latent.shape)
        if what != "pred" or self.latent_dims == STREAM_DIMS:
            return tuple(shape)  # a packed latent's prediction is packed alike (FLUX, Qwen-Image, LTX)
        config = getattr(self.denoiser, "config", None) or {}
        channel = 1 + self.latent_dims.index("channel")
        # The prediction has the model's output channels, which may differ from its input's: twice
        # them where it learns its variance (DiT/PixArt declare it, HunyuanDiT says learn_sigma), fewer
        # where conditioning is concatenated to the latent (HunyuanVideo 1.5's image-to-video channels).
        if config.get("out_channels"):
            shape[channel] = config["out_channels"]
        elif config.get("learn_sigma"):
            shape[channel] *= 2
        return tuple(shape)

    def _tokens(self, layout: TokenLayout | None, module: str, *, output: bool) -> int | None:
        if layout is None:
            return None
        total = 0
        for kind in layout.segments:
            if kind == "text":
                total += self.geometry.text_len
            elif kind == "video":
                if self.geometry.grid is None or not self.geometry.frames:
                    return None
                total += self.geometry.frames * math.prod(self.geometry.grid)
            else:
                rows, cols = self._grid(self._level(module, output=output))
                if rows is None:
                    return None
                total += rows * cols
        return total

    def _grid(self, level: int) -> tuple[int | None, int | None]:
        """The image grid ``level`` downsamplings below the finest (a stride-2 conv rounds up)."""
        if self.geometry.grid is None:
            return None, None
        rows, cols = self.geometry.grid
        for _ in range(level):
            rows, cols = -(-rows // 2), -(-cols // 2)
        return rows, cols

    def _level(self, path: str, *, output: bool) -> int:
        """How many times the image grid was halved when ``path`` reads its input (or returns its
        output): U-Nets change resolution in modules named ``downsamplers.k`` / ``upsamplers.k``
        (every diffusers U-Net block); every other family keeps one grid throughout."""
        if self._levels is None:
            self._levels = _sampling_levels(self.denoiser, self.stages)
        entered, left = self._levels.get(path, (0, 0))
        return left if output else entered


def _sampling_levels(denoiser: torch.nn.Module, stages: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``{module path: (level on entry, level on exit)}``, walking the modules in forward order: the
    site map's stages in order (a U-Net registers ``up_blocks`` before ``mid_block``), each in
    registration order, which is the order its blocks run in."""
    levels: dict[str, tuple[int, int]] = {}
    level = 0

    def walk(path: str, module: torch.nn.Module) -> None:
        nonlocal level
        entered = level
        for name, child in module.named_children():
            walk(f"{path}.{name}" if path else name, child)
        parent = path.rsplit(".", 2)[-2] if path.count(".") >= 1 else ""
        if parent == "downsamplers":
            level += 1
        elif parent == "upsamplers":
            level -= 1
        levels[path] = (entered, level)

    children = dict(denoiser.named_children())
    order = [s for s in stages if s in children] + [name for name in children if name not in stages]
    for name in order:
        walk(name, children[name])
    return levels


def _head_width(module: torch.nn.Module, heads: int) -> int | None:
    """Width of one head's queries, keys and values as the kernel sees them (it takes q and k of one
    width, and keys/values shared by head groups are repeated to every head before it: Lumina 2):
    the query projection split over the heads, or ``head_dim`` where one fused projection makes q, k
    and v together (FLUX.2's parallel blocks)."""
    to_q = getattr(module, "to_q", None)
    if isinstance(to_q, torch.nn.Linear):
        return to_q.out_features // heads
    head_dim = getattr(module, "head_dim", None)
    return head_dim if isinstance(head_dim, int) else None


def _output_width(module: torch.nn.Module, dims: tuple[str, ...]) -> int | None:
    """Channels a module returns. A token stream keeps the width it came in with: an attention
    module's is its output projection's (``to_out``; the heads' width where it has none, FLUX's
    single blocks), a block's is the query width of its first attention (its residual stream). A
    feature map (a U-Net's resnets, blocks and samplers) ends in its last linear or convolution in
    registration order (``conv2`` or the shortcut, ``proj_out``, the sampler's conv). None where it
    holds neither."""
    if dims == STREAM_DIMS:
        attention = next((m for m in module.modules() if isinstance(getattr(m, "heads", None), int)), None)
        if attention is module:
            to_out = getattr(module, "to_out", None)
            out = to_out[0] if isinstance(to_out, torch.nn.ModuleList) else to_out
            if isinstance(out, torch.nn.Linear):
                return out.out_features
            head_dim = _head_width(module, module.heads)
            return None if head_dim is None else head_dim * module.heads
        to_q = getattr(attention, "to_q", None)
        if isinstance(to_q, torch.nn.Linear):
            return to_q.in_features
    width = None
    for leaf in module.modules():
        if isinstance(leaf, torch.nn.Linear):
            width = leaf.out_features
        elif isinstance(leaf, torch.nn.modules.conv._ConvNd):
            width = leaf.out_channels
    return width
