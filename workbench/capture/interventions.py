"""Interventions: patch, ablate, scale, steer or edit (any function) a site's tensor, optionally
only at some steps, heads, tokens or guidance branches.

Make them with the factories ``patch``, ``ablate``, ``scale``, ``steer`` and ``edit``; the classes
behind them are an implementation detail (subclass :class:`Intervention` only for something the
factories cannot say).

Every intervention sees the site's tensor in its canonical layout ``(batch, *site.dims)`` and
returns a tensor of the same shape; the positions outside its selection keep their values, so
interventions compose (they run in the order given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch

if TYPE_CHECKING:
    from ..sitemap import Site
    from .recording import Recording


def step_selected(selection: Sequence[int] | slice | int | None, step: int) -> bool:
    """Whether ``step`` is in a step selection: None (all), an index, a list of indices or a slice."""
    if selection is None:
        return True
    if isinstance(selection, slice):
        return step in range(*selection.indices(1 << 30))
    return step in ([selection] if isinstance(selection, int) else selection)


@dataclass
class CallContext:
    """What an intervention needs to know about the forward call it is editing."""

    site: "Site"
    step: int
    call: int  # index of the denoiser call within the step (guidance run as separate calls)
    row_branches: list[str]  # the guidance branch of every batch row of the tensor
    _timestep: object = float("nan")  # a float, or on a GPU a transfer.PendingScalar read only if asked
    # The rows of the call's batch the tensor holds, where a module computes one sample at a time
    # (per-sample attention, e.g. Mochi): slice(i, i + 1). None: the whole batch.
    rows: slice | None = None

    @property
    def timestep(self) -> float:
        """The scheduler's timestep value at this step (on a GPU, the first read waits for the device)."""
        return float(self._timestep)

    @property
    def site_name(self) -> str:
        return self.site.name

    @property
    def dims(self) -> tuple[str, ...]:
        """The axes of the tensor an intervention sees: ``("batch", *site dims)``."""
        return ("batch",) + self.site.dims

    @property
    def branches(self) -> list[str]:
        """Alias of ``row_branches``: the guidance branch of every batch row."""
        return self.row_branches


@dataclass
class Intervention:
    site: str
    steps: Sequence[int] | slice | None = None
    heads: Sequence[int] | None = None
    tokens: Sequence[int] | slice | None = None
    branch: str | None = None
    label: str = field(default="", repr=False)

    def active_at(self, step: int) -> bool:
        return step_selected(self.steps, step)

    def replacement(self, x: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        new = self.replacement(x, ctx)
        if new.shape != x.shape:
            raise ValueError(
                f"{type(self).__name__} on {ctx.site.name} at step {ctx.step}: replacement has shape "
                f"{tuple(new.shape)} but the site's tensor has shape {tuple(x.shape)} (batch, {', '.join(ctx.site.dims)})"
            )
        mask = self._mask(x, ctx)
        return new.to(x.dtype) if mask is None else torch.where(mask, new.to(x.dtype), x)

    def _mask(self, x: torch.Tensor, ctx: CallContext) -> torch.Tensor | None:
        """A boolean mask broadcastable to ``x`` of the selected positions, None for all."""
        dims = ("batch",) + ctx.site.dims
        selections = {}
        if self.branch is not None:
            if self.branch not in ctx.row_branches and ctx.rows is None:  # one sample's row may be another branch
                raise ValueError(f"branch {self.branch!r} is not in this run; its branches are {sorted(set(ctx.row_branches))}")
            selections["batch"] = [i for i, b in enumerate(ctx.row_branches) if b == self.branch]
        if self.heads is not None:
            if "head" not in dims:
                raise ValueError(f"{ctx.site.name} has no head axis (dims {dims}); drop heads=")
            selections["head"] = self.heads
        if self.tokens is not None:
            token_dim = next((d for d in ("token", "query") if d in dims), None)
            if token_dim is None:
                raise ValueError(f"{ctx.site.name} has no token axis (dims {dims}); drop tokens=")
            selections[token_dim] = self.tokens
        if not selections:
            return None
        mask = torch.ones((1,) * x.dim(), dtype=torch.bool, device=x.device)
        for dim_name, chosen in selections.items():
            axis = dims.index(dim_name)
            axis_mask = torch.zeros(x.shape[axis], dtype=torch.bool, device=x.device)
            axis_mask[chosen] = True
            shape = [1] * x.dim()
            shape[axis] = x.shape[axis]
            mask = mask & axis_mask.view(shape)
        return mask


@dataclass
class Patch(Intervention):
    """Replace the site's tensor with the one ``source`` recorded at the same step and call."""

    source: "Recording | None" = None

    def replacement(self, x, ctx):
        if self.source is None:
            raise ValueError("Patch needs source=<a Recording of the same sites>")
        source = self.source.raw(ctx.site.name, ctx.step, ctx.call)
        return (source if ctx.rows is None else source[ctx.rows]).to(x.device)


@dataclass
class Ablate(Intervention):
    """Set the site's tensor to zero, or to its mean over the batch rows (``value="mean"``)."""

    value: str = "zero"

    def replacement(self, x, ctx):
        if self.value == "zero":
            return torch.zeros_like(x)
        if self.value == "mean":
            if ctx.rows is not None:
                raise ValueError(f"ablate(value='mean') averages {ctx.site.name} over the batch, but its module computes it one "
                                 "sample at a time (per-sample attention); ablate to zero, or patch from a recording")
            return x.mean(dim=0, keepdim=True).expand_as(x)
        raise ValueError(f"Ablate value must be 'zero' or 'mean', not {self.value!r}")


@dataclass
class Scale(Intervention):
    """Multiply the site's tensor by ``factor``."""

    factor: float = 1.0

    def replacement(self, x, ctx):
        return x * self.factor


@dataclass
class Steer(Intervention):
    """Add ``alpha * vector`` along the channel axis (a steering vector)."""

    vector: torch.Tensor | None = None
    alpha: float = 1.0

    def replacement(self, x, ctx):
        dims = ("batch",) + ctx.site.dims
        if "channel" not in dims:
            raise ValueError(f"{ctx.site.name} has no channel axis (dims {dims}) to steer along")
        axis = dims.index("channel")
        vector = torch.as_tensor(self.vector, dtype=x.dtype, device=x.device)
        if vector.shape != (x.shape[axis],):
            raise ValueError(
                f"steering vector for {ctx.site.name} has shape {tuple(vector.shape)}, expected ({x.shape[axis]},) channels"
            )
        shape = [1] * x.dim()
        shape[axis] = x.shape[axis]
        return x + self.alpha * vector.view(shape)


@dataclass
class Edit(Intervention):
    """Replace the site's tensor with ``fn(value, context)`` (a plain function)."""

    fn: Callable[[torch.Tensor, CallContext], torch.Tensor] | None = None

    def replacement(self, x, ctx):
        new = self.fn(x, ctx)
        if not isinstance(new, torch.Tensor):
            raise TypeError(f"edit function for {ctx.site.name} returned {type(new).__name__}, not a tensor")
        return new


# The one way to make each intervention. Every factory takes the same selection keywords:
# steps (int, list or slice), heads, tokens (indices on the token/query axis), branch.
Steps = Sequence[int] | slice | int | None


def patch(site: str, source: "Recording", *, steps: Steps = None, heads=None, tokens=None, branch=None) -> Patch:
    """Replace ``site`` by what ``source`` (a Recording of the same site, same run shape) holds."""
    return Patch(site, steps=_steps(steps), heads=heads, tokens=tokens, branch=branch, source=source)


def ablate(site: str, value: str = "zero", *, steps: Steps = None, heads=None, tokens=None, branch=None) -> Ablate:
    """Set ``site`` to zero (``value="zero"``) or to its mean over the batch (``value="mean"``)."""
    return Ablate(site, steps=_steps(steps), heads=heads, tokens=tokens, branch=branch, value=value)


def scale(site: str, factor: float, *, steps: Steps = None, heads=None, tokens=None, branch=None) -> Scale:
    """Multiply ``site`` by ``factor``."""
    return Scale(site, steps=_steps(steps), heads=heads, tokens=tokens, branch=branch, factor=factor)


def steer(site: str, vector, alpha: float = 1.0, *, steps: Steps = None, heads=None, tokens=None, branch=None) -> Steer:
    """Add ``alpha * vector`` along the channel axis of ``site``."""
    return Steer(site, steps=_steps(steps), heads=heads, tokens=tokens, branch=branch, vector=vector, alpha=alpha)


def edit(site: str, fn: Callable[[torch.Tensor, CallContext], torch.Tensor], *, steps: Steps = None, heads=None,
         tokens=None, branch=None) -> Edit:
    """Replace ``site`` by ``fn(value, context)``: your own intervention as a plain function.

    ``value`` is the site's tensor ``(batch, *site dims)``; ``context`` tells ``step``, ``timestep``,
    ``call``, ``site`` / ``site_name``, ``dims`` and ``branches`` (the guidance branch of each batch
    row). Return a tensor of the same shape; with ``heads``/``tokens``/``branch`` only the selected
    positions take the new values.

    >>> wb.edit("transformer_blocks.0.attn.k.text", lambda k, ctx: k * 0 if ctx.step < 2 else k)
    """
    if not callable(fn):
        raise TypeError(f"edit needs a function fn(value, context), not a {type(fn).__name__}")
    return Edit(site, steps=_steps(steps), heads=heads, tokens=tokens, branch=branch, fn=fn,
                label=getattr(fn, "__name__", ""))


def _steps(steps: Steps):
    return [steps] if isinstance(steps, int) else steps
