"""The hook engine: attach to one denoiser instance, record and intervene, always detach.

``record(model, sites, ...)`` is a context manager around any run of the model (a diffusers
pipeline call, ``Model.generate``, a bare denoising loop). It attaches torch hooks to the
instances that hold the chosen sites, counts denoiser calls into steps (``clock.py``), and removes
every hook on exit, also when the run raises. Every hook is a named entry of its module's hook
chain (``workbench.chain``): the step clock and the denoiser call on the denoiser, one entry per
module that holds sites, the attention observer, and an ``around`` entry on the scheduler's
``step`` for ``latent.x0``. Nothing global is patched: attention is observed through a mode active
only inside a watched attention module's forward (``attention.py``). A ``Model`` announces each
run to the denoiser's chain (``chain.announce_run``); the recorder's entries hear it.

Every requested site must fire at every step where it is due, or the run fails (``firing.py``).
Compiled models run eagerly while recorded (``compiled.py``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from ..chain import Attachments, ModelHook, RunAnnouncement
from ..schedulers import x0_from_step
from ..sitemap import AttentionTap, InputTap, LatentTap, OutputTap, Site, kwarg_or_arg
from .attention import FLEX_BACKEND, AttentionInterceptor, backend_of
from .budget import CaptureTooLarge, Projection, check_budget, check_projection, default_max_bytes, project  # noqa: F401  (CaptureTooLarge re-exported)
from .clock import StepClock
from .compiled import EagerStance, compiled_regions, original_module
from .firing import FiringLog, SitesNotFired, missing_sites_error
from .interventions import CallContext, Intervention
from .queries import KeptQueries, query_subset, sites_taking
from .recording import CallInfo, Recording
from .resolve import as_model, resolve
from .streaming import flush_step


_serial = iter(range(1, 1 << 62))  # names a recorder's chain entries apart from a nested one's


@dataclass
class SitePlan:
    """What to do at one site: record it, and/or apply these interventions (in order)."""

    site: Site
    record: bool
    interventions: list[Intervention] = field(default_factory=list)


class Recorder:
    """Context manager; ``with record(...) as rec`` gives the :class:`Recording` being filled."""

    def __init__(self, target, sites=(), *, steps=None, timesteps=None, reduce=(), dtype: torch.dtype | None = None,
                 interventions: list[Intervention] = (), max_bytes: int | None = None, store=None,
                 branches: tuple[str, ...] | None = None, branch_calls: tuple[str, ...] | None = None,
                 expected_steps: int | None = None, prompts: list[str] | None = None, transform=None, queries=None):
        self.queries = query_subset(queries)  # before anything is built: a bad form fails at once
        self.model = as_model(target)
        self.denoiser, self.pipeline, self.scheduler = self.model.denoiser, self.model.pipeline, self.model.scheduler
        self.site_map = self.model.site_map
        self._compiled = compiled_regions(self.denoiser, wrappers=_callers_of(target, self.model))
        self.clock = StepClock(self.site_map, steps=steps, timesteps=timesteps, branches=branches,
                               branch_calls=branch_calls, expected_steps=expected_steps,
                               model=self.model, scheduler=self.scheduler)
        self.reduce = (reduce,) if isinstance(reduce, str) else tuple(reduce)
        if transform is not None and (self.reduce or store is not None):
            raise ValueError("transform= replaces what a site keeps, so it cannot be combined with reduce= or "
                             "store= (both need the site's own dims); pool inside the transform instead")
        self.transform = transform
        self.dtype = dtype
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.store = store
        self.projection: Projection | None = None  # the recording's size, projected at the first denoiser call

        recorded = resolve(self.denoiser, sites) if sites else []
        self.plans: dict[str, SitePlan] = {s.name: SitePlan(s, True) for s in recorded}
        for intervention in interventions:
            for site in resolve(self.denoiser, intervention.site):
                self.plans.setdefault(site.name, SitePlan(site, False)).interventions.append(intervention)
        hooked = [p for p in self.plans.values() if p.site.name != "latent.x0"]
        self._recorded_names = {p.site.name for p in hooked if p.record}  # due at every selected step
        self._intervened_plans = [p for p in hooked if p.interventions]  # due where an intervention is active
        self.recording = Recording(
            sites={name: plan.site for name, plan in self.plans.items() if plan.record},
            model_name=type(self.denoiser).__name__,
            family=self.site_map.family,
            stages=self.site_map.stages,
            reduce=self.reduce,
            dtype=None if dtype is None else str(dtype).replace("torch.", ""),
            prompts=prompts,
            interventions=[repr(i) for i in interventions],
            transform="" if transform is None else getattr(transform, "__name__", repr(transform)),
        )
        # the probabilities sites that keep only some of their queries, and each one's indices per grid
        self._query_sites = set() if self.queries is None else sites_taking(self.queries, list(self.recording.sites.values()))
        self._kept_index: dict[tuple, torch.Tensor] = {}
        self.geometry = None
        self.firing = FiringLog()
        self._x0_fired = True
        self._stance = EagerStance()
        self.name = f"record.{next(_serial)}"
        self._attachments = Attachments()
        self._interceptors: list[AttentionInterceptor] = []
        self._rows_pending: dict[str, dict[int, torch.Tensor]] = {}  # per-sample attention rows not all seen yet
        # a capture is a plain host copy unless a transform or a reduction applies: decided once here,
        # not per captured tensor (``_captured`` is the general path)
        self._plain_copy = transform is None and not self.reduce

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Recording:
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

    def begin_run(self, run: RunAnnouncement) -> None:
        """Announced by ``Model.generate`` / ``predict`` / ``denoise`` before a run, through the
        denoiser's chain: the prompts label the samples (the clock hears the rest itself).

        ``run.first_step``: a run resumed from step k (``denoise(start_step=k)``) numbers its first
        denoiser call k, so step selections mean the same steps as in the full run."""
        if run.prompts is not None:
            self.recording.prompts = list(run.prompts)

    def _attach(self) -> None:
        root = self.denoiser

        def entry(owner, role: str, hook: ModelHook, method: str = "forward") -> None:
            self._attachments.add(owner, f"{self.name}.{role}", hook, method)

        entry(root, "clock", self.clock)  # first: the calls' step is counted before anything reads it
        entry(root, "denoiser", _DenoiserCall(self))
        by_module: dict[tuple[str, type], list[SitePlan]] = defaultdict(list)
        for plan in self.plans.values():
            if not isinstance(plan.site.tap, LatentTap):
                by_module[(plan.site.module, type(plan.site.tap))].append(plan)
        for (path, tap_type), plans in by_module.items():
            module = root.get_submodule(path)
            if tap_type is OutputTap:
                entry(module, "outputs", _OutputSites(self, plans))
            elif tap_type is InputTap:
                entry(module, "inputs", _InputSites(self, plans))
            elif tap_type is AttentionTap:
                interceptor = AttentionInterceptor(self, path, module, plans)
                self._interceptors.append(interceptor)
                entry(module, "attention", interceptor)
        if "latent.x0" in self.plans:
            if self.scheduler is None:
                raise ValueError("latent.x0 needs a scheduler: record a pipeline or a workbench Model, not a bare denoiser")
            entry(self.scheduler, "x0", _SchedulerStep(self, self.plans["latent.x0"]), method="step")
        if self._compiled or any(i.backend == FLEX_BACKEND for i in self._interceptors):
            self._stance.enter()  # compiled code (and flex's own compile) runs eagerly while we watch

    def _detach(self) -> None:
        self._stance.exit()
        self._attachments.remove_all()
        for interceptor in self._interceptors:
            interceptor.close()

    def _finish(self) -> None:
        if self.clock.step < self.clock.first_step:
            if self.plans:
                raise SitesNotFired(
                    f"the {type(self.denoiser).__name__} was never called inside the `with` block, so none of the "
                    f"{len(self.plans)} requested site(s) fired: run the model inside the block"
                )
            return
        self._check_x0_fired()
        self.clock.check_reached(self.recording.timesteps)
        if self.store is not None:
            flush_step(self.recording, self.store, self.clock.step)

    # -- the denoiser call ------------------------------------------------------------------------
    def _on_denoiser_call(self, module, args, kwargs):
        """After the clock (the chain entry before ours) has counted this call."""
        latent = kwarg_or_arg(args, kwargs, self.site_map.latent_input)
        previous = self.clock.previous_step
        if self.clock.new_step and previous >= self.clock.first_step:
            self._check_x0_fired()
            if self.store is not None:
                flush_step(self.recording, self.store, previous)
        self._x0_fired = not (self.clock.selected_now and "latent.x0" in self.recording.sites)
        self.firing.new_call()
        self.geometry = self.site_map.read_geometry(module, args, kwargs)
        if self.recording.geometry is None:
            self.recording.geometry = self.geometry
            self._label_text_tokens()
            self._project_budget(self.site_map.batched_latent(latent))
        self._info = CallInfo(self.clock.step, self.clock.call, self.clock.timestep, self.clock.row_branches)
        plan = self.plans.get("latent.in")
        if plan is not None:
            batch = self.site_map.batched_latent(latent)
            new = self.visit(plan, batch)
            if new is not batch:
                return _replace_arg(args, kwargs, self.site_map.latent_input, self.site_map.unbatched_latent(new, latent))
        return None

    def _project_budget(self, latent: torch.Tensor) -> None:
        """Before the denoiser's first forward: refuse a recording whose projected size is over budget."""
        recorded = [p.site for p in self.plans.values() if p.record]
        if not recorded:
            return
        if self.transform is not None:  # a transform's results have no shape known in advance: measured
            self.projection = Projection({}, tuple(s.name for s in recorded), self.clock.calls_per_step, None)
            return
        self.projection = project(
            recorded, self.denoiser, self.geometry, latent, latent_dims=self.site_map.latent_dims,
            stages=self.site_map.stages, reduce=self.reduce, dtype=self.dtype, calls_per_step=self.clock.calls_per_step,
            steps_held=1 if self.store is not None else self.clock.n_selected_steps(),
            kept_queries=self._kept_query_count if self.queries is not None else None,
        )
        check_projection(self.projection, self.max_bytes, streaming=self.store is not None)

    def _on_denoiser_return(self, module, args, kwargs, output):
        if output is None:  # the forward raised; its error is what the user sees
            return None
        plan = self.plans.get("latent.pred")
        if plan is not None:
            pred = output[0] if isinstance(output, tuple) else output.sample
            batch = self.site_map.batched_latent(pred)
            new = self.visit(plan, batch)
            if new is not batch:
                new = self.site_map.unbatched_latent(new, pred)
                output = (new,) + tuple(output[1:]) if isinstance(output, tuple) else type(output)(sample=new)
        self._check_fired()
        if self.clock.selected_now:
            # The backstop, on measured bytes. It still earns its place beside the projection: sites
            # the projection cannot size (transform= results, a U-Net's skip/backbone inputs) or sizes
            # short (Lumina 2's padded caption refiner) are only known once captured, and a run of
            # unknown length (bare denoiser calls) grows step by step.
            first_step_done = len(self.recording.steps) == 1 and self.clock.call == self.clock.calls_per_step - 1
            n_steps = self.clock.n_selected_steps() if self.store is None and first_step_done else None
            check_budget(self.recording.nbytes(), n_steps, self.max_bytes)
        return output

    def _check_fired(self) -> None:
        step, fired = self.clock.step, self.firing.fired
        missing = self._recorded_names - fired if self.clock.selected_now else set()
        missing |= {p.site.name for p in self._intervened_plans
                    if p.site.name not in fired and any(i.active_at(step) for i in p.interventions)}
        if missing:
            due = [self.plans[name].site for name in self.plans if name in missing]
            raise missing_sites_error(due, step=step, call=self.clock.call, entered=self.firing.entered,
                                      compiled=self._compiled, model_name=type(self.denoiser).__name__,
                                      backends={i.path: backend_of(i.module) for i in self._interceptors})

    def _check_x0_fired(self) -> None:
        if not self._x0_fired:
            self._x0_fired = True
            raise missing_sites_error([self.recording.sites["latent.x0"]], step=self.clock.step, call=self.clock.call,
                                      entered=set(), compiled=[], backends={}, model_name=type(self.denoiser).__name__)

    def _label_text_tokens(self) -> None:
        """Token strings for text axes, as the Model knows them."""
        prompts = self.recording.prompts
        if prompts is None or not self.geometry.text_len:
            return
        self.recording.text_tokens = self.model.text_tokens(prompts, self.geometry.text_len)
        self.recording.text_encoders = self.model.text_encoders(self.geometry.text_len)

    # -- visiting a site --------------------------------------------------------------------------
    def visit(self, plan: SitePlan, x: torch.Tensor, rows: list[str] | None = None,
              kept: torch.Tensor | None = None, fresh: bool = False) -> torch.Tensor:
        """Apply the plan's interventions active now and record the result (capture-time
        reductions, and ``kept``: the query rows a probabilities site keeps, apply to the recorded
        copy only); return what flows on through the model. ``fresh``: ``x`` is a tensor computed for
        this site alone (nothing else holds it), so on the CPU the recording keeps it without a copy."""
        self.firing.fired.add(plan.site.name)
        clock = self.clock
        original = x
        if plan.interventions:
            ctx = CallContext(plan.site, clock.step, clock.call, rows or clock.row_branches, clock.timestep)
            for intervention in plan.interventions:
                if intervention.active_at(clock.step):
                    x = intervention(x, ctx)
        if plan.record and clock.selected_now:
            if kept is None:
                kept_x, fresh = x, fresh and x is original  # an intervention's result may alias anything
            else:
                kept_x, fresh = x.index_select(-2, kept), True  # (batch, head, query, key): a new tensor of query rows
            self.recording.add(plan.site, self._info, self._captured(plan.site, kept_x, fresh), rows)
        return x

    def visit_row(self, plan: SitePlan, x: torch.Tensor, row: int, n_rows: int,
                  kept: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`visit` for one batch row of a site whose module computes one sample at a time
        (per-sample attention): interventions see that row (``CallContext.rows``), and the
        recording keeps the batch once all ``n_rows`` rows have been seen."""
        self.firing.fired.add(plan.site.name)
        clock = self.clock
        if plan.interventions:
            ctx = CallContext(plan.site, clock.step, clock.call, clock.row_branches[row : row + 1], clock.timestep,
                              rows=slice(row, row + 1))
            for intervention in plan.interventions:
                if intervention.active_at(clock.step):
                    x = intervention(x, ctx)
        if plan.record and clock.selected_now:
            pending = self._rows_pending.setdefault(plan.site.name, {})
            # a copy (the model may still change x in place), of the query rows kept
            pending[row] = (x if kept is None else x.index_select(-2, kept)).detach().clone()
            if len(pending) == n_rows:
                del self._rows_pending[plan.site.name]
                whole = torch.cat([pending[i] for i in range(n_rows)])
                self.recording.add(plan.site, self._info, self._captured(plan.site, whole, fresh=True))  # cat: new
        return x

    def _kept_query_count(self, site: Site, n_tokens: int) -> int:
        """How many of ``site``'s ``n_tokens`` queries it keeps, for the budget's projection (which
        so also refuses positions outside the grid before the first forward)."""
        if site.name not in self._query_sites:
            return n_tokens
        return len(self.queries.positions(site.query_layout.segments[0], n_tokens, self.geometry, site.name))

    def kept_queries(self, plan: SitePlan, kind: str, n_tokens: int, device) -> torch.Tensor | None:
        """Indices, among the ``n_tokens`` ``kind`` queries of ``plan``'s site, of the queries it keeps
        (``record(..., queries=)``); None where it keeps them all. Resolved once per grid and device;
        the recording labels the kept rows with them."""
        if plan.site.name not in self._query_sites:
            return None
        key = (plan.site.name, n_tokens, self.geometry.grid, self.geometry.frames, device)
        index = self._kept_index.get(key)
        if index is None:
            positions = self.queries.positions(kind, n_tokens, self.geometry, plan.site.name)
            self.recording.keep_queries(plan.site.name, KeptQueries(positions, n_tokens, self.queries.spec))
            index = self._kept_index[key] = torch.as_tensor(positions, device=device)
        return index

    def _captured(self, site: Site, x: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        """The copy a recording keeps: reduced, on the CPU, in the requested dtype, never aliasing
        a tensor the model may still change in place (``fresh``: ``x`` is one nothing else holds, kept
        as it is on the CPU). From a GPU the copy is queued without waiting (``transfer.HostCopies``);
        the recording waits once, when it is read."""
        x = x.detach()
        copies = self.recording.host_copies
        if self._plain_copy:
            return copies.copy(x, self.dtype or x.dtype)
        if self.transform is not None:
            # What the transform returns (a pooled map, say) is all that is kept: the full-size
            # activation is never copied. A result that shares the live tensor's memory (a view,
            # or x itself) is copied, since the model may still change that tensor in place.
            kept = self.transform(site, x, self.geometry)
            fresh = kept.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
            return copies.copy(kept, self.dtype or kept.dtype, fresh=fresh)
        if self.reduce:
            dims = ("batch",) + site.dims
            axes = [dims.index(d) for d in self.reduce if d in dims]
            if axes:
                x = x.mean(dim=axes)  # a new tensor: no copy needed
                return copies.copy(x, self.dtype or x.dtype, fresh=True)
        return copies.copy(x, self.dtype or x.dtype, fresh=fresh)

    def wants(self, plans: list[SitePlan]) -> bool:
        """Whether any of ``plans`` is due now (recorded at a selected step, or intervened on)."""
        return self.clock.selected_now or any(i.active_at(self.clock.step) for p in plans for i in p.interventions)

    def wants_now(self, intervened: tuple[SitePlan, ...]) -> bool:
        """:meth:`wants` for a module's plans, given the ones among them with interventions (found once
        per module, so a recording without interventions asks the clock only)."""
        return self.clock.selected_now or (bool(intervened) and self.wants(intervened))


class _DenoiserCall(ModelHook):
    """The recorder's entry on the denoiser: per call, firing checks, ``latent.in`` / ``latent.pred``."""

    always_call = True  # a forward that raised still ends the call (its error is what the user sees)

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def pre_forward(self, module, args, kwargs):
        return self.recorder._on_denoiser_call(module, args, kwargs)

    def post_forward(self, module, args, kwargs, output):
        return self.recorder._on_denoiser_return(module, args, kwargs, output)

    def begin_run(self, run: RunAnnouncement) -> None:
        self.recorder.begin_run(run)


class _OutputSites(ModelHook):
    """The output sites of one module (``out``, ``out.image``, ...), visited after its call.

    This runs once per watched module call, so what does not change during a run (each plan's
    output index, which plans carry interventions) is looked up here once."""

    def __init__(self, recorder: Recorder, plans: list[SitePlan]):
        self.recorder, self.plans = recorder, plans
        self._indexed = tuple((plan, plan.site.tap.index) for plan in plans)
        self._intervened = tuple(p for p in plans if p.interventions)

    def post_forward(self, module, args, kwargs, output):
        recorder = self.recorder
        if not recorder.wants_now(self._intervened):
            return None
        changed = False
        for plan, index in self._indexed:
            if index is None:
                value = output
            elif isinstance(output, torch.Tensor):
                # indexing would silently take one sample of the batch
                raise TypeError(
                    f"{plan.site.name}: the site map reads element {index} of a tuple, but "
                    f"{type(module).__name__} returned one tensor; fix the family's site map in hooks/"
                )
            else:
                value = output[index]
            if value is None:
                continue  # the site does not fire: the firing check names it
            new = recorder.visit(plan, value)
            if new is not value:
                output = new if index is None else _replace_index(output, index, new)
                changed = True
        return output if changed else None  # None: torch keeps the module's own output


class _InputSites(ModelHook):
    """The input sites of one module (``skip.j``, ``backbone.j``), visited before its call."""

    def __init__(self, recorder: Recorder, plans: list[SitePlan]):
        self.recorder, self.plans = recorder, plans
        self._intervened = tuple(p for p in plans if p.interventions)

    def pre_forward(self, module, args, kwargs):
        recorder = self.recorder
        if not recorder.wants_now(self._intervened):
            return None
        for plan in self.plans:
            tap = plan.site.tap
            value = kwarg_or_arg(args, kwargs, tap)
            element = value[-tap.from_end] if tap.from_end else value
            new = recorder.visit(plan, element)
            if new is not element:
                if tap.from_end:
                    items = list(value)
                    items[len(items) - tap.from_end] = new
                    new = type(value)(items)
                args, kwargs = _replace_arg(args, kwargs, tap, new)
        return args, kwargs


class _SchedulerStep(ModelHook):
    """Around the scheduler's ``step``: ``latent.x0`` from what the step computed."""

    def __init__(self, recorder: Recorder, plan: SitePlan):
        self.recorder, self.plan = recorder, plan

    def around(self, step, model_output, timestep, sample, *args, **kwargs):
        output = step(model_output, timestep, sample, *args, **kwargs)
        recorder, clock = self.recorder, self.recorder.clock
        if clock.selected_now:
            x0 = x0_from_step(recorder.scheduler, output, model_output, sample, timestep)
            n_rows, row_branches = x0.shape[0], clock.row_branches
            rows = ["guided"] * n_rows if n_rows * len(set(row_branches)) == len(row_branches) else row_branches
            recorder.visit(self.plan, x0, rows)
            recorder._x0_fired = True
        return output


def _callers_of(target, model) -> list:
    """What a run may call instead of ``model.denoiser`` itself: the module given, or the pipeline's
    components (``pipe.transformer = torch.compile(pipe.transformer)`` leaves a wrapper there)."""
    if isinstance(target, torch.nn.Module):
        return [target]
    components = getattr(model.pipeline, "components", None) or {}
    return [c for c in components.values() if isinstance(c, torch.nn.Module)]


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


def record(target, sites: str | list[str] | tuple[str, ...] = (), *, steps=None, timesteps=None,
           reduce: str | tuple[str, ...] = (), dtype: torch.dtype | None = None,
           interventions: list[Intervention] = (), max_bytes: int | None = None, store=None,
           branches: tuple[str, ...] | None = None, branch_calls: tuple[str, ...] | None = None,
           expected_steps: int | None = None, prompts: list[str] | None = None, transform=None,
           queries=None) -> Recorder:
    """Record ``sites`` (names or globs) of ``target`` during the runs inside the ``with`` block.

    >>> with record(pipe, ["transformer_blocks.*.attn.probs.image->text", "latent.*"]) as rec:
    ...     pipe("a red circle on the left", num_inference_steps=4)
    >>> rec["latent.x0"].dims
    ('sample', 'branch', 'step', 'channel', 'y', 'x')

    Args:
        target: a workbench ``Model``, a diffusers pipeline or a denoiser module (compiled or not).
        sites: site names or glob patterns (``workbench.sites(model)`` lists them).
        steps: step indices to record (int, list or slice); None records every step.
        timesteps: or choose steps by the scheduler's timestep values.
        reduce: dims to average at capture time, e.g. ``("head",)``.
        dtype: store captures in this dtype (e.g. ``torch.float16``).
        interventions: ``patch``/``ablate``/``scale``/``steer``/``edit`` applied in the same run.
        max_bytes: refuse a capture projected to need more memory (default: half of RAM, <= 8 GiB).
        store: a zarr path; each finished step is written there and dropped from memory.
        branches: guidance branch order of a batched call, when no pipeline or Model says it.
        branch_calls: guidance run as separate denoiser calls per step, in this order.
        expected_steps: the run's length, when the recorder cannot learn it (to check ``steps``).
        prompts: the prompts of the run, when no Model passes them (labels ``sample`` and tokens).
        transform: ``fn(site, tensor, geometry) -> tensor`` applied at capture time; only its
            result is kept (no copy of the full activation), read with ``rec.kept(site, step)``.
            For jobs that pool every capture at once (``workbench extract``); the result has no
            labelled dims, so ``rec[site]`` refuses it.
        queries: keep (and compute) only these query rows of every recorded probabilities site whose
            queries are image or video tokens (``image->image``, ``image->text``, ``attn1``,
            ``video->video``...): ``"center"``, a box ``{"y": (y0, y1), "x": (x0, x1)}`` (``"frame"`` for
            video, ``"stride": k`` for every k-th patch), a list of token indices or of (y, x) /
            (frame, y, x) positions, on each site's own token grid. The query axis keeps the kept
            positions' coordinates (``query_y``, ``query_x``, ``query_frame``, ``query_index``).

    Every requested site must fire at every selected step; otherwise the run stops with
    ``SitesNotFired`` naming the sites, the step and the likely cause.
    """
    return Recorder(target, sites, steps=steps, timesteps=timesteps, reduce=reduce, dtype=dtype,
                    interventions=interventions, max_bytes=max_bytes, store=store, branches=branches,
                    branch_calls=branch_calls, expected_steps=expected_steps, prompts=prompts,
                    transform=transform, queries=queries)


def intervene(target, interventions: list[Intervention], *, branches: tuple[str, ...] | None = None,
              branch_calls: tuple[str, ...] | None = None, expected_steps: int | None = None) -> Recorder:
    """Run with interventions only (no recording): ``with intervene(pipe, [ablate(...)]): pipe(...)``.

    Each intervention must reach its site at every step it is active at, or the run stops
    (``SitesNotFired``). ``branches``/``branch_calls``/``expected_steps`` as for :func:`record`."""
    return Recorder(target, (), interventions=interventions, branches=branches, branch_calls=branch_calls,
                    expected_steps=expected_steps)
