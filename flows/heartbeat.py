"""One flow-run heartbeat thread for a process that runs flow runs one after another.

Prefect 3.8 gives every flow run a heartbeat: a thread that emits the event
``prefect.flow-run.heartbeat`` at the run's start and every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (180 by default), which Prefect's detection
of crashed ("zombie") flow runs watches. The run joins that thread at its end, and the
thread sleeps in steps of one second, so every run ends up to a second later: ~0.46 s a
run on average in the 55 runs of the 10M catch-up (~25 s, 5 % of it; docs/benchmarks.md,
"Session 27"), 0.7 s a run for runs of 0.3 s.

A catch-up (`flows.catch_up`) runs dozens of anchor-windows flow runs back to back in one
process, so it keeps one thread instead (`shared_by_runs`): every run it starts announces
itself from its body (`beating`), which emits the same event for it at once; the thread
emits it again every heartbeat interval while the run lasts, and waits on a
`threading.Event`, so a run's end and the catch-up's end cost nothing. Prefect's per-run
thread is turned off for the runs started inside (the setting is None there), so each run
has one heartbeat, not two. The event is the one Prefect builds (resource: the flow run;
related: its flow, deployment and tags), emitted in the run's own context, so the events
worker attaches the same related resources as it does for Prefect's. A user who sets the
frequency to None gets no heartbeat from either.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import __version__
from prefect.context import FlowRunContext
from prefect.events.related import RelatedResource, tags_as_related_resources
from prefect.events.utilities import emit_event
from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"

logger = logging.getLogger(__name__)


@dataclass
class _Beating:
    send: Callable[[], None]
    due: float  # time.monotonic() of the next heartbeat


class ProcessHeartbeat:
    """Sends each registered run's heartbeat now and then every `seconds`, on one thread.

    A heartbeat is handed to Prefect's
    events worker under the lock, so once `remove` or `stop` returns none is in flight
    for that run. A failing send is logged at debug level and retried at the next
    interval, as Prefect's thread does.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._runs: dict[object, _Beating] = {}
        self._lock = threading.Lock()  # guards _runs and _stopped; held while sending
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # the caller's context: the settings (API URL) the runs themselves use
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="flow-run-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._runs.clear()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def add(self, key: object, send: Callable[[], None]) -> None:
        """Send the run's first heartbeat now (on the caller's thread: a run shorter than
        a thread switch gets one too, as under Prefect's thread), the next ones from here."""
        with self._lock:
            self._send(send)
            self._runs[key] = _Beating(send, due=time.monotonic() + self.seconds)
        self._wake.set()

    @staticmethod
    def _send(send: Callable[[], None]) -> None:
        try:
            send()  # hands the event to Prefect's events worker
        except Exception:
            # A heartbeat is the runs' liveness signal, not evidence: a failed one must
            # neither fail the anchor run (the first is sent from its body) nor end the
            # thread; the next interval retries. Prefect's own thread does the same.
            logger.debug("Failed to emit a flow-run heartbeat", exc_info=True)

    def remove(self, key: object) -> None:
        """Once this returns, the run gets no more heartbeats (one in flight has been sent)."""
        with self._lock:
            self._runs.pop(key, None)

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [key for key, b in self._runs.items() if b.due <= now]
            for key in due:
                with self._lock:
                    beating = self._runs.get(key)  # None: removed meanwhile
                    if beating is None or self._stopped:
                        continue
                    beating.due = time.monotonic() + self.seconds
                    self._send(beating.send)
            with self._lock:
                upcoming = min((b.due for b in self._runs.values()), default=None)
            self._wake.wait(None if upcoming is None else max(upcoming - time.monotonic(), 0))


_shared: contextvars.ContextVar[ProcessHeartbeat | None] = contextvars.ContextVar(
    "streamnotary_shared_heartbeat", default=None
)


@contextmanager
def shared_by_runs() -> Iterator[ProcessHeartbeat | None]:
    """One heartbeat thread for the flow runs started inside; Prefect's per-run one off.

    Yields None (and changes nothing) when heartbeats are turned off or an enclosing
    catch-up already shares one. Inside, only a flow whose body enters `beating` has a
    heartbeat: the catch-up starts anchor-windows runs only (and their group subflows),
    whose body does (tests/test_heartbeat.py reads one heartbeat per run back).
    """
    from prefect.settings import get_current_settings

    frequency = get_current_settings().flows.heartbeat_frequency
    if frequency is None or _shared.get() is not None:
        yield None
        return
    beat = ProcessHeartbeat(max(frequency, MINIMUM_HEARTBEAT_INTERVAL))
    token = _shared.set(beat)
    beat.start()
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield beat
    finally:
        beat.stop()
        _shared.reset(token)


@contextmanager
def beating() -> Iterator[None]:
    """Inside a flow body: this flow run's heartbeat comes from the shared thread, if any.

    Outside a catch-up (no shared thread) Prefect's own per-run thread beats for the run,
    and this does nothing.
    """
    beat = _shared.get()
    run_context = FlowRunContext.get()
    flow_run = run_context.flow_run if run_context is not None else None
    if beat is None or run_context is None or flow_run is None:
        yield
        return
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
        "prefect.version": __version__,
    }
    related: list[RelatedResource] = []
    if flow_run.flow_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": run_context.flow.name if run_context.flow else "",
                }
            )
        )
    if flow_run.deployment_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        )
    related += tags_as_related_resources(set(flow_run.tags or []))
    context = contextvars.copy_context()  # this run's: the worker reads related resources

    def send() -> None:
        context.copy().run(emit_event, event=HEARTBEAT_EVENT, resource=resource, related=related)

    beat.add(flow_run.id, send)
    try:
        yield
    finally:
        beat.remove(flow_run.id)
