"""A local Prefect server beside the embedded broker and S3 server (`streamnotary up`).

Without a configured Prefect API, every process that runs a flow starts Prefect's
temporary server first: about 8 s per CLI command on the 2-core build machine (issue 10),
and the runs vanish with it, so nothing shows in a UI. `streamnotary up` (and the demo)
therefore start one long-lived ``prefect server start`` under ``<home>/prefect`` and
every later CLI command in that home reports to it (`use_local_server`), unless the user
configured a Prefect API of their own (``PREFECT_API_URL`` or a Prefect profile): then
nothing is started and their server is used.

The server is identified by its PID file (``<home>/run/prefect.pid``) and its command
line, checked before it is signalled, like the other embedded services; its URL is in
``<home>/run/prefect.url``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from streamnotary.services import (
    HOST,
    ServiceError,
    free_port,
    port_is_free,
    runs_module,
    spawn,
)

READY_TIMEOUT_S = 300.0  # a cold start (database migrations) on a loaded 2-core machine is slow
_HEALTH_TIMEOUT_S = 0.5


def _pid_path(home: Path) -> Path:
    return home / "run" / "prefect.pid"


def _url_path(home: Path) -> Path:
    return home / "run" / "prefect.url"


def _is_prefect_server(pid: int) -> bool:
    """`pid` is alive and its command line is ``<python> -m prefect server start``."""
    return runs_module(pid, "-m", "prefect", "server", "start")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def healthy(url: str) -> bool:
    """The Prefect API at `url` answers its health check.

    The standard library's client, not `requests`: every CLI command asks this first, and
    importing `requests` cost ~0.25 s of each command's start (issue 10).
    """
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=_HEALTH_TIMEOUT_S) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_url(home: Path) -> str | None:
    """The API URL of this home's running Prefect server, None if it is not running."""
    pid, url = _read(_pid_path(home)), _read(_url_path(home))
    if pid is None or url is None or not pid.isdigit() or not _is_prefect_server(int(pid)):
        return None
    return url if healthy(url) else None


def user_configured_api() -> bool:
    """A Prefect API is configured outside streamnotary (environment or Prefect profile)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def start_server(home: Path, timeout_s: float = READY_TIMEOUT_S) -> tuple[str, bool]:
    """Start this home's Prefect server unless it runs; returns (API URL, started now)."""
    url = server_url(home)
    if url is not None:
        return url, False
    old = _read(_url_path(home))
    port = int(old.rsplit(":", 1)[1].split("/")[0]) if old else 0
    if not port or not port_is_free(port):
        port = free_port()
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    proc = spawn("prefect", cmd, home / "logs" / "prefect.log", env, detach=True)
    url = f"http://{HOST}:{port}/api"
    _pid_path(home).parent.mkdir(parents=True, exist_ok=True)
    _pid_path(home).write_text(f"{proc.pid}\n")
    _url_path(home).write_text(url + "\n")
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if not _is_prefect_server(proc.pid):
            raise ServiceError(f"prefect server exited; see {home / 'logs' / 'prefect.log'}")
        if time.monotonic() > deadline:
            raise ServiceError(f"prefect server not ready after {timeout_s:.0f} s")
        time.sleep(0.25)
    return url, True


def stop_server(home: Path, timeout_s: float = 15.0) -> bool:
    """Stop this home's Prefect server by its PID (checked first); True if it was running."""
    pid_text = _read(_pid_path(home))
    with contextlib.suppress(FileNotFoundError):
        _pid_path(home).unlink()
    if pid_text is None or not pid_text.isdigit() or not _is_prefect_server(int(pid_text)):
        return False
    pid = int(pid_text)
    group = os.getpgid(pid)  # its own session (spawn): the server and its workers only
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_prefect_server(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # workers that outlived the server
    return True


def use_local_server(home: Path) -> str | None:
    """Point this process's flows at the home's running Prefect server, if any.

    Called by the CLI before any flow module is imported. Does nothing when the user
    configured a Prefect API of their own or the server is not running (the flow then
    starts Prefect's temporary server, as before).
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = server_url(home)
    if url is not None:
        os.environ["PREFECT_API_URL"] = url
    return url
