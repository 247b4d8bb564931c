"""Which process did we start? PID + start time + data directory, from /proc.

A PID alone names a process only while it lives: once a server we started exits, the
kernel hands its number to the next process, which may be another user's `weed` or
`anvil` (same executable name, so checking the name is not enough). `streamnotary down`
therefore signals a recorded PID only if all three still agree:

* the PID's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) equals the
  one recorded right after we started it — a recycled PID has a later start time;
* one of its command-line arguments names the data directory we gave it;
* it is not a zombie.

The record is a small JSON document (``run/<name>.pid`` under the home, mode 0600):
``{"pid": 123, "start_time": 4567, "data_dir": "/home/u/.streamnotary/data/kafka"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTTIME_FIELD = 22  # proc(5): (22) starttime %llu


class ProcessGone(RuntimeError):
    """A process survived SIGKILL (should not happen; reported rather than ignored)."""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields 3.. (after the parenthesised command, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[STARTTIME_FIELD - 3]) if fields else None


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass(frozen=True)
class ProcessIdentity:
    """A process we started, as recorded at start (see the module docstring)."""

    pid: int
    start_time: int
    data_dir: str

    @classmethod
    def of(cls, pid: int, data_dir: Path | str) -> ProcessIdentity:
        """Record `pid` now (call right after starting it)."""
        started = start_time(pid)
        if started is None:
            raise ProcessGone(f"process {pid} exited right after it was started")
        return cls(pid, started, str(data_dir))

    def matches(self) -> bool:
        """Whether `pid` is still the very process we started (not a recycled PID)."""
        if self.pid <= 0 or not _running(self.pid) or start_time(self.pid) != self.start_time:
            return False
        d = self.data_dir
        return any(arg.endswith(d) or f"{d}/" in arg for arg in cmdline(self.pid))

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time, "data_dir": self.data_dir}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProcessIdentity:
        return cls(int(doc["pid"]), int(doc["start_time"]), str(doc["data_dir"]))


def write_identity(path: Path, ident: ProcessIdentity) -> None:
    """Atomically write the record, readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(ident.to_json()) + "\n")
    os.replace(tmp, path)


def read_identity(path: Path) -> ProcessIdentity | None:
    """The record at `path`; None if missing or not a record (a bare PID from an older
    version carries no start time, so it cannot identify anything and is ignored)."""
    try:
        doc = json.loads(path.read_text())
        return ProcessIdentity.from_json(doc) if isinstance(doc, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_identified(ident: ProcessIdentity, timeout_s: float) -> bool:
    """SIGTERM the process if it is still the one we started, SIGKILL after `timeout_s`.

    Returns whether it was running; a process that is not ours is never signalled.
    """
    if not ident.matches():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(ident.pid, signal.SIGTERM)
    if _wait_gone(ident, timeout_s):
        return True
    if ident.matches():  # still ours: escalate
        with contextlib.suppress(ProcessLookupError):
            os.kill(ident.pid, signal.SIGKILL)
    if not _wait_gone(ident, 5.0):
        raise ProcessGone(f"process {ident.pid} survived SIGKILL")
    return True


def _wait_gone(ident: ProcessIdentity, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not ident.matches():
            return True
        time.sleep(0.05)
    return not ident.matches()
