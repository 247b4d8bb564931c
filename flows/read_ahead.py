"""Read-ahead for a catch-up: the next run's messages are read while this run writes.

A catch-up (`flows/catch_up.py`) runs anchor-windows back to back over a backlog. A run
first reads its offset ranges (broker round trips), then computes, then writes (object
PUTs, the log's tiles, the ledger's fsync): its first and last phases both wait on
servers, one after the other. With read-ahead on, a run that leaves a backlog starts, just
before its writes, a thread that reads the offset ranges the next run will read, so the
next run's read overlaps this run's writes.

Why it is safe: below the high watermark a Kafka offset range is immutable, and the
thread reads exactly as the run would (`tasks.steps.read_pages`). The next run still
computes its own ranges, from the cursor it loads and fresh high watermarks, and takes the
read-ahead only if they are exactly the ranges that were read (`take`); anything else
(another cursor, a grown watermark that moves a capped range, a failed read) is dropped
and the run reads as always, with its task's retries and error messages. At most one run
is read ahead per log scope, so memory holds at most two runs' messages.

Outside a catch-up (a scheduled run, the demo's single run) nothing is read ahead: no
next run would take it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from streamnotary.config import Settings
from tasks import steps
from tasks.gc_pause import cyclic_gc_paused
from tasks.message import SourceMessage
from tasks.stage_timing import READ, stage

log = logging.getLogger(__name__)

Ranges = dict[int, tuple[int, int]]
RangesOf = Callable[[Mapping[int, int]], Ranges]
"""The next run's offset ranges, given the partitions' high watermarks."""


class ReadAhead:
    """At most one pending read per log scope (a topic, or a partition group's)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="read-ahead")
        self._pending: dict[str, Future[tuple[Ranges, list[SourceMessage]]]] = {}
        self._lock = threading.Lock()
        self.taken = 0  # read-aheads a run used (tests, benchmarks)

    def start(self, settings: Settings, ranges_of: RangesOf) -> None:
        """Read, in a thread, the ranges `ranges_of` gives for the current watermarks."""

        def read() -> tuple[Ranges, list[SourceMessage]]:
            # a run's worth of acyclic objects: see tasks/gc_pause.py
            with cyclic_gc_paused():
                ranges = ranges_of(steps.end_offsets(settings))
                return ranges, steps.read_pages(settings, ranges)

        future = self._pool.submit(read)
        with self._lock:
            self._pending[settings.log_scope.name] = future

    def take(
        self, settings: Settings, ranges: Mapping[int, tuple[int, int]]
    ) -> list[SourceMessage] | None:
        """The messages read ahead for exactly `ranges` in this scope, else None (the run
        reads them itself). Waiting for a read still in progress counts as stage read."""
        with self._lock:
            future = self._pending.pop(settings.log_scope.name, None)
        if future is None:
            return None
        with stage(READ):
            try:
                read, messages = future.result()
            except Exception as exc:  # the run's own read reports it, with its retries
                log.info("read-ahead of %s failed (%s); reading again", settings.topic, exc)
                return None
        if read != dict(ranges):
            return None
        self.taken += 1
        return messages

    def close(self) -> None:
        """Drop what no run took, after its thread ends (it is bounded by read timeouts)."""
        with self._lock:
            self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


_active: ReadAhead | None = None


@contextmanager
def read_ahead() -> Iterator[ReadAhead]:
    """Read-ahead on for the runs started inside (a catch-up's)."""
    global _active
    outer, ahead = _active, ReadAhead()
    _active = ahead
    try:
        yield ahead
    finally:
        _active = outer
        ahead.close()


def take(settings: Settings, ranges: Mapping[int, tuple[int, int]]) -> list[SourceMessage] | None:
    """`ReadAhead.take` when read-ahead is on; None otherwise."""
    ahead = _active
    return None if ahead is None else ahead.take(settings, ranges)


def start(settings: Settings, ranges_of: RangesOf) -> None:
    """`ReadAhead.start` when read-ahead is on; nothing otherwise."""
    ahead = _active
    if ahead is not None:
        ahead.start(settings, ranges_of)
