"""`streamnotary down` signals only processes it started (issue 9 item 9).

A recorded PID is matched by PID + start time (/proc/<pid>/stat field 22) + data directory
on the command line. The drills start a real noida-db — "another home's broker", the very
binary `down` stops — and hand `down` a record whose PID now belongs to it.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamnotary.chain_nodes import stop_anvil
from streamnotary.processes import ProcessIdentity, start_time, write_identity
from streamnotary.services import (
    _Paths,
    free_port,
    kafka_command,
    pid_alive,
    private_dir,
    stop_services,
)


@pytest.fixture
def other_broker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A noida-db of another home, running right now."""
    data = tmp_path / "other-home" / "data" / "kafka"
    data.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(kafka_command(data, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield proc, data
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _record(home: Path, name: str, ident: ProcessIdentity) -> None:
    write_identity(_Paths(home).pid(name), ident)


def test_recycled_pid_of_another_homes_broker_is_left_alone(
    tmp_path: Path, other_broker: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, other_data = other_broker
    home = tmp_path / "home"
    ours = _Paths(home).data("kafka")
    started = start_time(proc.pid)
    assert started is not None
    # Our broker was PID <proc.pid> once and started earlier; the number was recycled.
    _record(home, "kafka", ProcessIdentity(proc.pid, started - 1, str(ours)))
    assert stop_services(home) == []
    assert proc.poll() is None and pid_alive(proc.pid, "noida-db")
    # Same PID and start time but the data directory is another home's: still not ours.
    _record(home, "kafka", ProcessIdentity(proc.pid, started, str(ours)))
    assert stop_services(home) == []
    assert proc.poll() is None
    # A record from before identities (bare PID): no start time, so no signal either.
    _Paths(home).pid("kafka").write_text(f"{proc.pid}\n")
    assert stop_services(home) == []
    assert proc.poll() is None
    # The exact identity (what `up` records) is stopped.
    _record(home, "kafka", ProcessIdentity.of(proc.pid, other_data))
    assert stop_services(home) == ["kafka"]
    assert proc.wait(timeout=15) is not None


def test_recycled_anvil_pid_is_left_alone(
    tmp_path: Path, other_broker: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, _ = other_broker
    home = tmp_path / "home"
    workdir = private_dir(home / "anvil")
    started = start_time(proc.pid)
    assert started is not None
    doc = {"pid": proc.pid, "start_time": started - 1, "data_dir": str(workdir),
           "port": 1, "url": "http://127.0.0.1:1"}  # fmt: skip
    (workdir / "anvil.json").write_text(json.dumps(doc))
    assert stop_anvil(home) is False
    assert proc.poll() is None


def test_home_and_data_directories_are_private(tmp_path: Path) -> None:
    home = private_dir(tmp_path / "home")
    data = private_dir(home / "data" / "kafka")
    for d in (home, data):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    record = _Paths(home).pid("kafka")
    write_identity(record, ProcessIdentity(1, 1, str(data)))
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
