"""A run's window revisions, built in-process or in parallel on Dask with Prefect's task runners.

Window building and Parquet encoding are the CPU-bound middle of a run, independent per
window. Where they run is a setting (docs/operations.md, "Parallel window building"):

* ``workers = 1`` and no scheduler address (the default): in-process, window after
  window, no Dask at all (the demo stays fast: a cluster costs seconds to start); with
  ``payload_processes`` > 0 and at least `MIN_PAYLOAD_PROCESS_WINDOWS` windows, helper
  processes encode the Parquet payloads while the windows are built
  (`tasks.payload_process`);
* ``dask_scheduler_address`` set: Prefect's ``DaskTaskRunner(address=...)`` on that
  existing cluster (its workers need this package and the same pyarrow installed);
* ``workers > 1``: ``DaskTaskRunner`` on a ``distributed.LocalCluster`` of that many worker
  processes, started on first use and kept for the process (a backfill's runs share it).

Either way the windows travel in chunks of one ``bytes`` object each way
(`tasks.window_jobs`), each chunk one Prefect task run (``build-windows``) visible in the
UI; checkpoints are then built here in window order, so the payload bytes, checkpoint
digests, plan and log are exactly those of the in-process path. Runs with fewer than
`MIN_PARALLEL_WINDOWS` windows are built in-process: a round trip would cost more.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import streamnotary
from streamnotary.config import Settings
from tasks import stage_timing, window_jobs
from tasks.checkpoint import Supersedes
from tasks.message import Classified
from tasks.pack import PackBuilder
from tasks.payload_process import payload_encoder
from tasks.revision import PlannedRevision, plan_revision
from tasks.window import WindowKey
from tasks.window_jobs import Built

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

MIN_PARALLEL_WINDOWS = 64
# Runs with fewer windows encode their payloads in-process: starting the helper processes
# (~0.4 s, once per process) would cost more than they save (~0.25 ms per window).
MIN_PAYLOAD_PROCESS_WINDOWS = 2_000


class ParallelError(RuntimeError):
    """The configured Dask cluster cannot be used (unreachable, bad worker count)."""


@dataclass(frozen=True)
class WindowJob:
    """One window revision to build: its messages and what its checkpoint will say."""

    key: WindowKey
    items: Sequence[Classified]
    close_reason: str
    revision: int = 0
    supersedes: Supersedes | None = None


def plan_revisions(
    settings: Settings,
    jobs: Sequence[WindowJob],
    uri_of: Callable[[str], str],
    pack: PackBuilder | None = None,
) -> list[PlannedRevision]:
    """Content, payload and checkpoint of every job, in the order of `jobs` (which is also
    the order of their payloads in the run's `pack`, layout pack)."""
    built = build_windows(settings, [(j.key, j.items) for j in jobs])
    return [
        plan_revision(
            content=b.content,
            topic=settings.topic,
            revision=j.revision,
            supersedes=j.supersedes,
            close_reason=j.close_reason,
            uri_of=uri_of,
            pipeline_version=streamnotary.__version__,
            pack=pack,
            payload=b.payload,
            scope=settings.log_scope.name,
        )
        for j, b in zip(jobs, built, strict=True)
    ]


def parallel(settings: Settings) -> bool:
    """Whether this configuration builds windows on Dask."""
    if settings.workers < 1:
        raise ParallelError(f"setting workers must be at least 1, got {settings.workers}")
    return bool(settings.dask_scheduler_address) or settings.workers > 1


def build_windows(
    settings: Settings, windows: Sequence[tuple[WindowKey, Sequence[Classified]]]
) -> list[Built]:
    """`window_jobs.build_all` of the windows, in order: in-process or on Dask."""
    if not parallel(settings) or len(windows) < MIN_PARALLEL_WINDOWS:
        encoder = (
            payload_encoder(settings.payload_processes)
            if len(windows) >= MIN_PAYLOAD_PROCESS_WINDOWS
            else None
        )
        return window_jobs.build_all(windows, encoder)
    started = time.perf_counter()
    with dask_runner(settings) as runner:
        workers = len(runner.client.scheduler_info().get("workers", {})) or settings.workers
        chunks = window_jobs.split(windows, workers)
        futures = [
            runner.submit(build_windows_chunk, parameters={"chunk": window_jobs.pack_chunk(c)})
            for c in chunks
        ]
        results = [window_jobs.unpack_result(f.result()) for f in futures]
    _account(results, time.perf_counter() - started)
    return [b for r in results for b in r.built]


@task(name="build-windows", cache_policy=NO_CACHE, persist_result=False)
def build_windows_chunk(chunk: bytes) -> bytes:
    """One chunk of windows on a Dask worker: packed messages in, packed results out."""
    return window_jobs.build_chunk(chunk)


@contextmanager
def dask_runner(settings: Settings) -> Iterator[DaskTaskRunner]:
    """A started `DaskTaskRunner` on the configured scheduler, or on the local cluster."""
    from prefect_dask import DaskTaskRunner

    quiet_dask_logs()
    address = settings.dask_scheduler_address
    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(cluster=local_cluster(settings.workers))
    )
    with runner:
        try:
            runner.client  # noqa: B018 -- connect now, so a bad address fails with its name
        except (OSError, TimeoutError) as exc:
            raise ParallelError(
                f"cannot reach the Dask scheduler at {address!r} "
                f"(setting dask_scheduler_address): {exc}"
            ) from exc
        yield runner


_clusters: dict[int, Any] = {}
_clusters_lock = threading.Lock()


def local_cluster(workers: int) -> Any:
    """The process's `distributed.LocalCluster` of `workers` worker processes.

    Started on first use and kept until the process exits (or `close_local_clusters`),
    so the runs of one backfill, and a run's new and late windows, pay its start once.
    One thread per worker: the work is CPU-bound Python, processes are what run it in
    parallel.
    """
    import distributed

    # worker processes read their log level from the environment when they import Dask
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with _clusters_lock:
        cluster = _clusters.get(workers)
        if cluster is None or cluster.status.name in ("closing", "closed", "failed"):
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: two processes may run clusters
                silence_logs=logging.WARNING,
                # import this module (Prefect, pyarrow) before the worker joins, not while
                # it unpickles its first task: that import blocks the worker's event loop,
                # long enough on a loaded machine for the scheduler to drop the worker
                preload=[__name__],
            )
            if not _clusters:
                atexit.register(close_local_clusters)
            _clusters[workers] = cluster
        return cluster


def close_local_clusters() -> None:
    """Stop the local clusters this process started (worker processes included)."""
    with _clusters_lock:
        clusters = list(_clusters.values())
        _clusters.clear()
    import distributed

    for cluster in clusters:
        # Prefect's event and log senders in each worker flush first; otherwise the
        # worker's interpreter waits for them at exit and its nanny kills it after 4 s
        with distributed.Client(cluster, set_as_default=False) as client:
            client.run(drain_prefect_services)
        cluster.close()


def drain_prefect_services() -> None:
    """On a Dask worker: send Prefect's pending events and logs, stop their threads."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=10)
    APILogWorker.drain_all(timeout=10)


def quiet_dask_logs() -> None:
    """Dask's INFO lines (scheduler and worker start, connections) are not the run's story.

    A nanny that kills its worker process after 4 s at shutdown (a loaded machine, a slow
    interpreter exit) loses nothing: every chunk's result was returned before. Both stay
    available by configuring the `distributed` loggers (docs/operations.md).
    """
    for name, level in (("distributed", logging.WARNING), ("distributed.nanny", logging.ERROR)):
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.INFO):
            logger.setLevel(level)


def _account(results: Sequence[window_jobs.ChunkResult], wall: float) -> None:
    """Count the parallel section's wall time as the window and Parquet stages, split in
    the proportion the workers measured (their own seconds add up to more than the wall
    time: they ran at the same time)."""
    clock = stage_timing.current()
    if clock is None:
        return
    window_s = sum(r.window_s for r in results)
    parquet_s = sum(r.parquet_s for r in results)
    share = window_s / (window_s + parquet_s) if window_s + parquet_s > 0 else 1.0
    clock.add(stage_timing.WINDOW, wall * share)
    clock.add(stage_timing.PARQUET, wall * (1 - share))
