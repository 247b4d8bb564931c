"""A catch-up's next read, done by a helper process while the current run works.

Why: in a catch-up (`anchor --until-caught-up`, the backfill) every run reads its capped
offset ranges from Kafka first and only then builds, writes and anchors; the read is a
quarter of a run's body (12.7 of ~44 s for 2M 10-minute rows, docs/benchmarks.md) and
nothing else happens meanwhile. Once a run has planned, the next run's ranges are known:
they start at the planned cursor and end at the watermarks this run read to (or at the cap).
A helper process reads them while this run builds and writes; the next run takes the
messages if it asks for exactly those ranges, and reads them itself otherwise (the log grew,
the cursor moved differently, the helper died or failed: a warning, never an error).

What is read ahead is what the run would read: the same bounded, paged read
(`KafkaLog.read_pages`, the run's `read_page_messages` and `read_timeout_seconds`) of the
same closed offset ranges, which no producer can change (docs/design.md); nothing is
trusted that a run's own read would not give. Offsets the cursor has not reached are only
read, never acknowledged: a killed catch-up loses a read, never a window.

Not a thread: the consumer loop is Python per message, and a read-ahead thread lost to the
GIL (session 19). The helper comes from the `forkserver` like the payload helpers
(`tasks.payload_process`), exits with its owner (`tasks.helper_process.die_with`), and
sends a partition's messages back as four columns, not as message objects (one pickle of
four lists: 0.25 s for 200,000 messages against 2 s as objects). Pickle crosses only
between this program and its own helper.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.kafka import KafkaLog
from tasks.helper_process import die_with
from tasks.message import SourceMessage

if TYPE_CHECKING:
    from streamnotary.config import Settings

log = logging.getLogger(__name__)

Ranges = Mapping[int, tuple[int, int]]
# (partition, offsets, keys, values, timestamps) of one partition's messages
Columns = tuple[int, list[int], list[bytes | None], list[bytes | None], list[int | None]]


@dataclass
class _Pending:
    ranges: dict[int, tuple[int, int]]
    future: Future[tuple[str, list[Columns]]]
    timeout_s: float


def _reader_key(settings: Settings) -> tuple[str, str, str]:
    """Runs of different partition groups of one process read ahead independently."""
    return (settings.kafka_bootstrap, settings.topic, settings.group)


class ReadAhead:
    """One helper process that reads the next run's offset ranges, per topic and group."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._served: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                1, mp_context=context, initializer=die_with, initargs=(os.getpid(),)
            )
        return self._pool

    def start(self, settings: Settings, ranges: Ranges) -> None:
        """Begin reading `ranges` in the helper, for the next run of this topic and group."""
        wanted = {p: r for p, r in sorted(ranges.items()) if r[0] < r[1]}
        if not settings.read_ahead or not wanted:
            return
        page = max(1, settings.read_page_messages)
        pages = sum(-(-(hi - lo) // page) for lo, hi in wanted.values())
        with self._lock:
            stale = self._pending.pop(_reader_key(settings), None)
            if stale is not None:
                stale.future.cancel()
            future = self._executor().submit(
                read_columns,
                settings.kafka_bootstrap,
                settings.topic,
                dict(settings.kafka_client),
                wanted,
                page,
                settings.read_timeout_seconds,
            )
            # every page has its own deadline in the helper, and one page's more for the
            # rest (the consumer's start, the answer's way back): a stuck helper costs this
            self._pending[_reader_key(settings)] = _Pending(
                wanted, future, (pages + 1) * settings.read_timeout_seconds
            )

    def take(self, settings: Settings, ranges: Ranges) -> list[SourceMessage] | None:
        """The messages of `ranges` if exactly they were read ahead; else None (read them).

        Waits for the helper if it is still reading. A failed or stuck helper, or other
        ranges, give None: the caller's own read then raises whatever the range has.
        """
        wanted = {p: r for p, r in sorted(ranges.items()) if r[0] < r[1]}
        key = _reader_key(settings)
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return None
        if pending.ranges != wanted:
            pending.future.cancel()
            log.info("read-ahead of %s was for other offset ranges; reading", settings.topic)
            return None
        try:
            topic, columns = pending.future.result(timeout=pending.timeout_s)
        except Exception as exc:  # any failure: the run's own read tells what it was
            log.warning("read-ahead of %s failed (%r); reading", settings.topic, exc)
            if isinstance(exc, (BrokenProcessPool, TimeoutError)):
                self._discard()  # died or stuck: a new helper for the next run
            return None
        messages = [
            SourceMessage(topic, partition, offset, k, v, ts)
            for partition, offsets, keys, values, stamps in columns
            for offset, k, v, ts in zip(offsets, keys, values, stamps, strict=True)
        ]
        with self._lock:
            self._served[key] = self._served.get(key, 0) + len(messages)
        return messages

    def served(self, settings: Settings) -> int:
        """Messages handed to this topic's and group's runs so far (a run: before/after)."""
        with self._lock:
            return self._served.get(_reader_key(settings), 0)

    def _discard(self) -> None:
        """Drop a helper that died or hangs; the next `start` begins a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p.future.cancel()
        if pool is not None:
            helpers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for helper in helpers:
                with contextlib.suppress(OSError, ValueError):
                    helper.kill()

    def pids(self) -> list[int]:
        """The helper's PID once started (the executor has no public list)."""
        with self._lock:
            return list((self._pool._processes or {}) if self._pool is not None else [])

    def close(self) -> None:
        """Stop the helper; a read still running is abandoned, not waited for."""
        self._discard()


def read_columns(
    bootstrap: str,
    topic: str,
    client_config: dict[str, str],
    ranges: dict[int, tuple[int, int]],
    page: int,
    timeout_s: float,
) -> tuple[str, list[Columns]]:
    """In the helper: `KafkaLog.read_pages` of `ranges`, as columns per partition."""
    with KafkaLog(bootstrap, topic, client_config) as reader:
        messages = reader.read_pages(ranges, page=page, timeout_s=timeout_s)
    columns: dict[int, Columns] = {}
    for m in messages:
        c = columns.get(m.partition)
        if c is None:
            c = columns[m.partition] = (m.partition, [], [], [], [])
        c[1].append(m.offset)
        c[2].append(m.key)
        c[3].append(m.value)
        c[4].append(m.timestamp_ms)
    return topic, list(columns.values())


_active: contextvars.ContextVar[ReadAhead | None] = contextvars.ContextVar(
    "streamnotary_read_ahead", default=None
)


def active() -> ReadAhead | None:
    """The catch-up's read-ahead, None outside one."""
    return _active.get()


@contextlib.contextmanager
def shared_by_runs() -> Iterator[ReadAhead]:
    """A read-ahead for the runs of a catch-up; its helper is stopped at the end."""
    current = _active.get()
    if current is not None:
        yield current
        return
    ahead = ReadAhead()
    token = _active.set(ahead)
    try:
        yield ahead
    finally:
        _active.reset(token)
        ahead.close()
