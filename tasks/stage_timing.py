"""Where a run's time goes: seconds per pipeline stage, measured in every anchor run.

Operators and the backfill benchmark need to see which stage bounds a run (broker reads,
decoding, window building, Parquet, object writes, ledger writes, Prefect) without a
profiler. Stages are measured where the work happens: `timed(stage)` decorates the pure
functions and the I/O task bodies, and the flow starts one `StageClock` per run.

Stages are exclusive: when a timed function calls another (window building calls the
Parquet encoder), the inner stage's time is not also counted in the outer one, so the
stages add up to at most the run's wall time. What remains, ``unattributed_s``, is
Prefect's orchestration of the tasks (state handling, parameter and result walking)
plus the flow's own glue code. With no clock started, `timed` costs one global read.

Pure: only the standard library's clock; no I/O, no Prefect.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

TIMINGS_SCHEMA = "streamnotary.stage_timings/1"
READ = "read"
DECODE = "decode"
WINDOW = "window"
PARQUET = "parquet"
OBJECTS = "objects"
LOG = "log"
LEDGER = "ledger"
STAGES = (READ, DECODE, WINDOW, PARQUET, OBJECTS, LOG, LEDGER)

F = TypeVar("F", bound=Callable[..., Any])


class StageClock:
    """Accumulated seconds per stage for one run (thread-safe; exclusive per thread)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()
        self._local = threading.local()

    def _stack(self) -> list[list[Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the time of the `with` body as `name` (pausing an enclosing stage)."""
        stack = self._stack()
        now = time.perf_counter()
        if stack:
            outer = stack[-1]
            self._add(outer[0], now - outer[1])
        frame = [name, now]
        stack.append(frame)
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
        try:
            yield
        finally:
            end = time.perf_counter()
            self._add(name, end - frame[1])
            stack.pop()
            if stack:
                stack[-1][1] = end  # the enclosing stage resumes now

    def add(self, stage: str, seconds: float) -> None:
        """Count `seconds` measured elsewhere (e.g. on Dask workers) as one call of `stage`."""
        self._add(stage, seconds)
        with self._lock:
            self.calls[stage] = self.calls.get(stage, 0) + 1

    def report(self) -> dict[str, Any]:
        """The run's timings (schema `streamnotary.stage_timings/1`, docs/formats.md)."""
        wall = time.perf_counter() - self.started
        with self._lock:
            stages = {k: round(v, 4) for k, v in self.seconds.items()}
            calls = dict(self.calls)
        return {
            "schema": TIMINGS_SCHEMA,
            "wall_s": round(wall, 4),
            "stages": stages,
            "calls": calls,
            "unattributed_s": round(max(0.0, wall - sum(self.seconds.values())), 4),
        }


_current: StageClock | None = None


def start_run() -> StageClock:
    """Start measuring a run; `timed` functions report to this clock from now on."""
    global _current
    _current = StageClock()
    return _current


def current() -> StageClock | None:
    return _current


@contextmanager
def stage(name: str) -> Iterator[None]:
    """`StageClock.stage` of the running clock; nothing when no run is measured."""
    clock = _current
    if clock is None:
        yield
        return
    with clock.stage(name):
        yield


def timed(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function counts as stage `name`."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            clock = _current
            if clock is None:
                return fn(*args, **kwargs)
            with clock.stage(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def add_call_time(timings: dict[str, Any], call_s: float) -> dict[str, Any]:
    """Add the caller's wall time of the whole flow call (Prefect's flow engine included).

    ``flow_overhead_s`` is what the run cost outside the flow body: creating the flow run,
    (on a temporary server) starting the server, and finishing the run's state.
    """
    timings["call_s"] = round(call_s, 4)
    timings["flow_overhead_s"] = round(max(0.0, call_s - timings.get("wall_s", 0.0)), 4)
    return timings


def describe(timings: dict[str, Any]) -> str:
    """One line for people: the stages that took time, largest first."""
    parts = [(v, k) for k, v in timings.get("stages", {}).items() if v >= 0.005]
    parts.append((timings.get("unattributed_s", 0.0), "prefect tasks+glue"))
    if "flow_overhead_s" in timings:
        parts.append((timings["flow_overhead_s"], "prefect flow"))
    total = timings.get("call_s", timings.get("wall_s", 0.0))
    shown = ", ".join(f"{k} {v:.2f}s" for v, k in sorted(parts, reverse=True))
    return f"time {total:.2f}s: {shown}"
