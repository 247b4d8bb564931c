"""`streamnotary up` starts a local Prefect server; CLI flows report to it; `down` stops it.

Real processes only: the embedded broker and S3 server, `prefect server start`, and the
`streamnotary` CLI as a user runs it (no PREFECT_API_URL in its environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from streamnotary.prefect_server import _is_prefect_server, server_url


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMNOTARY_", "PREFECT_API_URL"))
    }
    env.update(STREAMNOTARY_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_flows_report_to_the_server_up_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        up = _cli(home, "up")
        assert up.returncode == 0, up.stderr
        assert "prefect" in up.stdout.splitlines()[0]  # "started kafka, s3, prefect"
        url = server_url(home)
        assert url is not None
        pid = int((home / "run" / "prefect.pid").read_text())
        assert _is_prefect_server(pid)

        again = _cli(home, "up")
        assert "already running" in again.stdout
        status = _cli(home, "status").stdout
        assert f"prefect   {url.removesuffix('/api')}" in status
        warm_pid = int((home / "run" / "warm.pid").read_text())
        assert f"warm      alive  pid {warm_pid}" in status
        assert int((home / "run" / "prefect.pid").read_text()) == pid

        anchor = _cli(home, "anchor", "--topic", "prefect.server.test")
        assert anchor.returncode == 0, anchor.stderr
        # run by the warm runner `up` started: its child must have re-read PREFECT_API_URL
        assert "served anchor pid=" in (home / "logs" / "warm.log").read_text()
        output = anchor.stdout + anchor.stderr
        assert "ERROR" not in output  # e.g. no "Failed to send telemetry" of a temporary server
        runs = requests.post(f"{url}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
        names = {
            requests.get(f"{url}/flows/{r['flow_id']}", timeout=10).json()["name"] for r in runs
        }
        assert "anchor-windows" in names
        assert any(r["state_type"] == "COMPLETED" for r in runs)
    finally:
        down = _cli(home, "down")
    assert "prefect" in down.stdout and "warm runner" in down.stdout
    assert not (home / "run" / "warm.sock").exists()
    assert not _is_prefect_server(pid)
    assert server_url(home) is None


def test_demo_on_a_fresh_home_reports_to_the_server_it_starts(tmp_path: Path) -> None:
    """A new user's first command: no Prefect API configured, no server running. The demo
    starts the home's Prefect server and its flows must report there, not start Prefect's
    temporary server (which the process had configured itself for when it looked for a
    user's API before starting the home's server)."""
    home = tmp_path / "home"
    try:
        demo = _cli(home, "demo", "--json")
        assert demo.returncode == 0, demo.stderr[-3000:]
        assert "temporary server" not in demo.stderr
        assert "ERROR" not in demo.stderr
        url = server_url(home)
        assert url is not None
        runs = requests.post(f"{url}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
        names = {
            requests.get(f"{url}/flows/{r['flow_id']}", timeout=10).json()["name"]
            for r in runs
            if r["state_type"] == "COMPLETED"
        }
        assert {"ingest-dwd", "anchor-windows"} <= names
    finally:
        _cli(home, "down")
