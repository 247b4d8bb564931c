"""Peak RSS of a child command, measured exactly (benchmarks and memory tests).

Linux credits the memory of the process that calls exec to the new program's peak RSS
(``ru_maxrss``, also through ``wait4``): a command started from a large parent, a
benchmark holding its sample or a pytest session, reports at least the parent's size.
The backfill benchmark's ingest "peaked" at 198 MiB in its first repeat and 664-677 MiB
in the next two, which was the benchmark's own size after its first core measurement.

So the command runs behind a launcher: a fresh interpreter that holds nothing, starts
the command, forwards SIGINT and SIGTERM to it, takes it along if the launcher itself is
killed, writes the command's peak (``RUSAGE_CHILDREN``) to a file and ends the way the
command ended (same exit code, same signal).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

LAUNCHER = """
import ctypes, os, resource, signal, subprocess, sys
def die_with_launcher():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
child = subprocess.Popen(sys.argv[2:], preexec_fn=die_with_launcher)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda number, _frame: child.send_signal(number))
code = child.wait()
with open(sys.argv[1], "w") as report:
    report.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
if code < 0:
    if -code in (signal.SIGINT, signal.SIGTERM):
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def measured(command: Sequence[str], report: Path) -> list[str]:
    """`command` behind the launcher; its peak RSS is in `report` once it has ended."""
    return [sys.executable, "-c", LAUNCHER, str(report), *command]


def peak_rss(report: Path) -> int:
    """The peak RSS in bytes the launcher wrote for its command."""
    return int(report.read_text())
