"""The extraction job: model x dataset x sites x timesteps -> a resumable zarr feature store.

``extract`` loads the model, creates the store (or checks that the existing one holds this job),
and computes every unfinished chunk (:func:`workbench.features.extraction.run_chunk`) under the
rules of every job that writes a store (``workbench.store.jobs``): chunks are claimed, so several
jobs on one store share the work; Ctrl-C stops after the current chunk; a full disk ends the job
with the command that resumes it; a damaged chunk is recomputed alone.

Library:
    >>> from workbench.features import extract
    >>> report = extract(model="toy-unet", dataset="shapes", sites=["up_blocks.*.out"],
    ...                  timesteps=[50, 150, 300], out="feats.zarr",
    ...                  dataset_options=dict(limit=512, max_objects=1))           # doctest: +SKIP
    >>> report.computed, report.images_per_second                              # doctest: +SKIP

Command line: ``workbench extract --model toy-unet --dataset shapes --sites "up_blocks.*.out"
--timesteps 50,150,300 --out feats.zarr`` (see ``workbench extract --help``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..store.jobs import STALE_AFTER, StoreJob
from . import feature_store
from .config import DatasetSpec, ExtractConfig
from .extraction import ChunkResult, Extractor, run_chunk

log = logging.getLogger("workbench.features")

RESUME_CALL = "run the same extract(...) call again (finished chunks are kept)"


@dataclass
class ExtractReport:
    """What one run of a job did. ``computed``: the chunks this run computed (empty when the store
    was already complete, or other jobs on the store computed the rest); ``already_done``: chunks
    found finished and left alone; ``repaired``: finished chunks found damaged and recomputed;
    ``seconds``: the whole run, ``compute_seconds``: the chunks alone (model loading and store
    creation aside), ``compute_cpu_seconds``: this process's CPU time over the same span."""

    out: str
    images: int
    chunks: int
    computed: list[int]
    computed_images: int
    already_done: int
    failures: list[str]
    seconds: float
    compute_seconds: float
    created: bool
    repaired: list[int] = field(default_factory=list)
    compute_cpu_seconds: float = float("nan")

    @property
    def images_per_second(self) -> float:
        return self.computed_images / self.compute_seconds if self.compute_seconds > 0 else float("nan")

    def __str__(self) -> str:
        repaired = f"; found {len(self.repaired)} damaged chunk(s) ({', '.join(map(str, self.repaired))})" \
            if self.repaired else ""
        if not self.computed:
            return f"{self.out}: complete ({self.chunks} chunks, {self.images} images); nothing to do" + repaired
        text = (
            f"{self.out}: computed {len(self.computed)} of {self.chunks} chunks ({self.computed_images} images) "
            f"in {self.compute_seconds:.1f} s ({self.images_per_second:.1f} images/s)"
        )
        if self.already_done:
            text += f"; {self.already_done} chunks were already done"
        others = self.chunks - self.already_done - len(self.computed)
        if others > 0:
            text += f"; {others} computed by another job on this store"
        text += repaired
        if self.failures:
            text += f"; skipped {len(self.failures)} unreadable image(s): " + "; ".join(self.failures)
        return text


def build_config(config: ExtractConfig | dict | None = None, **options) -> ExtractConfig:
    """An :class:`ExtractConfig` from a config, a dict (e.g. a loaded TOML file) and/or keyword
    options (which win). ``dataset`` may be a string (``"shapes"``, a folder, ``"hf:PATH"``) with
    ``dataset_options`` for the :class:`DatasetSpec`."""
    data = config.to_dict() if isinstance(config, ExtractConfig) else dict(config or {})
    dataset_options = options.pop("dataset_options", None) or {}
    data.update({k: v for k, v in options.items() if v is not None})
    dataset = data.get("dataset", "shapes")
    if isinstance(dataset, str):
        dataset = DatasetSpec.parse(dataset, **dataset_options)
    elif isinstance(dataset, dict):
        dataset = DatasetSpec(**{**dataset, **dataset_options})
    data["dataset"] = dataset
    for required in ("model", "sites", "timesteps"):
        if not data.get(required):
            raise ValueError(f"an extraction job needs {required!r} (flag --{required} or the config file)")
    return ExtractConfig.from_dict(data)


def extract(config: ExtractConfig | dict | None = None, *, model=None, cluster=None, workers: int = 2,
            overwrite: bool = False, verify: bool = False, resume: str | None = None,
            stale_after: float = STALE_AFTER, **options) -> ExtractReport:
    """Run (or resume) an extraction job; returns an :class:`ExtractReport`.

    ``config`` and/or keyword options describe the job (see :class:`ExtractConfig`); ``model`` is
    a name (reference model, tiny family, folder) or a loaded ``workbench.Model``. ``cluster``: ``None`` runs here,
    ``"local"`` starts a Dask ``LocalCluster`` of ``workers`` workers (threads), anything else is a
    scheduler address or a ``distributed.Client``. ``overwrite`` replaces an existing store.

    Reruns continue from finished chunks, a rerun of a finished job does nothing, and a rerun
    with another model, sites or options into the same store raises :class:`StoreMismatch`.
    Jobs started at once on one store share its chunks. Every rerun checks the finished chunks'
    files against what was written and recomputes damaged ones; ``verify`` also re-reads their
    values. Ctrl-C stops after the current chunk and a failed write (a full disk) stops the job:
    both raise :class:`workbench.store.jobs.JobStopped`, whose message says how to resume
    (``resume``: the command to print; default: rerun the same call). ``stale_after``: seconds
    without a heartbeat after which another host's claim on a chunk is taken over.
    """
    instance = None
    if model is not None and hasattr(model, "denoiser"):  # a loaded Model: use it, record its name
        if cluster is not None:
            raise TypeError("on a Dask cluster every worker loads the model itself: pass its name or folder, "
                            "not a loaded Model")
        instance, options["model"] = model, model.name or type(model.denoiser).__name__
    elif model is not None:
        options["model"] = str(model)
    config = build_config(config, **options)
    begin = time.perf_counter()
    extractor = Extractor(config, model=instance)
    plan = extractor.plan()
    out = config.out
    created = feature_store.prepare(out, extractor.job(), plan, extractor.source, config.timesteps,
                                    config.batch_size, config.dtype, extractor.provenance(), overwrite=overwrite)
    repaired = [] if created else _repair(out, full=verify)
    done = feature_store.done_chunks(out)
    todo = [int(c) for c in np.flatnonzero(~done)]
    n_images, batch = len(extractor.source), config.batch_size

    def describe(chunk: int) -> str:
        return f"chunk {chunk} (images {chunk * batch}..{min(n_images, (chunk + 1) * batch) - 1})"

    arrays = feature_store.ChunkArrays(out, plan)  # opened once for every chunk this process writes

    def is_done(chunk: int) -> bool:
        return feature_store.is_done(out, chunk, arrays)

    results: list[ChunkResult] = []
    compute_begin, compute_cpu_begin = time.perf_counter(), time.process_time()
    with StoreJob(out, resume=resume or RESUME_CALL, total=len(done), describe=describe, stale_after=stale_after,
                  done_count=lambda: int(feature_store.done_chunks(out).sum())) as job:
        if todo:
            todo_images = sum(min(n_images, (c + 1) * batch) - c * batch for c in todo)
            bar = _progress(config, todo_images, f"extract {extractor.model.name or config.model}")
            try:
                if cluster is not None:
                    results += _on_dask(job, config, plan, todo, is_done, cluster, workers, bar)
                # Here: every chunk not done and not held by another job; then wait for those held.
                results += job.run(todo, lambda c: run_chunk(extractor, plan, c, job.may_write, arrays), is_done,
                                   on_result=lambda r: bar.update(r.images))
            finally:
                bar.close()
        else:
            job.claims.clear_dead(is_done)  # (run does this after its chunks)
    compute_seconds = time.perf_counter() - compute_begin
    compute_cpu_seconds = time.process_time() - compute_cpu_begin
    results.sort(key=lambda r: r.chunk)
    return ExtractReport(
        out=out, images=n_images, chunks=len(done), computed=[r.chunk for r in results],
        computed_images=sum(r.images for r in results), already_done=int(done.sum()),
        failures=[f for r in results for f in r.failures], seconds=time.perf_counter() - begin,
        compute_seconds=compute_seconds, created=created, repaired=repaired,
        compute_cpu_seconds=compute_cpu_seconds,
    )


def _repair(out: str, full: bool) -> list[int]:
    """Unmark finished chunks that no longer match what was written, so this run recomputes them."""
    damaged = feature_store.damaged_chunks(out, full=full)
    for chunk, why in sorted(damaged.items()):
        log.warning("%s: chunk %d is damaged (%s); recomputing it", out, chunk, why)
    feature_store.unmark(out, damaged)
    return sorted(damaged)


def _on_dask(job: StoreJob, config, plan, todo, is_done, cluster, workers, bar) -> list[ChunkResult]:
    """The chunks this job can claim now, computed on a Dask cluster (the driver holds the claims)."""
    from .scaleout import run_on_dask

    mine = job.claim_all(todo, is_done)

    def finished(result: ChunkResult) -> None:
        job.claims.release(result.chunk)
        bar.update(result.images)

    try:
        return run_on_dask(config, plan, mine, cluster=cluster, workers=workers, on_result=finished,
                           should_stop=lambda: job.stop.requested)
    except OSError as err:
        raise job.failed(err) from err
    except KeyboardInterrupt as err:
        raise job.interrupted() from err
    finally:
        job.claims.release_all()


def _progress(config: ExtractConfig, total: int, desc: str):
    from tqdm.auto import tqdm

    # tqdm shows the rate (img/s) and the ETA from the images done so far.
    return tqdm(total=total, unit="img", desc=desc, disable=not config.progress, smoothing=0.1)
