"""`streamnotary up | down | status` with real noida-db and SeaweedFS processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from storage.kafka import KafkaLog
from storage.objectstore import S3ObjectStore, open_store
from streamnotary.config import load_settings
from streamnotary.services import pid_alive, services_status, start_services, stop_pid

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMNOTARY_")}
    return subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_up_status_down_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    try:
        first = _cli(home, "up")
        assert first.returncode == 0, first.stderr
        assert "started kafka, s3" in first.stdout

        doc = json.loads((home / "services.json").read_text())
        schema = json.loads((SCHEMAS / "services.schema.json").read_text())
        jsonschema.validate(doc, schema)
        secret = doc["settings"]["s3_secret_access_key"]
        assert secret and secret not in first.stdout and secret not in first.stderr
        assert stat.S_IMODE((home / "services.json").stat().st_mode) == 0o600
        for private in (home, home / "data" / "kafka", home / "data" / "s3", home / "run"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
        assert doc["settings"]["store_uri"] == "s3://streamnotary"

        status = _cli(home, "status", "--json")
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["kafka"]["alive"] and st["s3"]["alive"]
        assert secret not in status.stdout
        pids = (st["kafka"]["pid"], st["s3"]["pid"])

        again = _cli(home, "up")
        assert again.returncode == 0 and "already running" in again.stdout
        assert json.loads(_cli(home, "status", "--json").stdout)["kafka"]["pid"] == pids[0]

        # The settings resolve to the embedded services, and both are usable.
        monkeypatch.setenv("STREAMNOTARY_HOME", str(home))
        settings = load_settings(topic="svc.test")
        assert settings.kafka_bootstrap == doc["settings"]["kafka_bootstrap"]
        with KafkaLog.from_settings(settings) as log:
            log.ensure_topic(partitions=1)
            assert log.produce([(b"00044", b"{}", 1_700_000_000_000)]) == 1
        store = open_store(settings)
        assert isinstance(store, S3ObjectStore) and store.bucket == "streamnotary"
        assert store.put_once("state/svc/marker", b"kept") == "created"

        down = _cli(home, "down")
        assert down.returncode == 0 and "stopped kafka, s3" in down.stdout
        assert not any(pid_alive(p) for p in pids)
        dead = _cli(home, "status", "--json")
        assert dead.returncode == 1
        assert not json.loads(dead.stdout)["kafka"]["alive"]
        assert "nothing was running" in _cli(home, "down").stdout

        # Up again, in-process this time: same ports and credentials (remembered), data
        # kept, and the servers are detached (not children of this long-lived process).
        info = start_services(home)
        assert info.started == ("kafka", "s3") and info.running
        for pid in (info.kafka.pid, info.s3.pid):
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert ppid != os.getpid()
        assert json.loads((home / "services.json").read_text())["settings"] == doc["settings"]
        assert store.get("state/svc/marker") == b"kept"
        with KafkaLog.from_settings(settings) as log:
            assert log.watermarks(0) == (0, 1)
    finally:
        _cli(home, "down")
    info = services_status(home)
    assert info is not None and not info.kafka.alive and not info.s3.alive


def test_status_without_services(tmp_path: Path) -> None:
    out = _cli(tmp_path / "empty", "status")
    assert out.returncode == 1 and "streamnotary up" in out.stdout


def test_stop_pid_checks_the_executable_and_escalates(tmp_path: Path) -> None:
    """A recycled PID running something else is never signalled; SIGTERM is not the end."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # Popen returns when exec() begins; /proc shows the new command line a moment later.
        deadline = time.monotonic() + 5
        while not pid_alive(sleeper.pid, "sleep") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop_pid(sleeper.pid, "weed") is False  # not the expected binary
        assert sleeper.poll() is None
        assert stop_pid(sleeper.pid, "sleep") is True
        assert sleeper.wait(5) is not None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == "ready"
        marker = Path(sys.executable).name
        assert stop_pid(stubborn.pid, marker, timeout_s=0.5) is True
        assert stubborn.wait(5) == -9
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
