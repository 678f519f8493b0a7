"""The extraction job on a Dask distributed cluster.

The driver creates the store and claims the chunks (``workbench.features.job.extract`` does,
before calling here); then every claimed chunk becomes one task. A task rebuilds what it needs from the job's config alone (a plain dict): the
model, the image source, the plan, so a worker may be a thread, a process or another machine
that sees the same store path. Each task writes its own region of the store and its own ``done``
mark; regions are aligned to zarr chunks, so concurrent writers never share a file.

A worker keeps one :class:`Extractor` per thread and job: loading a model costs more than a chunk,
and recording hooks attach to one model *instance*, so threads must not share one.

Example:
    >>> extract(config, cluster="local", workers=2)            # doctest: +SKIP
    >>> extract(config, cluster="tcp://scheduler:8786")        # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
from typing import Callable

import torch

from .config import ExtractConfig
from .extraction import Extractor, run_chunk

_local = threading.local()


def _extractor_for(config_data: dict):
    key = json.dumps(config_data, sort_keys=True)
    cache = getattr(_local, "extractors", None)
    if cache is None:
        cache = _local.extractors = {}
    if key not in cache:
        cache.clear()  # one job at a time per thread: free the previous model
        cache[key] = Extractor(ExtractConfig.from_dict(config_data))
    return cache[key]


def chunk_task(chunk: int, config_data: dict, plan: dict):
    """Run on a worker: compute one chunk and write it. Returns a ``ChunkResult``."""
    # Intra-op threads are set per thread (OpenMP keeps the setting per thread); Dask already
    # runs one task per worker thread, so one torch thread each unless the job says otherwise.
    torch.set_num_threads(int(config_data.get("threads") or 1))
    return run_chunk(_extractor_for(config_data), plan, chunk)


def run_on_dask(config: ExtractConfig, plan: dict, chunks: list[int], *, cluster="local", workers: int = 2,
                on_result: Callable | None = None, should_stop: Callable[[], bool] | None = None) -> list:
    """Compute ``chunks`` on a cluster: ``"local"`` (a ``LocalCluster`` of ``workers`` one-thread
    workers in this process), a scheduler address, or a ``distributed.Client``. When
    ``should_stop()`` turns true (Ctrl-C), tasks not started are cancelled, running ones finish,
    and ``KeyboardInterrupt`` is raised."""
    from distributed import Client, LocalCluster, as_completed

    owned = []
    if isinstance(cluster, Client):
        client = cluster
    elif cluster == "local":
        # Threads, not processes: the model is loaded once per worker thread either way, and
        # threads start in milliseconds and share this process's imports.
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None)
        client = Client(local)
        owned = [client, local]
    else:
        client = Client(cluster)
        owned = [client]
    try:
        data = config.to_dict()
        data["progress"] = False
        futures = client.map(chunk_task, chunks, config_data=data, plan=plan, pure=False)
        results = []
        stopping = False
        for future in as_completed(futures):
            if future.cancelled():
                continue
            result = future.result()  # re-raises a worker's error here, with its traceback
            results.append(result)
            if on_result is not None:
                on_result(result)
            if not stopping and should_stop is not None and should_stop():
                stopping = True
                client.cancel([f for f in futures if not f.done()])
        if stopping:
            raise KeyboardInterrupt
        return sorted(results, key=lambda r: r.chunk)
    finally:
        for thing in owned:
            thing.close()
