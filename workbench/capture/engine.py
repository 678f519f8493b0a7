"""The hook engine: attach to one denoiser instance, record and intervene, always detach.

``record(model, sites, ...)`` is a context manager around any run of the model (a diffusers
pipeline call, ``Model.generate``, a bare denoising loop). It attaches torch hooks to the
instances that hold the chosen sites, counts denoiser calls into steps, and removes every hook on
exit, also when the run raises. Nothing global is patched: attention is observed through a
``TorchFunctionMode`` that is active only inside a watched attention module's forward, and the
scheduler's ``step`` is wrapped on the instance and restored afterwards.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..attention import kernels
from ..schedulers import x0_from_step
from ..sitemap import AttentionTap, InputTap, LatentTap, OutputTap, Site, kwarg_or_arg
from .interventions import CallContext, Intervention, step_selected
from .recording import CallInfo, Recording
from .resolve import as_model, resolve


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


@dataclass
class _SitePlan:
    site: Site
    record: bool
    interventions: list[Intervention] = field(default_factory=list)


class Recorder:
    """Context manager; ``with record(...) as rec`` gives the :class:`Recording` being filled."""

    def __init__(
        self,
        target,
        sites=(),
        *,
        steps=None,
        timesteps=None,
        reduce=(),
        dtype: torch.dtype | None = None,
        interventions: list[Intervention] = (),
        max_bytes: int | None = None,
        store=None,
        branches: tuple[str, ...] | None = None,
        branch_calls: tuple[str, ...] | None = None,
        expected_steps: int | None = None,
        prompts: list[str] | None = None,
    ):
        self.model = as_model(target)
        self.denoiser, self.pipeline, self.scheduler = self.model.denoiser, self.model.pipeline, self.model.scheduler
        self.site_map = self.model.site_map
        self.steps, self.timesteps = _check_step_selection(steps, timesteps)
        self.reduce = (reduce,) if isinstance(reduce, str) else tuple(reduce)
        self.dtype = dtype
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.branches = branches  # batched guidance branch order, None = ask the pipeline
        self.branch_calls = branch_calls  # guidance run as separate calls, in this order
        self.expected_steps = expected_steps
        self.store = store

        recorded = resolve(self.denoiser, sites) if sites else []
        self.plans: dict[str, _SitePlan] = {s.name: _SitePlan(s, True) for s in recorded}
        for intervention in interventions:
            for site in resolve(self.denoiser, intervention.site):
                self.plans.setdefault(site.name, _SitePlan(site, False)).interventions.append(intervention)
        self.recording = Recording(
            sites={name: plan.site for name, plan in self.plans.items() if plan.record},
            model_name=type(self.denoiser).__name__,
            family=self.site_map.family,
            stages=self.site_map.stages,
            reduce=self.reduce,
            dtype=None if dtype is None else str(dtype).replace("torch.", ""),
            prompts=prompts,
            interventions=[repr(i) for i in interventions],
        )
        self._announced = False
        self._handles: list = []
        self._active_modes: list[TorchFunctionMode] = []
        self._scheduler_step = None
        self._reset_clock()

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Recording:
        self.model._recorders.append(self)  # a workbench Model tells us about its runs
        try:
            self._attach()
        except BaseException:
            self._detach()
            raise
        return self.recording

    def __exit__(self, exc_type, exc, tb) -> None:
        self._detach()
        if exc_type is None:
            self._finish()

    def begin_run(self, *, prompts, branches, expected_steps, first_step: int = 0) -> None:
        """Called by ``Model.generate`` / ``denoise`` before a run: what the hooks cannot see.

        ``first_step``: a run resumed from step k (``denoise(start_step=k)``) numbers its first
        denoiser call k, so step selections mean the same steps as in the full run."""
        if self._step < 0:
            self._first_step = first_step
            self._step = first_step - 1
        if prompts is not None:
            self.recording.prompts = list(prompts)
        if self.branches is None and self.branch_calls is None:
            self.branches = tuple(branches)
        if self.expected_steps is None:
            self.expected_steps = expected_steps
        self._announced = True  # the runner said how long the run is, even if "unknown" (None)

    def _reset_clock(self) -> None:
        self._first_step = 0
        self._step, self._call, self._last_t = -1, 0, None
        self._geometry = None
        self._recording_now = False
        self._row_branches: list[str] = []
        self._first_call_checked = False

    def _attach(self) -> None:
        root = self.denoiser
        self._handles.append(root.register_forward_pre_hook(self._on_denoiser_call, with_kwargs=True))
        self._handles.append(root.register_forward_hook(self._on_denoiser_return, with_kwargs=True, always_call=True))
        by_module: dict[tuple[str, type], list[_SitePlan]] = defaultdict(list)
        for plan in self.plans.values():
            if isinstance(plan.site.tap, LatentTap):
                continue
            by_module[(plan.site.module, type(plan.site.tap))].append(plan)
        for (path, tap_type), plans in by_module.items():
            module = root.get_submodule(path)
            if tap_type is OutputTap:
                self._handles.append(module.register_forward_hook(self._output_hook(plans), always_call=False))
            elif tap_type is InputTap:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(plans), with_kwargs=True))
            elif tap_type is AttentionTap:
                self._attach_attention(module, plans)
        if "latent.x0" in self.plans:
            if self.scheduler is None:
                raise ValueError("latent.x0 needs a scheduler: record a pipeline or a workbench Model, not a bare denoiser")
            self._wrap_scheduler()

    def _detach(self) -> None:
        if self in self.model._recorders:
            self.model._recorders.remove(self)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._active_modes:  # a forward that raised between our pre- and post-hook
            self._active_modes.pop().__exit__(None, None, None)
        if self._scheduler_step is not None:
            original = self._scheduler_step
            self._scheduler_step = None
            if original is _NO_INSTANCE_ATTR:
                del self.scheduler.step
            else:
                self.scheduler.step = original

    def _finish(self) -> None:
        if self._step < self._first_step:
            return
        if isinstance(self.steps, (list, tuple)):
            missing = [s for s in self.steps if s > self._step or s < self._first_step]
            if missing:
                raise IndexError(f"steps {missing} are out of range: the run had {self._step + 1} steps (0..{self._step})")
        if self.timesteps is not None:
            seen = set(self.recording.timesteps)
            missing = [t for t in self.timesteps if not any(abs(t - s) < 1e-4 for s in seen)]
            if missing:
                raise IndexError(f"timesteps {missing} never occurred; the run's timesteps were {sorted(seen, reverse=True)}")
        if self.store is not None:
            self._flush_step(self._step)

    # -- the step clock ---------------------------------------------------------------------------
    def _on_denoiser_call(self, module, args, kwargs):
        t_value = kwarg_or_arg(args, kwargs, self.site_map.timestep_input)
        t = float(torch.as_tensor(t_value).flatten()[0]) if t_value is not None else float("nan")
        same_step = self.branch_calls is not None and self._call + 1 < len(self.branch_calls) and self._last_t == t
        if same_step:
            self._call += 1
        else:
            if self.store is not None and self._step >= self._first_step:
                self._flush_step(self._step)
            self._step, self._call = self._step + 1, 0
        self._last_t = t
        self._geometry = self.site_map.read_geometry(module, args, kwargs)
        if self.recording.geometry is None:
            self.recording.geometry = self._geometry
            self._label_text_tokens()
        latent = kwarg_or_arg(args, kwargs, self.site_map.latent_input)
        self._row_branches = self._branches_for_batch(latent.shape[0])
        self._validate_first_call()
        self._recording_now = self._selected(self._step, t)
        self._info = CallInfo(self._step, self._call, t, self._row_branches)
        plan = self.plans.get("latent.in")
        if plan is not None:
            new = self._visit(plan, latent)
            if new is not latent:
                return _replace_arg(args, kwargs, self.site_map.latent_input, new)
        return None

    def _on_denoiser_return(self, module, args, kwargs, output):
        plan = self.plans.get("latent.pred")
        if plan is not None:
            pred = output[0] if isinstance(output, tuple) else output.sample
            new = self._visit(plan, pred)
            if new is not pred:
                output = (new,) + tuple(output[1:]) if isinstance(output, tuple) else type(output)(sample=new)
        self._check_memory()
        return output

    def _branches_for_batch(self, batch: int) -> list[str]:
        if self.branch_calls is not None:
            return [self.branch_calls[self._call]] * batch
        branches = self.branches
        # the pipeline knows best, during its call, whether it batched guidance branches
        branches = self.model.branches_in_call() or branches
        branches = branches or ("cond",)
        if batch % len(branches):
            raise ValueError(f"a batch of {batch} cannot hold the guidance branches {branches}")
        per = batch // len(branches)
        return [b for b in branches for _ in range(per)]

    def _selected(self, step: int, t: float) -> bool:
        if self.timesteps is not None:
            return any(abs(t - s) < 1e-4 for s in self.timesteps)
        return step_selected(self.steps, step)

    def _validate_first_call(self) -> None:
        if self._first_call_checked:
            return
        self._first_call_checked = True
        total = self.expected_steps
        # a raw pipeline call sets the scheduler's timesteps before its first denoiser call; after an
        # announced run of unknown length (single denoiser calls) they are stale, so not used
        if total is None and not self._announced and getattr(self.scheduler, "timesteps", None) is not None:
            total = len(self.scheduler.timesteps)
        self._total_steps = total
        if total is not None and isinstance(self.steps, (list, tuple)):
            bad = [s for s in self.steps if not 0 <= s < total]
            if bad:
                raise IndexError(f"steps {bad} are out of range: this run has {total} steps (0..{total - 1})")

    def _label_text_tokens(self) -> None:
        """Token strings for text axes, as the Model knows them."""
        prompts = self.recording.prompts
        if prompts is None or not self._geometry.text_len:
            return
        self.recording.text_tokens = self.model.text_tokens(prompts, self._geometry.text_len)

    def _check_memory(self) -> None:
        """Refuse a capture that will not fit, as soon as its first step shows its size."""
        if not self._recording_now:
            return
        held = self.recording.nbytes()  # with a store this is one step: finished steps leave memory
        projected = held
        first_step_done = len(self.recording.steps) == 1 and self._call == len(self.branch_calls or ("",)) - 1
        if self.store is None and first_step_done and self._total_steps is not None:
            n_steps = len(self.timesteps) if self.timesteps is not None else sum(
                self._selected(s, float("nan")) for s in range(self._total_steps)
            )
            projected = held * n_steps
        if projected > self.max_bytes:
            raise CaptureTooLarge(
                f"this recording needs about {projected / 2**20:.1f} MiB (measured on its first step), over the "
                f"limit of {self.max_bytes / 2**20:.1f} MiB. Record fewer sites or steps, reduce at capture time "
                "(reduce=('head',), dtype=torch.float16, probability blocks instead of whole matrices), stream to "
                "a store (store='run.zarr'), or raise max_bytes= / WORKBENCH_MAX_CAPTURE_BYTES."
            )

    # -- visiting a site --------------------------------------------------------------------------
    def _visit(self, plan: _SitePlan, x: torch.Tensor, rows: list[str] | None = None) -> torch.Tensor:
        """Apply the plan's interventions active now and record the result (capture-time
        reductions apply to the recorded copy only); return what flows on through the model."""
        ctx = CallContext(plan.site, self._step, self._call, rows or self._row_branches)
        for intervention in plan.interventions:
            if intervention.active_at(self._step):
                x = intervention(x, ctx)
        if plan.record and self._recording_now:
            self.recording.add(plan.site, self._info, self._captured(self._reduced(plan.site, x.detach())), rows)
        return x

    def _captured(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to("cpu", dtype=self.dtype or x.dtype, copy=True)

    def _reduced(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        dims = ("batch",) + site.dims
        axes = [dims.index(d) for d in self.reduce if d in dims]
        return x.mean(dim=axes) if axes else x

    def _output_hook(self, plans: list[_SitePlan]):
        def hook(module, args, output):
            if not self._wants(plans):
                return None
            for plan in plans:
                index = plan.site.tap.index
                value = output if index is None else output[index]
                if value is None:
                    continue
                new = self._visit(plan, value)
                if new is not value:
                    output = new if index is None else _replace_index(output, index, new)
            return output

        return hook

    def _input_hook(self, plans: list[_SitePlan]):
        def hook(module, args, kwargs):
            if not self._wants(plans):
                return None
            for plan in plans:
                tap = plan.site.tap
                value = kwarg_or_arg(args, kwargs, tap)
                element = value[-tap.from_end] if tap.from_end else value
                new = self._visit(plan, element)
                if new is not element:
                    if tap.from_end:
                        items = list(value)
                        items[len(items) - tap.from_end] = new
                        new = type(value)(items)
                    args, kwargs = _replace_arg(args, kwargs, tap, new)
            return args, kwargs

        return hook

    def _wants(self, plans: list[_SitePlan]) -> bool:
        return self._recording_now or any(i.active_at(self._step) for p in plans for i in p.interventions)

    # -- attention --------------------------------------------------------------------------------
    def _attach_attention(self, module, plans: list[_SitePlan]) -> None:
        def enter(mod, args, kwargs):
            if self._wants(plans):
                mode = _AttentionObserver(self, plans)
                mode.__enter__()
                self._active_modes.append(mode)

        def leave(mod, args, kwargs, output):
            if self._active_modes and self._active_modes[-1].plans is plans:
                self._active_modes.pop().__exit__(None, None, None)

        self._handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
        self._handles.append(module.register_forward_hook(leave, with_kwargs=True, always_call=True))

    def _attention(self, plans: list[_SitePlan], q, k, v, opts: dict) -> torch.Tensor:
        text_len = self._geometry.text_len
        layout_q, layout_k = plans[0].site.tap.query, plans[0].site.tap.key
        if layout_q.segments == layout_k.segments and len(layout_q.segments) > 1:
            q_spans = k_spans = {kind: (a, b) for kind, a, b in layout_q.split(q.shape[-2], text_len)}
        else:
            q_spans = {kind: (a, b) for kind, a, b in _single(layout_q, q.shape[-2])}
            k_spans = {kind: (a, b) for kind, a, b in _single(layout_k, k.shape[-2])}
        # 1. queries, keys, values: edit and record per segment, before the kernel sees them.
        tensors = {"q": q, "k": k, "v": v}
        for plan in plans:
            tap = plan.site.tap
            if tap.role == "probs":
                continue
            full = tensors[tap.role]
            spans = q_spans if tap.role == "q" else k_spans
            start, stop = spans[tap.segment] if tap.segment else (0, full.shape[-2])
            part = full[..., start:stop, :]
            new = self._visit(plan, part)
            if new is not part:
                full = full.clone()
                full[..., start:stop, :] = new
                tensors[tap.role] = full
        q, k, v = tensors["q"], tensors["k"], tensors["v"]
        # 2. probabilities, with the fused kernel kept for the output wherever nothing edits them.
        prob_plans = [p for p in plans if p.site.tap.role == "probs"]
        editing = [p for p in prob_plans if any(i.active_at(self._step) for i in p.interventions)]
        recording = [p for p in prob_plans if p.record and self._recording_now]
        mask_opts = {key: opts.get(key) for key in ("scale", "attn_mask", "is_causal") if opts.get(key) is not None}
        if editing:
            probs = kernels.full_probs(q, k, **mask_opts)
            for plan in prob_plans:
                probs = self._visit_block(plan, probs, q_spans, k_spans)
            return probs @ v
        if any(p.site.tap.block is None for p in recording):
            out = F.scaled_dot_product_attention(q, k, v, **opts)
            probs = kernels.full_probs(q, k, **mask_opts)
            for plan in recording:
                self._visit_block(plan, probs, q_spans, k_spans)
            return out
        if recording:
            out, lse = kernels.attention_with_lse(q, k, v, **opts)
            for plan in recording:
                q_kind, k_kind = plan.site.tap.block.split("->")
                block = kernels.block_probs(q, k, lse, q_spans[q_kind], k_spans[k_kind], **mask_opts)
                self._visit(plan, block)
            return out
        return F.scaled_dot_product_attention(q, k, v, **opts)

    def _visit_block(self, plan: _SitePlan, probs, q_spans, k_spans):
        block = plan.site.tap.block
        if block is None:
            return self._visit(plan, probs)
        q_kind, k_kind = block.split("->")
        (qa, qb), (ka, kb) = q_spans[q_kind], k_spans[k_kind]
        part = probs[..., qa:qb, ka:kb]
        new = self._visit(plan, part)
        if new is not part:
            probs = probs.clone()
            probs[..., qa:qb, ka:kb] = new
        return probs

    # -- scheduler --------------------------------------------------------------------------------
    def _wrap_scheduler(self) -> None:
        scheduler = self.scheduler
        original = scheduler.__dict__.get("step", _NO_INSTANCE_ATTR)
        bound = scheduler.step
        plan = self.plans["latent.x0"]

        def step(model_output, timestep, sample, *args, **kwargs):
            output = bound(model_output, timestep, sample, *args, **kwargs)
            if self._recording_now:
                x0 = x0_from_step(scheduler, output, model_output, sample, timestep)
                n_rows = x0.shape[0]
                rows = ["guided"] * n_rows if n_rows * len(set(self._row_branches)) == len(self._row_branches) else self._row_branches
                self._visit(plan, x0, rows)
            return output

        scheduler.step = step
        self._scheduler_step = original

    # -- streaming --------------------------------------------------------------------------------
    def _flush_step(self, step: int) -> None:
        from ..store.sink import StepSink

        if self.recording._flushed is None:
            self.recording._flushed = StepSink(self.store)
        sink = self.recording._flushed
        for name in list(self.recording._raw):
            if any(s == step for s, _ in self.recording._raw[name]):
                sink.write(name, self.recording.step_slice(name, step))
        sink.end_step()
        self.recording.drop_step(step)


_NO_INSTANCE_ATTR = object()


class _AttentionObserver(TorchFunctionMode):
    """Active only inside one attention module's forward: routes its SDPA call to the engine."""

    def __init__(self, engine: Recorder, plans: list[_SitePlan]):
        super().__init__()
        self.engine, self.plans, self.seen = engine, plans, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or self.seen:
            return func(*args, **kwargs)
        self.seen = True  # adapters may call SDPA again; only the module's own attention is a site
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
        if bound.get("enable_gqa") and q.shape[1] != k.shape[1]:
            raise NotImplementedError("grouped-query attention is not supported by the recorder yet")
        bound.pop("enable_gqa", None)
        return self.engine._attention(self.plans, q, k, v, bound)


def _single(layout, length: int):
    return layout.split(length, length if layout.segments == ("text",) else 0)


def _replace_index(output, index: int, new):
    if isinstance(output, tuple):
        return output[:index] + (new,) + output[index + 1 :]
    if isinstance(output, list):
        return output[:index] + [new] + output[index + 1 :]
    key = list(output.keys())[index]  # a diffusers BaseOutput
    output[key] = new
    return output


def _replace_arg(args: tuple, kwargs: dict, tap: InputTap, new):
    if tap.kwarg in kwargs:
        kwargs = dict(kwargs)
        kwargs[tap.kwarg] = new
    else:
        args = args[: tap.position] + (new,) + args[tap.position + 1 :]
    return args, kwargs


def _check_step_selection(steps, timesteps):
    if steps is not None and timesteps is not None:
        raise ValueError("choose steps either by index (steps=) or by timestep value (timesteps=), not both")
    if isinstance(steps, int):
        steps = [steps]
    if steps is not None and not isinstance(steps, (list, tuple, slice)):
        raise TypeError(f"steps must be None, an int, a list of ints or a slice, not {type(steps).__name__}")
    if isinstance(steps, (list, tuple)) and any(s < 0 for s in steps):
        raise IndexError(f"steps must be >= 0, got {list(steps)}")
    if timesteps is not None:
        timesteps = [float(t) for t in (timesteps if isinstance(timesteps, (list, tuple)) else [timesteps])]
    return steps, timesteps


def record(target, sites=(), **options) -> Recorder:
    """Record ``sites`` (names or globs) of ``target`` during the runs inside the ``with`` block.

    >>> with record(pipe, ["transformer_blocks.*.attn.probs.image->text", "latent.*"]) as rec:
    ...     pipe("a red circle on the left", num_inference_steps=4)
    >>> rec["latent.x0"].dims
    ('sample', 'branch', 'step', 'channel', 'y', 'x')

    Options: ``steps`` (int, list or slice of step indices) or ``timesteps`` (values);
    ``reduce`` dims to average at capture time (e.g. ``("head",)``); ``dtype`` to store in;
    ``interventions`` (see ``workbench.patch`` & co.) applied in the same run; ``max_bytes``;
    ``store`` (a zarr path: each finished step is written there and dropped from memory).
    """
    return Recorder(target, sites, **options)


def intervene(target, interventions: list[Intervention], **options) -> Recorder:
    """Run with interventions only (no recording): ``with intervene(pipe, [ablate(...)]): pipe(...)``."""
    return Recorder(target, (), interventions=interventions, **options)
