"""T-GATE (Liu et al., "Cross-Attention Makes Inference Cumbersome"): after a gate step the
cross-attention output is frozen and classifier-free guidance is dropped.

``tgate(model, gate_step=10)`` is a context manager around ``Model.generate`` / ``denoise`` runs of
a U-Net with batched guidance. It follows T-GATE 1.0's schedule, step by step (``s`` counts from 0):

* ``s < gate_step - 1`` (semantics planning): cross-attention runs; self-attention runs for the
  first ``warm_up`` steps, runs and is kept at ``warm_up`` and at every ``sa_interval``-th step,
  and is reused at the others.
* ``s == gate_step - 1``: both attentions run and are kept as the *mean* of the unconditional
  and conditional rows (what the single row will need after the gate).
* ``s >= gate_step`` (fidelity improving): the cross-attention output kept at the gate is reused,
  self-attention runs every ``ca_interval``-th step (T-GATE's name) and is reused in between, and
  the denoiser runs on **one row** (the conditional one) instead of two: guidance is dropped. The
  row is handed back twice, so the runner's guidance formula ``u + g (c - u)`` returns it
  unchanged, and no pipeline code is touched.

Everything attaches through the hook chains (``workbench.chain``): the one step clock on the
denoiser, and ``around`` entries on the denoiser and its attention modules (which wrap those
instances' ``forward``); all are removed on exit, also when the run raises. After the gate, hooks inside the denoiser see one
row: recording sites in the same run is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from ..chain import Attachments, ModelHook, RunAnnouncement, attached_names
from .clock import StepClock
from .resolve import as_model

_serial = iter(range(1, 1 << 62))  # names this context's chain entries apart from another's


def _cond_rows(value: Any) -> Any:
    """The second half (the conditional rows) of every batched tensor in ``value`` (nested dicts too)."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] % 2 == 0 and value.shape[0] >= 2:
        return value.chunk(2)[1]
    if isinstance(value, dict):
        return {k: _cond_rows(v) for k, v in value.items()}
    return value


def _twice(value: Any) -> Any:
    """A one-row denoiser output handed back as the two rows the runner expects."""
    if isinstance(value, torch.Tensor):
        return torch.cat([value, value])
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_twice(v) for v in value)
    if hasattr(value, "to_tuple"):  # diffusers output dataclass
        return type(value)(**{k: _twice(v) for k, v in value.items()})
    return value


class TGate:
    """Context manager: T-GATE on ``model`` (see :func:`tgate`)."""

    def __init__(self, model, *, gate_step: int = 10, sa_interval: int = 5, ca_interval: int = 1, warm_up: int = 2):
        self.model = as_model(model)
        for name, value, low in (("gate_step", gate_step, 1), ("sa_interval", sa_interval, 1),
                                 ("ca_interval", ca_interval, 1), ("warm_up", warm_up, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"tgate's {name} must be an integer >= {low}, got {value!r}")
        self.gate_step, self.sa_interval, self.ca_interval, self.warm_up = gate_step, sa_interval, ca_interval, warm_up
        self.attention = [name for name, m in self.model.denoiser.named_modules()
                          if type(m).__name__ == "Attention" and name.rsplit(".", 1)[-1] in ("attn1", "attn2")]
        if not any(name.endswith(".attn2") for name in self.attention):
            raise ValueError(f"T-GATE freezes the cross-attention of a U-Net's transformer blocks (attn2); this "
                             f"{type(self.model.denoiser).__name__} has none")
        self.clock = StepClock(self.model.site_map, model=self.model, scheduler=self.model.scheduler,
                               new_run_when_timestep_rises=True)
        self.name = f"tgate.{next(_serial)}"
        self._attachments = Attachments()
        self._cache: dict[str, torch.Tensor] = {}
        self.rows_run: list[int] = []  # denoiser rows per step: 2 before the gate, 1 after

    def __repr__(self) -> str:
        return (f"TGate(gate_step={self.gate_step}, sa_interval={self.sa_interval}, ca_interval={self.ca_interval}, "
                f"warm_up={self.warm_up})")

    # -- T-GATE's schedule: (run, keep, keep the mean of the two rows) per attention kind and step ------
    def plan(self, step: int, cross: bool) -> str:
        """'run', 'keep' (run and keep), 'keep-mean' or 'reuse' for this step and attention kind."""
        gate = self.gate_step - 1
        if step < gate:
            if cross or step < self.warm_up:
                return "run"
            return "keep" if step == self.warm_up or step % self.sa_interval == 0 else "reuse"
        if step == gate:
            return "keep-mean"
        if cross:
            return "reuse"
        return "keep" if step % self.ca_interval == 0 else "reuse"

    def gated(self, step: int) -> bool:
        return step >= self.gate_step

    @property
    def step(self) -> int:
        return self.clock.step

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> "TGate":
        denoiser = self.model.denoiser
        if any(name.startswith("record.") for name in attached_names(denoiser)):
            raise ValueError("tgate runs one guidance row after the gate, which recording sites in the same run "
                             "cannot label; record without tgate, or tgate without recording")
        try:
            self._attachments.add(denoiser, f"{self.name}.clock", self.clock)
            self._attachments.add(denoiser, self.name, _GatedDenoiser(self))
            for path in self.attention:
                self._attachments.add(denoiser.get_submodule(path), self.name, _GatedAttention(self, path))
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._detach()

    def _detach(self) -> None:
        self._attachments.remove_all()
        self._cache.clear()


class _GatedDenoiser(ModelHook):
    """Around the denoiser: two rows before the gate, the conditional row alone after it."""

    def __init__(self, tgate: TGate):
        self.tgate = tgate

    def begin_run(self, run: RunAnnouncement) -> None:
        if tuple(run.branches or ()) != ("uncond", "cond"):
            raise ValueError(f"T-GATE drops classifier-free guidance after the gate; this run's guidance branches are "
                             f"{tuple(run.branches or ())} (use a guidance scale > 1)")
        if run.first_step:
            raise ValueError("tgate needs the whole run (its caches fill before the gate); start_step must be 0")
        self.tgate._cache.clear()
        self.tgate.rows_run = []

    def around(self, compute, *args, **kwargs):
        tgate = self.tgate
        if not tgate.gated(tgate.step):
            tgate.rows_run.append(2)
            return compute(*args, **kwargs)
        tgate.rows_run.append(1)
        return _twice(compute(*[_cond_rows(a) for a in args], **_cond_rows(kwargs)))


class _GatedAttention(ModelHook):
    """Around one attention module: run, keep or reuse its output as T-GATE's schedule says."""

    def __init__(self, tgate: TGate, path: str):
        self.tgate, self.path = tgate, path

    def around(self, compute, *args, **kwargs):
        tgate, path = self.tgate, self.path
        cross = _argument(args, kwargs, "encoder_hidden_states", 1) is not None
        plan = tgate.plan(tgate.step, cross)
        if plan == "reuse" and path in tgate._cache:
            return tgate._cache[path]
        output = compute(*args, **kwargs)
        if plan == "keep":
            tgate._cache[path] = output
        elif plan == "keep-mean":
            uncond, cond = output.chunk(2)
            tgate._cache[path] = (uncond + cond) / 2
        return output


def _argument(args, kwargs, name: str, position: int):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def tgate(model, *, gate_step: int = 10, sa_interval: int = 5, ca_interval: int = 1, warm_up: int = 2) -> TGate:
    """T-GATE on a U-Net with classifier-free guidance: cross-attention frozen and guidance dropped
    from step ``gate_step`` on (defaults are T-GATE 1.0's). See the module docstring for the schedule.

    >>> with wb.tgate(model, gate_step=10):
    ...     images = model.generate(prompts, steps=25)
    """
    return TGate(model, gate_step=gate_step, sa_interval=sa_interval, ca_interval=ca_interval, warm_up=warm_up)
