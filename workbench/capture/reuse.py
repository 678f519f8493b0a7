"""Feature reuse across denoising steps: the cached modules really do not run at reused steps.

``reuse(model, sites, every=N)`` is a context manager around any run of ``model``. At *key* steps
(every ``N``-th step, or the steps you list) each chosen module runs and its output is kept; at the
other steps the module's ``forward`` is not called at all: a wrapper placed on that *instance*
returns the kept output instead. The wrapper is removed on exit, also when the run raises, and no
diffusers class is touched. Forward hooks on a cached module still fire (they see the reused
output), so recording its ``.out`` site keeps working; sites *inside* it do not fire at reused steps.

Steps are counted by the one step clock (``clock.StepClock``), attached to the denoiser's hook
chain; the wrappers are ``around`` entries of the cached modules' chains (``workbench.chain``).
A new run (announced by a ``Model``, or a timestep that goes back up) starts with an empty cache.
Guidance run as separate denoiser calls per step is declared with ``branch_calls=`` (as for
``record``), so the calls of one step share a step index and each keeps its own cached output.

Three schemes from the literature are choices of modules, read from the site map's stages:

* :func:`deepcache` (Ma et al.): DeepCache's branches, by its branch id: the layers above the cut
  (encoder side and the mirrored decoder side) recompute, everything deeper, samplers included,
  is reused; its uniform and non-uniform (``uniform=False``, ``pow``, ``center``) key-step schedules.
* :func:`encoder_propagation` (Faster Diffusion, Li et al.): reuse the encoder (first stage) and
  recompute the rest.
* :func:`middle_blocks` (block caching for transformers): reuse every block but the first and last
  ``keep``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..chain import Attachments, ModelHook
from ..sitemap import OutputTap
from .clock import StepClock
from .resolve import as_model, resolve

_serial = iter(range(1, 1 << 62))  # names this context's chain entries apart from a nested one's


def _clone(value: Any) -> Any:
    """A copy of a module output (tensors, tuples, lists, dicts), so in-place edits downstream
    cannot change what is kept or what a later step is handed."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        copied = type(value)(**{k: _clone(v) for k, v in value.items()}) if hasattr(value, "to_tuple") else \
            {k: _clone(v) for k, v in value.items()}
        return copied
    return value


@dataclass
class ReuseStats:
    """How often each cached module ran and how often its output was reused instead."""

    computed: Counter = field(default_factory=Counter)
    reused: Counter = field(default_factory=Counter)
    key_steps: list[int] = field(default_factory=list)

    def share_reused(self) -> float:
        total = sum(self.computed.values()) + sum(self.reused.values())
        return sum(self.reused.values()) / total if total else 0.0


class Reuse:
    """Context manager: reuse ``modules``' outputs at non-key steps (see :func:`reuse`)."""

    def __init__(self, model, modules: Sequence[str], *, every: int | None = None,
                 key_steps: Sequence[int] | None = None, schedule: Callable[[int], Sequence[int]] | None = None,
                 label: str = "", branch_calls: tuple[str, ...] | None = None):
        self.model = as_model(model)
        if sum(x is not None for x in (every, key_steps, schedule)) != 1:
            raise ValueError("choose the key steps either by interval (every=N), as a list (key_steps=[...]) "
                             "or as a schedule of the run's length (schedule=), one of them")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"the cache interval every= must be an integer >= 1 (1 = no reuse), got {every!r}")
        if key_steps is not None:
            key_steps = sorted({int(s) for s in key_steps})
            if not key_steps or key_steps[0] < 0:
                raise ValueError(f"key_steps must be a non-empty list of step indices >= 0, got {key_steps}")
        if not modules:
            raise ValueError("reuse needs at least one module to cache")
        self.every, self.key_steps, self.label = every, key_steps, label
        self.schedule = schedule  # run length -> key steps, resolved when a runner announces the length
        self.modules = list(dict.fromkeys(modules))
        self.stats = ReuseStats()
        self.clock = StepClock(self.model.site_map, branch_calls=branch_calls, model=self.model,
                               scheduler=self.model.scheduler, new_run_when_timestep_rises=True)
        self.name = f"reuse.{next(_serial)}"
        self._cache: dict[tuple[str, int], Any] = {}
        self._cache_run = self.clock.run_index  # the run the cache was filled in
        self._attachments = Attachments()

    def __repr__(self) -> str:
        when = (f"every={self.every}" if self.every is not None else
                f"key_steps={self.key_steps}" if self.schedule is None else f"schedule={self.schedule}")
        return f"Reuse({self.label or 'modules'}: {', '.join(self.modules)}; {when})"

    # -- which steps compute ----------------------------------------------------------------------
    def is_key(self, step: int) -> bool:
        if self.every is not None:
            return step % self.every == 0
        if self.key_steps is None:
            raise ValueError(f"{self.label or 'this reuse'} picks its key steps from the run's length; run it through "
                             "Model.generate or workbench.denoise, which announce it")
        return step in self.key_steps

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "Reuse":
        denoiser = self.model.denoiser
        try:
            self._attachments.add(denoiser, f"{self.name}.clock", self.clock)
            self._attachments.add(denoiser, f"{self.name}.key_steps", _KeyStepLog(self))
            for path in self.modules:
                self._attachments.add(denoiser.get_submodule(path), self.name, _Reused(self, path))
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._detach()

    def _detach(self) -> None:
        self._attachments.remove_all()
        self._cache.clear()

    def _current_cache(self) -> dict:
        """The cache of the run in progress: a new run starts empty."""
        if self._cache_run != self.clock.run_index:
            self._cache.clear()
            self._cache_run = self.clock.run_index
        return self._cache


class _KeyStepLog(ModelHook):
    """After the clock: notes each key step as it starts (``ReuseStats.key_steps``), and resolves
    a schedule's key steps when a runner announces the run's length."""

    def __init__(self, reuse: Reuse):
        self.reuse = reuse

    def begin_run(self, run) -> None:
        reuse = self.reuse
        if reuse.schedule is not None:
            steps = run.expected_steps
            reuse.key_steps = None if steps is None else sorted(int(k) for k in reuse.schedule(steps))

    def pre_forward(self, module, args, kwargs):
        clock = self.reuse.clock
        if clock.new_step and self.reuse.is_key(clock.step):
            self.reuse.stats.key_steps.append(clock.step)


class _Reused(ModelHook):
    """Around one cached module: compute and keep at key steps, hand the kept output back otherwise."""

    def __init__(self, reuse: Reuse, path: str):
        self.reuse, self.path = reuse, path

    def around(self, compute, *args, **kwargs):
        reuse, clock = self.reuse, self.reuse.clock
        cache = reuse._current_cache()
        key = (self.path, clock.call)
        if not reuse.is_key(clock.step) and key in cache:
            reuse.stats.reused[self.path] += 1
            return _clone(cache[key])
        output = compute(*args, **kwargs)
        cache[key] = _clone(output)
        reuse.stats.computed[self.path] += 1
        return output


def _modules_of_sites(model, sites: Sequence[str]) -> list[str]:
    """The modules whose outputs the ``sites`` name (output sites only), in forward order."""
    if isinstance(sites, str):
        sites = [sites]
    resolved = resolve(model.denoiser, list(sites))  # unknown names raise KeyError with the nearest valid sites
    wrong = [s.name for s in resolved if not isinstance(s.tap, OutputTap) or not s.module]
    if wrong:
        raise ValueError(f"reuse caches whole module outputs; {', '.join(wrong)} are not module output sites "
                         "(use '<module>.out' sites, e.g. up_blocks.1.out or transformer_blocks.1.out.image)")
    return list(dict.fromkeys(s.module for s in resolved))


def reuse(model, sites: Sequence[str], *, every: int | None = None, key_steps: Sequence[int] | None = None,
          label: str = "", branch_calls: tuple[str, ...] | None = None) -> Reuse:
    """Reuse the outputs of the modules behind ``sites`` (output sites such as ``up_blocks.1.out``)
    at every step that is not a key step: every ``every``-th step from 0, or the listed ``key_steps``.

    >>> with wb.reuse(model, ["up_blocks.1.out"], every=3) as cache:
    ...     images = model.generate(prompts, steps=20)
    >>> cache.stats.share_reused()

    ``branch_calls``: the guidance branches, in call order, of a pipeline that runs them as separate
    denoiser calls per step (as for ``record``); each call keeps its own cached output.
    """
    model = as_model(model)
    return Reuse(model, _modules_of_sites(model, sites), every=every, key_steps=key_steps, label=label,
                 branch_calls=branch_calls)


def stage_modules(model) -> list[str]:
    """The top-level blocks of the denoiser in forward order, from the site map's ``stages``
    (``down_blocks.0, ..., mid_block, up_blocks.0, ...``; ``transformer_blocks.0, ...``)."""
    model = as_model(model)
    paths = []
    for stage in model.site_map.stages:
        module = model.denoiser.get_submodule(stage)
        if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            paths += [f"{stage}.{i}" for i in range(len(module))]
        else:
            paths.append(stage)
    return paths


def middle_blocks(model, *, every: int | None = None, key_steps=None, keep: int = 1,
                  branch_calls: tuple[str, ...] | None = None) -> Reuse:
    """Reuse every top-level block except the first and last ``keep`` (the deep path)."""
    model = as_model(model)
    blocks = stage_modules(model)
    if keep < 1 or 2 * keep >= len(blocks):
        raise ValueError(f"keep={keep} leaves nothing to cache among this model's {len(blocks)} blocks "
                         f"({', '.join(blocks)}); choose 1 <= keep < {len(blocks) / 2:g}")
    return Reuse(model, blocks[keep:-keep], every=every, key_steps=key_steps, label=f"middle blocks (keep {keep})",
                 branch_calls=branch_calls)


# DeepCache numbers its cut points 3 * block + layer whatever the U-Net (SD's down blocks hold two
# resnets and a downsampler, so three layers each).
DEEPCACHE_LAYERS_PER_BLOCK = 3


def deepcache_modules(model, branch: int) -> list[str]:
    """The modules DeepCache's branch ``branch`` reuses at non-key steps, outermost only.

    Branch ``b`` cuts at down block ``b // 3``, layer ``b % 3``. Layers of a down block are its
    resnets (each with its attention) in order, then its downsampler; the up block mirrored to it
    counts its resnets from the last and its upsampler as layer 0. Reused: the mid block, every
    deeper down and up block whole, the cut down block's layers from ``b % 3`` on (the whole block
    when that is 0), and the mirrored up block's layers above ``b % 3``."""
    model = as_model(model)
    denoiser = model.denoiser
    if not model.site_map.skips or not hasattr(denoiser, "down_blocks") or getattr(denoiser, "mid_block", None) is None:
        raise ValueError(f"DeepCache's branches are cuts through a U-Net's encoder and decoder joined by skips; "
                         f"this {type(denoiser).__name__} has no skips. Use middle_blocks() for block caching.")
    n_blocks = len(denoiser.down_blocks)
    valid = range(DEEPCACHE_LAYERS_PER_BLOCK * n_blocks)
    if isinstance(branch, bool) or not isinstance(branch, int) or branch not in valid:
        raise ValueError(f"DeepCache's branch id must be an integer in 0..{valid[-1]} for this U-Net's {n_blocks} "
                         f"down blocks (3 per block: block = id // 3, layer = id % 3), got {branch!r}")
    cut_block, cut_layer = divmod(branch, DEEPCACHE_LAYERS_PER_BLOCK)
    cached = []
    for i, block in enumerate(denoiser.down_blocks):
        path = f"down_blocks.{i}"
        if i > cut_block or (i == cut_block and cut_layer == 0):
            cached.append(path)
        elif i == cut_block:
            layers = _block_layers(path, block, "downsamplers", mirrored=False)
            cached += [m for layer, m in layers if layer >= cut_layer]
    cached.append("mid_block")
    for i, block in enumerate(denoiser.up_blocks):
        path, depth = f"up_blocks.{i}", len(denoiser.up_blocks) - 1 - i
        if depth > cut_block:
            cached.append(path)
        elif depth == cut_block:
            layers = _block_layers(path, block, "upsamplers", mirrored=True)
            cached += [m for layer, m in layers if layer > cut_layer]
    return cached


def _block_layers(path: str, block, samplers: str, *, mirrored: bool) -> list[tuple[int, str]]:
    """(DeepCache layer index, module path) of a block's resnets, attentions and sampler."""
    n = len(block.resnets)
    out = []
    for j in range(n):
        layer = n - 1 - j if mirrored else j
        out.append((layer, f"{path}.resnets.{j}"))
        if j < len(getattr(block, "attentions", None) or []):
            out.append((layer, f"{path}.attentions.{j}"))
    for k in range(len(getattr(block, samplers, None) or [])):
        out.append((0 if mirrored else n, f"{path}.{samplers}.{k}"))
    return out


def deepcache_key_steps(steps: int, every: int, *, uniform: bool = True, pow: float = 1.4,
                        center: int = 15) -> list[int]:
    """DeepCache's key steps for a run of ``steps`` at cache interval ``every``.

    Uniform: every ``every``-th step from 0. Non-uniform: as many key steps as the uniform schedule
    has (``ceil(steps / every)``), spaced evenly in the coordinate ``sign(s - center) |s - center|
    ** (1 / pow)``, so they crowd around step ``center``; DeepCache lowers ``pow`` by 0.02 until
    the rounded steps are distinct, and so does this. The fractional power of the negative
    start is taken as DeepCache takes it, on the principal complex branch, keeping the real part."""
    if every == 1:
        return list(range(steps))
    if uniform:
        return list(range(0, steps, every))
    wanted = math.ceil(steps / every)
    power = pow
    while power > 1:
        start, stop = (-center) ** (1 / power), (steps - center) ** (1 / power)  # start is complex
        warped = np.linspace(start, stop, wanted + 1) ** power
        offsets = np.unique(np.real(warped).astype(np.int32))
        chosen = [0] + [int(o) + center for o in offsets[1:-1]]
        if len(chosen) == wanted:
            return chosen
        power -= 0.02
    raise ValueError(f"DeepCache's non-uniform schedule finds no {wanted} distinct key steps in {steps} steps "
                     f"around center={center} for any pow <= {pow}; lower center or the interval")


def deepcache(model, *, every: int | None = None, key_steps=None, branch: int = 0, uniform: bool = True,
              pow: float = 1.4, center: int = 15, branch_calls: tuple[str, ...] | None = None) -> Reuse:
    """DeepCache (Ma et al.) branch ``branch`` (its ``cache_branch_id``; 0, its default, recomputes
    the least): see :func:`deepcache_modules` for what is reused. Key steps: every ``every``-th
    step, or DeepCache's non-uniform schedule for interval ``every`` (``uniform=False``, with its
    ``pow`` and ``center``; :func:`deepcache_key_steps`), or the listed ``key_steps``. Reused
    samplers do not run; DeepCache's package runs no sampler either, it returns them cached too."""
    model = as_model(model)
    modules = deepcache_modules(model, branch)
    label = f"DeepCache (branch {branch})"
    if uniform:
        return Reuse(model, _checked_sites(model, modules), every=every, key_steps=key_steps, label=label,
                     branch_calls=branch_calls)
    if every is None or key_steps is not None:
        raise ValueError("DeepCache's non-uniform schedule is set by the cache interval: pass every=N (no key_steps)")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"the cache interval every= must be an integer >= 1, got {every!r}")
    schedule = _NonUniform(every, pow, center)
    return Reuse(model, _checked_sites(model, modules), schedule=schedule, label=label + f", non-uniform {schedule}",
                 branch_calls=branch_calls)


@dataclass(frozen=True)
class _NonUniform:
    every: int
    pow: float
    center: int

    def __call__(self, steps: int) -> list[int]:
        return deepcache_key_steps(steps, self.every, uniform=False, pow=self.pow, center=self.center)

    def __str__(self) -> str:
        return f"every={self.every}, pow={self.pow}, center={self.center}"


def _checked_sites(model, modules: list[str]) -> list[str]:
    """The modules, checked to be output sites of this model (so each has a name users can record)."""
    return _modules_of_sites(model, [f"{m}.out" for m in modules])


def encoder_propagation(model, *, every: int | None = None, key_steps=None,
                        branch_calls: tuple[str, ...] | None = None) -> Reuse:
    """Faster Diffusion: reuse the encoder's blocks (the site map's first stage) at non-key steps;
    the bottleneck and decoder run every step on the propagated encoder features."""
    model = as_model(model)
    stages = model.site_map.stages
    if len(stages) < 3 or not model.site_map.skips:
        raise ValueError(f"encoder propagation needs an encoder, bottleneck and decoder joined by skips; "
                         f"this {type(model.denoiser).__name__} has stages {stages}")
    encoder = [p for p in stage_modules(model) if p.split(".")[0] == stages[0]]
    return Reuse(model, encoder, every=every, key_steps=key_steps, label="encoder propagation",
                 branch_calls=branch_calls)
