"""Pause Python's cyclic garbage collector while a phase builds millions of acyclic objects.

CPython starts a collection of the oldest generation whenever enough objects have survived
the young ones, and that collection walks every tracked object of the process: Prefect's
and boto3's object graphs, and all the messages, records and window contents a run holds.
A run reads ~200,000 messages and makes several tracked objects of each, so such
collections come again and again while the run's data grows: measured on one catch-up of
1.2 M hourly rows, 39 full collections took 10 s of its 80 s. Nothing a run builds from
messages forms a reference cycle, so pausing the collector changes no result; reference
counting still frees every object when its last reference goes. Cycles made meanwhile
(tracebacks, a Prefect task run's context, ~6 objects per boto3 PUT and GET, measured)
wait for the first collection after the phase, which lasts one bounded run. An audit of
12,410 windows measured with the same pause took 189 s against 198 s, within the spread
of three repeats: its time goes elsewhere, so audits do not pause.

The pause is process-wide (`gc.disable`), so it is counted: nested or concurrent phases
(a flow's threads, Dask worker threads) resume collection only when the last one ends, and
only if collection was on when the first one began. Pure: no I/O, no Prefect.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Run the body with cyclic garbage collection off (see module docstring)."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
