"""The step clock: which step and guidance call each denoiser call belongs to.

A diffusion run calls the denoiser once per step (guidance batched into the call), or several
times per step (guidance run as separate calls, ``branch_calls``). The clock counts calls into
steps, says which guidance branch each batch row holds, and whether the current step is one the
user selected (by index, ``steps=``, or by timestep value, ``timesteps=``).

This is the only step clock. Each recorder and each feature-reuse context attaches one to the
denoiser's hook chain (``workbench.chain``) as an entry ahead of its own, so it has counted the
call before they look at it, and hears the runner's announcement of a run (``begin_run``).
"""

from __future__ import annotations

import torch

from ..chain import ModelHook, RunAnnouncement
from ..sitemap import kwarg_or_arg
from .interventions import step_selected
from .transfer import host_scalar


def check_step_selection(steps, timesteps):
    """Normalise ``steps=`` / ``timesteps=``; refuse both at once and bad types or values."""
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


class StepClock(ModelHook):
    """Counts denoiser calls into (step, call) and knows the guidance branch of every batch row.

    ``new_run_when_timestep_rises``: a timestep higher than the last one (lower, for a site map whose
    timestep rises over a run) starts a new run at
    ``first_step`` (what a cache needs when a pipeline is called twice without an announcement);
    a recorder leaves it off and numbers the steps of consecutive runs on."""

    def __init__(self, site_map, *, steps=None, timesteps=None, branches=None, branch_calls=None,
                 expected_steps=None, model, scheduler, new_run_when_timestep_rises: bool = False):
        self.site_map = site_map
        self.steps, self.timesteps = check_step_selection(steps, timesteps)
        self.branches = branches  # batched guidance branch order, None = ask the pipeline
        self.branch_calls = branch_calls  # guidance run as separate calls, in this order
        self.expected_steps = expected_steps
        self.model, self.scheduler = model, scheduler
        self.first_step = 0  # a resumed run (denoise(start_step=k)) starts counting at k
        self.announced = False
        self.new_run_when_timestep_rises = new_run_when_timestep_rises
        self.run_index = 0  # counts the runs this clock has seen start
        self.reset()

    def reset(self) -> None:
        self.step, self.call, self.timestep = self.first_step - 1, 0, None
        self.new_step, self.previous_step = False, self.step
        self.row_branches: list[str] = []
        self.selected_now = False
        self.total_steps: int | None = None
        self._first_call_checked = False

    # -- chain entry ------------------------------------------------------------------------------
    def pre_forward(self, module, args, kwargs):
        self.tick(args, kwargs, kwarg_or_arg(args, kwargs, self.site_map.latent_input))

    def begin_run(self, run: RunAnnouncement) -> None:
        self.announce(branches=run.branches, expected_steps=run.expected_steps, first_step=run.first_step)

    def announce(self, *, branches, expected_steps, first_step: int = 0) -> None:
        """What a runner (``Model.generate`` / ``denoise``) says before a run."""
        if self.new_run_when_timestep_rises:  # every announced run starts from its first step
            self.first_step = first_step
            self.reset()
            self.run_index += 1
        elif self.step < 0:
            self.first_step = first_step
            self.step = first_step - 1
        if self.branches is None and self.branch_calls is None:
            self.branches = tuple(branches)
        if self.expected_steps is None:
            self.expected_steps = expected_steps
        self.announced = True  # the runner said how long the run is, even if "unknown" (None)

    def tick(self, args, kwargs, latent: torch.Tensor | list[torch.Tensor]) -> bool:
        """Advance for a new denoiser call; True when it starts a new step (``new_step``; the step
        before it is ``previous_step``)."""
        # on a GPU the timestep is read on the host only where the clock needs its value now (it
        # decides the step); otherwise it stays queued, a label read when the recording is read
        needed_now = self.timesteps is not None or self.branch_calls is not None or self.new_run_when_timestep_rises
        t = host_scalar(kwarg_or_arg(args, kwargs, self.site_map.timestep_input), now=needed_now)
        if self.new_run_when_timestep_rises and self.timestep is not None and self._went_back(t):
            self.reset()  # the timestep went back to the run's start: a new run nobody announced
            self.run_index += 1
        self.previous_step = self.step
        same_step = self.branch_calls is not None and self.call + 1 < len(self.branch_calls) and self.timestep == t
        if same_step:
            self.call += 1
        else:
            self.step, self.call = self.step + 1, 0
        self.timestep = t
        self.row_branches = self._branches_for_batch(len(latent))  # a batched tensor's rows, or a list's samples (Z-Image)
        self._validate_first_call()
        self.selected_now = self.selected(self.step, t)
        self.new_step = not same_step
        return self.new_step

    def _went_back(self, t: float) -> bool:
        """The timestep moved back towards the start of a run: up, or down where it rises over a run."""
        return t < self.timestep if self.site_map.timestep_rises else t > self.timestep

    @property
    def calls_per_step(self) -> int:
        return len(self.branch_calls or ("",))

    def selected(self, step: int, t: float) -> bool:
        if self.timesteps is not None:
            return any(abs(t - s) < 1e-4 for s in self.timesteps)
        return step_selected(self.steps, step)

    def n_selected_steps(self) -> int | None:
        """How many steps of this run are selected, if the run's length is known."""
        if self.timesteps is not None:
            return len(self.timesteps)
        if self.total_steps is None:
            return None
        return sum(self.selected(s, float("nan")) for s in range(self.total_steps))

    def check_reached(self, recorded_timesteps: list[float]) -> None:
        """After the run: every selected step index or timestep occurred."""
        if isinstance(self.steps, (list, tuple)):
            missing = [s for s in self.steps if s > self.step or s < self.first_step]
            if missing:
                raise IndexError(f"steps {missing} are out of range: the run had {self.step + 1} steps (0..{self.step})")
        if self.timesteps is not None:
            seen = set(recorded_timesteps)
            missing = [t for t in self.timesteps if not any(abs(t - s) < 1e-4 for s in seen)]
            if missing:
                raise IndexError(f"timesteps {missing} never occurred; the run's timesteps were {sorted(seen, reverse=True)}")

    def _branches_for_batch(self, batch: int) -> list[str]:
        if self.branch_calls is not None:
            return [self.branch_calls[self.call]] * batch
        branches = self.branches
        try:  # the pipeline knows best, during its call, whether it batched guidance branches
            branches = self.model.branches_in_call() or branches
        except AttributeError:  # a pipeline never called (its guidance scale is unset): not its call
            pass
        branches = branches or ("cond",)
        if batch % len(branches):
            raise ValueError(f"a batch of {batch} cannot hold the guidance branches {branches}")
        per = batch // len(branches)
        return [b for b in branches for _ in range(per)]

    def _validate_first_call(self) -> None:
        if self._first_call_checked:
            return
        self._first_call_checked = True
        total = self.expected_steps
        # a raw pipeline call sets the scheduler's timesteps before its first denoiser call; after an
        # announced run of unknown length (single denoiser calls) they are stale, so not used
        if total is None and not self.announced and getattr(self.scheduler, "timesteps", None) is not None:
            total = len(self.scheduler.timesteps)
        self.total_steps = total
        if total is not None and isinstance(self.steps, (list, tuple)):
            bad = [s for s in self.steps if not 0 <= s < total]
            if bad:
                raise IndexError(f"steps {bad} are out of range: this run has {total} steps (0..{total - 1})")
