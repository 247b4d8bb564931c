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

`fix_mmap_threshold` is what keeps that peak from growing with the history: glibc serves
a large block from a heap once a larger one was freed, and keeps the freed blocks of its
heaps resident; see its docstring.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")

# glibc's mallopt parameter M_MMAP_THRESHOLD (<malloc.h>), and the threshold we fix: blocks
# of 1 MiB and more get their own mapping, which `free` unmaps.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20
_fixed: int | None = None
# glibc's own knobs that fix its thresholds (each turns the dynamic threshold off): an
# operator (or Dask's nanny, which sets MALLOC_TRIM_THRESHOLD_) who set one has decided.
OPERATOR_KNOBS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_TUNABLES = ("mmap_threshold", "trim_threshold", "top_pad", "mmap_max")


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


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> int | None:
    """Have glibc give every block of `threshold` bytes or more its own mapping, unmapped
    when freed; the threshold this process fixed, or None where it left glibc alone.

    Why: glibc starts with a 128 KiB threshold, but each mapped block freed raises it to
    that block's size (up to 32 MiB) and the heaps' trim threshold to twice that (the
    "dynamic mmap threshold" of mallopt(3)). After that, the large transient blocks of a
    run (S3 bodies of checkpoint and payload packs, the Kafka client's fetch buffers, the
    joined packs) come from the heaps of the threads that take them, and what they free
    stays resident: between blocks still in use, and at the heaps' tops below the raised
    trim threshold. In a 10M-row catch-up the heaps' free memory grew from ~120 to ~380
    MiB over the late windows' runs and carried the RSS at the runs' ends from ~610 to
    ~900 MiB; with the threshold fixed at 1 MiB it stayed at ~70 MiB and the RSS at
    560-600 MiB. `malloc_trim` after each run returned the main heap's free memory
    (~100 MiB) but not the threads' heaps (docs/benchmarks.md, "Session 24"). Fixing the
    threshold turns both adjustments off.

    Left alone when the operator set one of glibc's own knobs for these thresholds
    (`OPERATOR_KNOBS`, or ``glibc.malloc.mmap_threshold``, ``trim_threshold``, ``top_pad``
    or ``mmap_max`` in ``GLIBC_TUNABLES``), and off glibc. Idempotent.
    """
    global _fixed
    if _fixed is not None:
        return _fixed
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(k in os.environ for k in OPERATOR_KNOBS) or any(t in tunables for t in _TUNABLES):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (macOS, musl): nothing to fix
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        return None
    _fixed = threshold
    return _fixed
