"""One process-wide pool of I/O threads for batches of object reads and writes.

Why one pool: a batch that makes its own `ThreadPoolExecutor` also starts its threads,
and `Thread.start` returns only once the new thread has run. While other threads hold
the GIL (the run's own work, the previous batch's clients), each start waits a switch
interval or more. A 10M-row catch-up spent 8.7 % of its main thread's wall-clock samples
in `Thread.start` under the late-window log lookups (`storage.tlog.StoreTiles.prefetch`),
about 74 of its 850 seconds (docs/benchmarks.md, "Session 21"). These threads start once
and serve every batch of the process.

A batch still bounds its own concurrency (`map_bounded`), so a prefetch keeps 8 GETs in
flight and a write batch 32, as before. The functions run here must not wait on this
pool themselves (they are single object-store calls): a pool whose threads all wait on
queued work would deadlock. Threads do not survive `fork`: a forked child makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

POOL_THREADS = 32  # the widest batch (storage.store_base.WRITE_CONCURRENCY)

_END = object()  # the end of a batch's items
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def io_pool() -> ThreadPoolExecutor:
    """The process's I/O pool, made on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="io")
        return _pool


def _forget_in_child() -> None:
    """After `fork` the parent's pool has no threads here; the child starts its own."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def map_bounded(fn: Callable[[T], R], items: Iterable[T], limit: int) -> Iterator[R]:
    """`fn` of each item on the I/O pool, at most `limit` at once; results as they finish.

    On the first failure nothing more is started, the calls in flight are awaited, and
    the failure is raised: when this returns or raises, no call it started is running
    (a caller publishes what commits to these objects only after it returns).
    """
    pool = io_pool()
    pending = iter(items)
    running: set[Future[R]] = set()

    def fill() -> None:
        while len(running) < max(1, limit):
            item = next(pending, _END)
            if item is _END:
                return
            running.add(pool.submit(fn, item))  # type: ignore[arg-type]

    try:
        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            running.difference_update(done)
            for future in done:
                yield future.result()
            fill()
    finally:
        if running:
            wait(running)
