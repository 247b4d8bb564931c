"""prefect.yaml on a real Prefect server: deploy, run a process worker, see a scheduled run.

This is the operator path of docs/operations.md, executed: a `prefect server start`
subprocess (SQLite in a temporary PREFECT_HOME), the `streamnotary` process work pool made
with the CLI, `prefect deploy --all` from the repository root, and `prefect worker start`
with the STREAMNOTARY_* environment of a fresh topic/bucket/ledger on the session's real
noida-db and SeaweedFS. The test passes only when a run that the Prefect *scheduler*
created for the anchor-windows deployment reaches Completed and the windows it had to
anchor are anchored (receipts in S3, roots as expected).

The deployment file is the repository's prefect.yaml with one test-only change made to a
temporary copy: anchor-windows runs every few seconds instead of every 15 minutes. The
hourly ingest-dwd schedule ships inactive. The audit deployment's event trigger must then
start an audit of the topic after the anchor run, which must pass with a fresh verdict.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from streamnotary.services import free_port
from tasks.record import Observation
from tasks.window import WindowSpec
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POOL = "streamnotary"
TEST_INTERVAL_SECONDS = 5
SERVER_START_TIMEOUT_S = 240.0  # a loaded 2-core CI machine
SCHEDULED_RUN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
DEPLOYMENTS = {"anchor-windows", "ingest-dwd", "backfill", "audit"}

T = TypeVar("T")


# -- processes we start, stopped by their process group (own session = own group) ---------


@dataclass
class Started:
    """A subprocess this test started in its own session, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: signal.Signals

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log})"
        return f"--- last {lines} lines of the {self.name} log ({self.log}) ---\n" + "\n".join(
            text[-lines:]
        )

    def stop(self) -> None:
        """Signal the process group to stop, SIGKILL it after a deadline; reap the child.

        The group (= our child's PID, as it leads its own session) holds exactly what this
        test started: the server's uvicorn child, the worker's flow-run subprocesses.
        """
        pgid = self.popen.pid
        signals = ((self.stop_signal, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0))
        for sig, wait_s in signals:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            if _group_gone(pgid, wait_s):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)


def _group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        # our direct child lingers as a zombie until reaped; reaping is harmless here
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
        time.sleep(0.1)
    return False


def start(
    name: str,
    args: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Started:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Started(name, popen, log, stop_signal)


def poll(
    what: str, check: Callable[[], T | None], timeout_s: float, diagnostics: Callable[[], str]
) -> T:
    """Call `check` until it returns a value; fail with `diagnostics()` at the deadline.

    A request to the test's SQLite-backed server that times out is a slow answer on a
    loaded machine, not the outcome under test: it is retried until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    slow: list[str] = []
    while True:
        try:
            result = check()
        except httpx.TimeoutException as exc:
            slow.append(f"{type(exc).__name__} on {exc.request.url}")
            result = None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            timeouts = f"\nrequests that timed out: {slow}" if slow else ""
            try:
                details = diagnostics()
            except httpx.HTTPError as exc:  # the server is still unresponsive
                details = f"(no diagnostics: {exc!r})"
            pytest.fail(f"{what} not seen within {timeout_s:.0f}s{timeouts}\n{details}")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


# -- environment --------------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This process's environment without Prefect or streamnotary settings of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STREAMNOTARY_"))}


def server_env(home: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # schedule promptly, and only a couple of runs ahead (the default is up to 100,
        # all contending for the deployment's single concurrency slot on SQLite)
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "2",
    }


def client_env(home: Path, api_url: str) -> dict[str, str]:
    return {
        **clean_environ(),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def fast_prefect_yaml(tmp_path: Path) -> Path:
    """The repository's prefect.yaml, with a fast anchor-windows interval and no ingest cron."""
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in doc["deployments"]}
    anchor = by_name["anchor-windows"]
    # the shipped file: one active interval schedule (replaced here by a faster one)
    assert [("interval" in s, s.get("active", True)) for s in anchor["schedules"]] == [
        (True, True)
    ], anchor["schedules"]
    anchor["schedules"] = [{"interval": TEST_INTERVAL_SECONDS, "active": True}]
    # the shipped ingest schedule is inactive (it downloads from opendata.dwd.de)
    assert [s.get("active", True) for s in by_name["ingest-dwd"]["schedules"]] == [False]
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(args: list[str], env: dict[str, str], server: Started, timeout_s: float = 120.0) -> str:
    """Run a `prefect` CLI command from the repository root; fail with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        command = " ".join(args)
        pytest.fail(f"prefect {command} exited {done.returncode}:\n{output}\n{server.tail()}")
    return output


# -- expected outcome ---------------------------------------------------------------------


def closed_window_ids(observations: list[Observation], lateness: timedelta) -> set[str]:
    """Windows a drain=false run must close: per station, end + lateness <= watermark."""
    spec = WindowSpec(86_400)
    watermark: dict[str, Any] = {}
    for o in observations:
        watermark[o.station_id] = max(watermark.get(o.station_id, o.observed_at), o.observed_at)
    keys = {spec.key_of(o.station_id, o.observed_at) for o in observations}
    return {k.window_id for k in keys if k.end + lateness <= watermark[k.station_id]}


# -- the test -----------------------------------------------------------------------------


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[Started, str]]:
    home = tmp_path / "prefect-server"
    home.mkdir()
    port = free_port()
    server = start(
        "prefect server",
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env(home),
        tmp_path / "prefect-server.log",
        tmp_path,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:

        def healthy() -> bool | None:
            if server.popen.poll() is not None:
                code = server.popen.returncode
                pytest.fail(f"prefect server exited with {code}\n{server.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                    return True
            return None

        poll("prefect server /api/health", healthy, SERVER_START_TIMEOUT_S, server.tail)
        yield server, api_url
    finally:
        server.stop()


def test_scheduled_anchor_windows_run_completes_on_a_process_worker(
    tmp_path: Path,
    prefect_server: tuple[Started, str],
    kafka_bootstrap: str,
    s3_server: Any,
) -> None:
    server, api_url = prefect_server
    env: PipelineEnv = make_env(tmp_path, kafka_bootstrap, s3_server)
    observations = demo_observations(days=3)
    env.produce_observations(observations)
    expected = closed_window_ids(observations, timedelta(hours=1))
    assert len(expected) == 4  # 2 stations × 2 closed days; the third day is still open

    client_home = tmp_path / "prefect-client"
    client_home.mkdir()
    cli_env = client_env(client_home, api_url)
    cli(["work-pool", "create", POOL, "--type", "process"], cli_env, server)
    deployed = cli(
        ["--no-prompt", "deploy", "--all", "--prefect-file", str(fast_prefect_yaml(tmp_path))],
        {**cli_env, "STREAMNOTARY_DEPLOY_DIR": str(REPO)},
        server,
    )

    api = httpx.Client(base_url=api_url, timeout=30.0)  # poll() retries a slow answer
    deployments = {
        d["name"]: d for d in api.post("/deployments/filter", json={}).raise_for_status().json()
    }
    assert set(deployments) == DEPLOYMENTS, deployed
    anchor = deployments["anchor-windows"]
    assert anchor["work_pool_name"] == POOL
    assert anchor["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    assert [(s["schedule"]["interval"], s["active"]) for s in anchor["schedules"]] == [
        (TEST_INTERVAL_SECONDS, True)
    ]
    assert not anchor["paused"]
    assert anchor["global_concurrency_limit"]["limit"] == 1
    assert deployments["backfill"]["schedules"] == deployments["audit"]["schedules"] == []
    ingest_schedules = deployments["ingest-dwd"]["schedules"]
    assert [s["active"] for s in ingest_schedules] == [False]  # shipped inactive

    # A config file of the worker's cwd must not leak into the run: an empty explicit one.
    empty_config = tmp_path / "streamnotary.toml"
    empty_config.write_text("")
    worker = start(
        "prefect worker",
        ["prefect", "worker", "start", "--pool", POOL, "--name", "test-worker"],
        {
            **cli_env,
            **env.env,
            "STREAMNOTARY_CONFIG": str(empty_config),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        },
        tmp_path / "prefect-worker.log",
        tmp_path,
        # Prefect 3.8's worker stops at once on Ctrl+C but was seen ignoring SIGTERM for
        # over a minute
        stop_signal=signal.SIGINT,
    )
    try:
        run = wait_for_scheduled_run(api, anchor["id"], server, worker)
        # the run's own report; its logs reach the API in batches, after
        # the state; the worker must not stop (and signal the run's process) before that
        summary = f"anchored {len(expected)} window revision(s) of {env.topic}"
        poll(
            f"the run log line {summary!r}",
            lambda: any(summary in m for m in run_log_messages(api, run["id"])) or None,
            30.0,
            lambda: "\n".join(run_log_messages(api, run["id"])),
        )
        # the audit deployment's trigger starts an audit of the topic right after
        audit_run = wait_for_triggered_audit(api, deployments["audit"]["id"], server, worker)
    finally:
        worker.stop()
        stop_flow_run_processes(api, api_url)

    assert audit_run["parameters"] == {"topic": env.topic, "all_windows": True}
    assert audit_run["state"]["message"].startswith(
        f"audit of {env.topic}: pass - {len(expected)} window(s)"
    ), audit_run["state"]
    assert run["state"]["message"].startswith(f"anchored {len(expected)} window revision(s)")
    assert run["auto_scheduled"] is True
    assert run["created_by"]["type"] == "SCHEDULE"
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"] == {"drain": False}

    anchored = env.roots()
    assert {(w, r) for w, r, _ in anchored} == {(w, 0) for w in expected}, worker.tail()
    assert all(re.fullmatch(r"[0-9a-f]{64}", root) for _, _, root in anchored)
    # the S3 secret reached the run through the worker's environment only: neither the
    # Prefect database (parameters, logs, states) nor the worker's output contains it
    # (the topic name, logged by the run, is found there: the search does see the data)
    searched = [*(tmp_path / "prefect-server").glob("prefect.db*"), worker.log, server.log]
    contents = {p.name: p.read_bytes() for p in searched}
    assert any(env.topic.encode() in data for data in contents.values())
    secret = env.secret_access_key.encode()
    leaked = [name for name, data in contents.items() if secret and secret in data]
    assert secret and leaked == [], f"the S3 secret appears in {leaked}"


def wait_for_scheduled_run(
    api: httpx.Client, deployment_id: str, server: Started, worker: Started
) -> dict[str, Any]:
    """The first scheduler-created run of the deployment to reach Completed.

    Fails at once, with the run's own log, if such a run ends Failed or Crashed.
    """

    def diagnostics() -> str:
        runs = api.post(
            "/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
        ).json()
        states = [(r["name"], r["auto_scheduled"], r["state"]["name"]) for r in runs]
        return f"runs: {states}\n{worker.tail()}\n{server.tail(20)}"

    def completed() -> dict[str, Any] | None:
        if worker.popen.poll() is not None:
            pytest.fail(f"prefect worker exited with {worker.popen.returncode}\n{worker.tail()}")
        runs = (
            api.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {"deployment_id": {"any_": [deployment_id]}},
                    "sort": "EXPECTED_START_TIME_ASC",
                },
            )
            .raise_for_status()
            .json()
        )
        for run in runs:
            if not run["auto_scheduled"]:
                continue
            if run["state"]["type"] in ("FAILED", "CRASHED"):
                log = "\n".join(run_log_messages(api, run["id"]))
                pytest.fail(f"scheduled run {run['name']} ended {run['state']['name']}:\n{log}")
            if run["state"]["type"] == "COMPLETED":
                return run
        return None

    return poll(
        "a Completed scheduled anchor-windows run",
        completed,
        SCHEDULED_RUN_TIMEOUT_S,
        diagnostics,
    )


def wait_for_triggered_audit(
    api: httpx.Client, deployment_id: str, server: Started, worker: Started
) -> dict[str, Any]:
    """The audit run the deployment trigger created, once Completed (fails if it failed)."""

    def runs() -> list[dict[str, Any]]:
        return (
            api.post(
                "/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
            )
            .raise_for_status()
            .json()
        )

    def completed() -> dict[str, Any] | None:
        for run in runs():
            if run["state"]["type"] in ("FAILED", "CRASHED"):
                log = "\n".join(run_log_messages(api, run["id"]))
                pytest.fail(f"triggered audit {run['name']} ended {run['state']['name']}:\n{log}")
            if run["state"]["type"] == "COMPLETED":
                return run
        return None

    def diagnostics() -> str:
        automations = api.post("/automations/filter", json={}).json()
        return f"automations: {automations}\nruns: {runs()}\n{worker.tail()}\n{server.tail(20)}"

    return poll("a Completed triggered audit run", completed, SCHEDULED_RUN_TIMEOUT_S, diagnostics)


def stop_flow_run_processes(api: httpx.Client, api_url: str) -> None:
    """Kill flow-run processes our worker left behind (they run in sessions of their own).

    Only PIDs the server recorded as a run's infrastructure, and only if that process still
    talks to this test's server (PID reuse), are signalled.
    """
    try:
        runs = api.post("/flow_runs/filter", json={}).json()
    except httpx.HTTPError:  # the server is gone or hung: its runs' processes die with it
        return
    for run in runs:
        pid = str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT_API_URL={api_url}".encode() in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def run_log_messages(api: httpx.Client, flow_run_id: str) -> list[str]:
    logs = api.post(
        "/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"},
    ).json()
    return [entry["message"] for entry in logs]
