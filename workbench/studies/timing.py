"""Side-by-side timing: instrumented runs against bare runs of the same work, in one process.

The method of the overhead benchmarks (``benchmarks/capture_overhead.py``,
``benchmarks/real_width.py``): bare and instrumented runs alternate in one process, so each ratio
compares runs made at the same moments of a shared, noisy machine. Time is taken twice: wall clock,
and the process's own CPU time (``time.process_time``), which on a shared machine counts only this
process's work and is the ratio to read there (on one torch thread it is exact).

Memory is taken per run where Linux allows it: writing ``5`` to ``/proc/self/clear_refs`` resets the
process's high-water mark (``VmHWM``) to its current resident set, so after a run ``VmHWM`` is that
run's own peak, in a process that has already made other runs.

Where two instrumented runs are compared with each other (workbench against a hand-written hook
loop), :func:`counterbalanced` runs them and the bare run in rounds whose order rotates through
every permutation: no run always follows another, and the two compared runs of a round are
seconds apart, so a slow drift of the machine's speed cancels in their difference.
"""

from __future__ import annotations

import itertools
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``(fn(), wall seconds, CPU seconds of this process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def process_peak_rss_mib() -> float:
    """The process's peak resident memory since it started (``getrusage``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mib(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(f"{_STATUS} has no {field} line")


def run_peak_supported() -> bool:
    """Whether a run's own peak can be measured here (Linux ``clear_refs``)."""
    try:
        _CLEAR_REFS.write_text("5")
        _status_mib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def measure_run(fn: Callable[[], object]) -> dict:
    """Run ``fn`` once: its wall and CPU seconds and, where supported, its peak resident memory
    (``peak_mib``) and that peak above the resident memory at its start (``extra_mib``). The result
    of ``fn`` is dropped before returning, so what it captured is freed."""
    peak = run_peak_supported()  # resets the high-water mark when supported
    start = _status_mib("VmRSS") if peak else None
    result, wall, cpu = timed(fn)
    row = {"wall_s": wall, "cpu_s": cpu}
    if peak:
        row["peak_mib"] = _status_mib("VmHWM")
        row["extra_mib"] = row["peak_mib"] - start
    del result
    return row


def side_by_side(bare: Callable[[], object], runs: dict[str, Callable[[], object]], repeats: int, *,
                 leading_bare: int | None = None, warm_up: bool = True) -> dict[str, dict]:
    """Time each of ``runs`` against ``bare`` in this process.

    Order: one bare warm-up run; ``leading_bare`` bare runs (default ``repeats``; their peak memory is
    ``bare_peak_mib``); each run of ``runs`` once untimed if ``warm_up``; then ``repeats`` rounds of
    (each run of ``runs``, then a bare run). Every bare run counts towards the bare medians, so
    configurations measured together are compared with the same bare runs.

    Returns, per name of ``runs``: the medians of CPU and wall seconds (instrumented and bare), their
    ratios (``ratio`` is CPU time), the per-repeat CPU ratios against the bare median, the peak
    resident memory of the whole process and of its bare runs, and, where supported, each repeat's
    own peak (``run_peak_mib``) and its peak above the resident memory at its start (``run_extra_mib``).
    """
    bare()  # warm-up
    bare_rows = [measure_run(bare) for _ in range(repeats if leading_bare is None else leading_bare)]
    bare_peak = process_peak_rss_mib()
    if warm_up:
        for run in runs.values():
            run()
    inst_rows: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            inst_rows[name].append(measure_run(run))
        bare_rows.append(measure_run(bare))
    med = statistics.median
    bare_cpu, bare_wall = med(r["cpu_s"] for r in bare_rows), med(r["wall_s"] for r in bare_rows)
    out = {}
    for name, rows in inst_rows.items():
        cpu, wall = med(r["cpu_s"] for r in rows), med(r["wall_s"] for r in rows)
        out[name] = {
            "bare_cpu_s": bare_cpu, "instrumented_cpu_s": cpu, "ratio": cpu / bare_cpu,
            "wall_ratio": wall / bare_wall, "bare_wall_s": bare_wall, "instrumented_wall_s": wall,
            "cpu_ratios": [r["cpu_s"] / bare_cpu for r in rows],
            "wall_ratios": [r["wall_s"] / bare_wall for r in rows],
            "bare_peak_mib": bare_peak, "peak_mib": process_peak_rss_mib(),
            "extra_peak_mib": process_peak_rss_mib() - bare_peak,
        }
        if all("peak_mib" in r for r in rows + bare_rows):
            out[name].update(
                run_peak_mib=max(r["peak_mib"] for r in rows), run_extra_mib=max(r["extra_mib"] for r in rows),
                bare_run_peak_mib=max(r["peak_mib"] for r in bare_rows),
                bare_run_extra_mib=max(r["extra_mib"] for r in bare_rows),
            )
    return out


def counterbalanced(runs: dict[str, Callable[[], object]], rounds: int, *, warm_up: bool = True) -> dict[str, list[float]]:
    """CPU seconds of each of ``runs`` per round, ``rounds`` rounds. Each round runs every one of
    ``runs`` once, in an order that cycles through all permutations of them (so with three runs,
    each stands first, second and third equally often over every six rounds). Round ``i`` of each
    list is one round: subtract them pairwise to compare two runs made moments apart. ``warm_up``:
    each run once, untimed, first."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if warm_up:
        for run in runs.values():
            run()
    orders = list(itertools.permutations(runs))
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        for name in orders[i % len(orders)]:
            cpu[name].append(timed(runs[name])[2])
    return cpu
