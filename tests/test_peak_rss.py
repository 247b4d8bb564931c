"""The launcher that measures a command's peak RSS: exact, whatever the parent's size."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from streamnotary.peak_rss import measured, peak_rss

MIB = 1 << 20
ALLOCATE = "b = bytearray({n} << 20); b[::4096] = b'x' * len(b[::4096]); {then}"


def test_a_small_command_of_a_large_parent_reports_its_own_peak(tmp_path: Path) -> None:
    ballast = bytearray(300 * MIB)
    ballast[::4096] = b"x" * len(ballast[::4096])  # resident, not just reserved
    command = [sys.executable, "-c", "pass"]
    proc = subprocess.Popen(command)
    _, _, usage = os.wait4(proc.pid, 0)
    assert usage.ru_maxrss * 1024 >= 300 * MIB  # what wait4 reports: the parent's size
    report = tmp_path / "peak"
    assert subprocess.run(measured(command, report)).returncode == 0
    assert peak_rss(report) < 100 * MIB
    del ballast


def test_the_peak_of_a_large_command_and_its_exit_are_kept(tmp_path: Path) -> None:
    report = tmp_path / "peak"
    code = ALLOCATE.format(n=200, then="raise SystemExit(3)")
    assert subprocess.run(measured([sys.executable, "-c", code], report)).returncode == 3
    assert 200 * MIB <= peak_rss(report) < 300 * MIB


def test_a_command_killed_by_a_signal_ends_the_launcher_the_same_way(tmp_path: Path) -> None:
    report = tmp_path / "peak"
    code = ALLOCATE.format(n=64, then="import os; os.kill(os.getpid(), 9)")
    done = subprocess.run(measured([sys.executable, "-c", code], report))
    assert done.returncode == -signal.SIGKILL
    assert peak_rss(report) >= 64 * MIB


def test_sigterm_reaches_the_command(tmp_path: Path) -> None:
    report = tmp_path / "peak"
    # the command says it is ready, then waits for a signal (no timer on either side)
    code = "import signal; print('ready', flush=True); signal.pause()"
    proc = subprocess.Popen(
        measured([sys.executable, "-c", code], report), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 30)
    assert readable and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == -signal.SIGTERM
    assert peak_rss(report) > 0
