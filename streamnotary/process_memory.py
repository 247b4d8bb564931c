"""What this process holds: its resident set now and at its peak, for the run summary.

Operators size a catch-up's container by its peak RSS, and a peak that one run of a long
catch-up sets is invisible in the process's final figure: which run set it, with how many
late windows or re-read offsets, is what tells a spike from growth with the history. So
every anchor run records the RSS at its start and end and the process's peak so far; a
run whose ``peak_rss_bytes`` is above the previous run's set a new peak.

Nothing is reset: the kernel's high-water mark can be reset (``/proc/self/clear_refs``),
but then the process's final peak (``ru_maxrss``, what `streamnotary.peak_rss` and the
benchmarks read) would be only its last run's.

Reads ``/proc/self/status`` (Linux); elsewhere the current RSS is unknown (None) and the
peak is ``ru_maxrss``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where there is none."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def rss_bytes() -> int | None:
    """The process's resident set size now (``VmRSS``), or None if unknown."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """The process's largest resident set size so far (``VmHWM``, else ``ru_maxrss``)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS counts bytes


def at_start() -> dict[str, int | None]:
    """The start half of a run summary's ``memory`` member (docs/formats.md)."""
    return {"rss_start_bytes": rss_bytes()}


def at_end() -> dict[str, int | None]:
    """The end half of a run summary's ``memory`` member: RSS now and the peak so far."""
    return {"rss_end_bytes": rss_bytes(), "peak_rss_bytes": peak_rss_bytes()}


def describe(memory: dict[str, int | None] | None) -> str:
    """One line for people: the RSS at the run's end and the process's peak so far."""
    if not memory or memory.get("peak_rss_bytes") is None:
        return ""
    end = memory.get("rss_end_bytes")
    now = f"RSS {end / 2**20:,.0f} MiB, " if end is not None else ""
    return f"{now}process peak {memory['peak_rss_bytes'] / 2**20:,.0f} MiB"
