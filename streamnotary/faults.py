"""Named crash (and pause) points, for proving that a killed run resumes exactly once.

When the environment variable ``STREAMNOTARY_KILL_AT`` names a point, the process sends
itself SIGKILL there: no exception handler, no `finally`, no flush runs, exactly as if an
operator or the OOM killer had killed the worker. Used by tests/test_exactly_once.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "STREAMNOTARY_KILL_AT"
# Pause instead of dying: the process creates "<PAUSE_FILE>.reached" at the point and waits
# (at most PAUSE_LIMIT_S) until "<PAUSE_FILE>" exists. Used to hold a run in the middle
# while a second, real process tries to overlap it (tests/test_lease.py).
PAUSE_ENV = "STREAMNOTARY_PAUSE_AT"
PAUSE_FILE_ENV = "STREAMNOTARY_PAUSE_FILE"
PAUSE_LIMIT_S = 120.0
POINTS = (
    "after_plan",  # write-ahead plan stored, nothing else written
    "after_payloads",  # payloads and checkpoints stored, nothing anchored
    "mid_log_append",  # log tiles and bundles stored, checkpoint not yet published
    "after_log",  # log appended and checkpoint published, head not anchored
    "after_head_anchor",  # log head anchored, window entries not yet
    "mid_window_anchors",  # the first window entry anchored, the others not yet
    "after_anchor",  # every entry anchored, no receipt written
    "before_cursor",  # receipts written, cursor not advanced
)
# Points of `streamnotary backfill` outside anchor-windows (flows/backfill.py).
BACKFILL_POINTS = ("mid_ingest",)  # half of one source's messages acknowledged
# Pass the configured point this many times before acting (kill in the Nth source or run).
SKIP_ENV = "STREAMNOTARY_KILL_SKIP"
_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if `name` is the configured crash point."""
    if name not in POINTS and name not in BACKFILL_POINTS:
        raise ValueError(f"unknown kill point {name!r}")
    if os.environ.get(ENV) == name:
        _passed[name] = _passed.get(name, 0) + 1
        if _passed[name] <= int(os.environ.get(SKIP_ENV) or 0):
            return
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == name and os.environ.get(PAUSE_FILE_ENV):
        release = Path(os.environ[PAUSE_FILE_ENV])
        Path(f"{release}.reached").touch()
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
