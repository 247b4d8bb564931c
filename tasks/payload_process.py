"""Parquet payloads encoded in helper processes while the run builds its next windows.

Why: pyarrow spends ~250 µs writing a Parquet file however small it is, so a run's
~24-record payloads cost as much CPU as building their windows (dedup, Merkle root,
aggregates): 16.9 s against 16.0 s of a 1.17M-row catch-up. Encoding is a pure function
of the records (`tasks.payload.encode_slices`), so helper processes encode batch k while
the run builds batch k+1 (`tasks.window_jobs.build_all`). A batch crosses to the helper as
one Arrow table (a few column buffers, no per-record objects) and comes back as the payload
bytes, exactly those `encode_payloads` gives (tests/test_payload_process.py).

Not threads: pyarrow's writer set-up holds the GIL (measured slower, session 16). Not
Prefect's `ProcessPoolTaskRunner` or Dask: they make every batch a task run and every
worker import Prefect, which costs more than the batch (Dask measured 1.3-1.8x slower on
2 cores, docs/benchmarks.md); parallelism across machines stays Dask's job
(`flows/window_build.py`). This is the standard library's `ProcessPoolExecutor`.

The helpers come from a `forkserver`: a clean interpreter that imports pyarrow and
`tasks.payload` once and forks the helpers, never a fork of this process with its Prefect,
Kafka and boto3 threads. They start on first use and are kept for the process (a
catch-up's runs share them), stopped at exit, and they exit by themselves when the
process that started them is killed (`_die_with`). A helper that dies costs time, not
correctness: its batches are encoded in-process instead, with a warning, and a new pool
starts on the next use; so does a helper that stops answering (`BATCH_TIMEOUT_SECONDS`).
Pickle crosses only between this program and its own helpers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tasks.payload import batch_table, encode_payloads, encode_slices
from tasks.record import Observation
from tasks.stage_timing import PARQUET, timed

log = logging.getLogger(__name__)

# A batch of 250 windows takes a helper ~0.1 s. One that has not answered in this long is
# stuck (stopped, deadlocked, starved of memory): the run encodes the batch itself.
BATCH_TIMEOUT_SECONDS = 120.0


class PayloadProcessError(ValueError):
    """The `payload_processes` setting is not a usable number of helper processes."""


class PendingPayloads:
    """The payloads of one submitted batch of windows, encoded in a helper process."""

    def __init__(
        self, encoder: PayloadEncoder, windows: Sequence[Sequence[Observation]], future: Future
    ) -> None:
        self._encoder = encoder
        self._windows = windows
        self._future = future

    @timed(PARQUET)
    def result(self) -> list[bytes]:
        """The batch's payloads, in window order (waiting for the helper if need be)."""
        try:
            return self._future.result(timeout=BATCH_TIMEOUT_SECONDS)
        except (BrokenProcessPool, TimeoutError, CancelledError) as exc:
            self._encoder.discard(exc)
            return encode_payloads(self._windows)


class PayloadEncoder:
    """A pool of `processes` helper processes that encode batches of payloads."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise PayloadProcessError(f"a payload pool needs at least 1 process, got {processes}")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                # the fork server imports pyarrow once; each helper forks from it ready
                context.set_forkserver_preload(["tasks.payload"])
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=context,
                    initializer=_die_with,
                    initargs=(os.getpid(),),
                )
            return self._pool

    @timed(PARQUET)
    def submit(self, windows: Sequence[Sequence[Observation]]) -> PendingPayloads:
        """Start encoding the windows' payloads (`encode_payloads` of them) in a helper."""
        table, lengths = batch_table(windows)
        try:
            future = self._executor().submit(encode_slices, table, lengths)
        except BrokenProcessPool as exc:  # a helper died since the last batch
            self.discard(exc)
            future = Future()
            future.set_result(encode_payloads(windows))
        return PendingPayloads(self, windows, future)

    def discard(self, reason: BaseException) -> None:
        """Drop a pool whose helper died or hangs; the next batch starts a new one.

        Its helpers are killed, so that every batch still pending on them fails at once
        (and is encoded in-process) instead of waiting out its own timeout.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        log.warning(
            "a payload helper process died or stopped answering (%s); encoding in-process",
            type(reason).__name__,
        )
        helpers = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for helper in helpers:
            with contextlib.suppress(OSError, ValueError):
                helper.kill()

    def pids(self) -> list[int]:
        """The helper processes' PIDs (started so far; the executor has no public list)."""
        with self._lock:
            return list((self._pool._processes or {}) if self._pool is not None else [])

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _die_with(owner: int) -> None:
    """In a helper: exit as soon as the process that started the pool (`owner`) is gone.

    A helper waits on its task queue, whose pipe it holds both ends of, and it holds the
    fork server's liveness pipe too, so neither would ever tell it that a flow run killed
    with SIGKILL (the OOM killer, a drill) is gone: it would wait forever. A daemon thread
    waits on the owner's pidfd (Linux 5.3+; elsewhere it polls once a second) instead.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(owner)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(owner, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


_encoders: dict[int, PayloadEncoder] = {}
_encoders_lock = threading.Lock()


def payload_encoder(processes: int) -> PayloadEncoder | None:
    """The process-wide encoder with `processes` helpers; None for 0 (encode in-process)."""
    if processes < 0:
        raise PayloadProcessError(
            f"setting payload_processes must be 0 (in-process) or more, got {processes}"
        )
    if processes == 0:
        return None
    with _encoders_lock:
        encoder = _encoders.get(processes)
        if encoder is None:
            if not _encoders:
                atexit.register(close_encoders)
            encoder = _encoders[processes] = PayloadEncoder(processes)
        return encoder


def close_encoders() -> None:
    """Stop every helper process this process started."""
    with _encoders_lock:
        encoders = list(_encoders.values())
        _encoders.clear()
    for encoder in encoders:
        encoder.close()
