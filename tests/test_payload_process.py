"""Payloads encoded in helper processes (tasks/payload_process.py) are the in-process bytes.

Real helper processes (a forkserver and its children), real DWD rows. The anchored payload
digests depend on every byte, so the helpers' output is compared with `build_all` without
them, window by window; a helper killed mid-run must cost time, never a payload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamnotary.config import Settings
from tasks import payload_process, window_jobs
from tasks.dwd import read_observations
from tasks.message import SourceMessage, classify
from tasks.payload_process import PayloadEncoder, PayloadProcessError, payload_encoder
from tasks.record import canonical_bytes
from tasks.window import WindowSpec
from tests.dwd_data import product_file

ROOT = Path(__file__).resolve().parent.parent
# a helper that hangs must fail a test, not hang the suite
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def windows() -> list[tuple[Any, list[Any]]]:
    """Station 00433's 13,200 real rows (550 days, -999 gaps) as Kafka messages in daily
    windows, with a re-delivered and a malformed message (a window with a rejection)."""
    observations = list(read_observations(product_file("00433")))
    messages = [
        SourceMessage("t", i % 3, i, o.station_id.encode(), canonical_bytes(o), None)
        for i, o in enumerate(observations)
    ]
    n, first = len(messages), observations[0]
    messages += [
        SourceMessage("t", 0, n, b"00433", canonical_bytes(first), None),
        SourceMessage("t", 1, n + 1, b"00433", canonical_bytes(first).replace(b"}", b",}"), 0),
    ]
    spec = WindowSpec(86_400)
    groups: dict[Any, list[Any]] = defaultdict(list)
    for m in messages:
        c = classify(m, spec)
        groups[c.window].append(c)
    return sorted((k, v) for k, v in groups.items() if k is not None)


@pytest.fixture
def encoder() -> Iterator[PayloadEncoder]:
    pool = PayloadEncoder(2)
    try:
        yield pool
    finally:
        pool.close()


def test_helpers_encode_exactly_what_one_process_encodes(
    windows: list, encoder: PayloadEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(windows) >= 550
    assert any(c.rejected for _, items in windows for c in items)
    serial = window_jobs.build_all(windows)
    monkeypatch.setattr(window_jobs, "OVERLAP_WINDOWS", 37)  # many batches, a short last one
    helped = window_jobs.build_all(windows, encoder)
    assert [b.payload for b in helped] == [b.payload for b in serial]
    assert [b.content for b in helped] == [b.content for b in serial]
    # the payloads were written by the helper processes, not by this one
    pids = encoder.pids()
    assert pids and os.getpid() not in pids


def test_a_killed_helper_costs_time_not_payloads(
    windows: list, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = PayloadEncoder(1)
    try:
        expected = [b.payload for b in window_jobs.build_all(windows[:300])]
        assert [b.payload for b in window_jobs.build_all(windows[:300], encoder)] == expected
        (killed,) = encoder.pids()
        os.kill(killed, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="tasks.payload_process"):
            again = window_jobs.build_all(windows[:300], encoder)
        assert [b.payload for b in again] == expected
        assert "payload helper process died or stopped answering" in caplog.text
        # the next batch starts a new helper
        assert [b.payload for b in window_jobs.build_all(windows[:300], encoder)] == expected
        assert encoder.pids() and killed not in encoder.pids()
    finally:
        encoder.close()


def test_a_stopped_helper_does_not_hang_the_run(
    windows: list, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that never answers (SIGSTOP: as a deadlock or a swapped-out process looks)
    costs the batch timeout once, then the run encodes every pending batch itself."""
    monkeypatch.setattr(payload_process, "BATCH_TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(window_jobs, "OVERLAP_WINDOWS", 50)
    encoder = PayloadEncoder(1)
    stopped = 0
    try:
        expected = [b.payload for b in window_jobs.build_all(windows[:300])]
        assert [b.payload for b in window_jobs.build_all(windows[:300], encoder)] == expected
        (stopped,) = encoder.pids()
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="tasks.payload_process"):
            again = window_jobs.build_all(windows[:300], encoder)
        assert [b.payload for b in again] == expected
        assert time.monotonic() - started < 2.0 * 3  # one timeout, not one per batch
        assert "stopped answering (TimeoutError)" in caplog.text
        assert ended([stopped])  # killed, not left stopped
        assert [b.payload for b in window_jobs.build_all(windows[:300], encoder)] == expected
        assert encoder.pids() and stopped not in encoder.pids()
    finally:
        if stopped:  # a pool that still waits on it would never shut down
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        encoder.close()


HELPERS_THEN_WAIT = """
import signal
from tasks.dwd import read_observations
from tasks.payload_process import PayloadEncoder
from tests.dwd_data import product_file
if __name__ == "__main__":
    rows = list(read_observations(product_file("00433")))[:2400]
    encoder = PayloadEncoder(2)
    batches = [encoder.submit([rows[i : i + 24] for i in range(0, 2400, 24)]) for _ in range(4)]
    assert all(len(b.result()) == 100 for b in batches)
    print(*encoder.pids(), flush=True)
    signal.pause()  # until the test kills it
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ended(pids: list[int], within: float = 10.0) -> bool:
    """Whether every process of `pids` exits within `within` seconds. Waits on each one's
    pidfd, readable once it has exited (helpers are the fork server's children, not ours,
    so there is nothing to `waitpid` for)."""
    deadline = time.monotonic() + within
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # exited and reaped already
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if not ready:
            return False
    return True


def test_helpers_end_with_a_flow_run_killed_by_sigkill(tmp_path: Path) -> None:
    """An OOM-killed flow run must not leave helpers waiting forever on their queue."""
    script = tmp_path / "run.py"
    script.write_text(HELPERS_THEN_WAIT)
    run = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        helpers = [int(pid) for pid in run.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(helpers) == 2 and all(alive(pid) for pid in helpers)
    finally:
        run.kill()
        run.wait()
    assert ended(helpers)


def test_payload_processes_setting() -> None:
    assert Settings().payload_processes == 2
    assert Settings().with_overrides(payload_processes="0").payload_processes == 0
    assert payload_encoder(0) is None
    assert payload_encoder(2) is payload_encoder(2)  # one pool per process and size
    with pytest.raises(PayloadProcessError, match="payload_processes"):
        payload_encoder(-1)
