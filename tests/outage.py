"""Make a real dependency unreachable, then bring it back: for the retry tests.

A dependency is reached through a port that nothing listens on (connection refused, as
for a stopped server or a firewalled host); `Forwarder.start()` then opens the port and
forwards every connection to the real server behind it. `restore_when_retrying` calls
`restore` once Prefect reports the task's first failure (state *AwaitingRetry*), so the
task's retry, not its first attempt, meets the service again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from streamnotary.services import free_port

RESTORE_DEADLINE_S = 120.0


class Forwarder:
    """A TCP forwarder from a reserved local port to `target` (started on demand)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


def task_runs(tag: str) -> list[Any]:
    """Task runs carrying `tag`, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[tag]))
        )


def restore_when_retrying(tag: str, restore: Callable[[], None]) -> threading.Thread:
    """In the background: wait until a task run tagged `tag` awaits a retry, then `restore()`."""
    errors: list[BaseException] = []

    def watch() -> None:
        deadline = time.monotonic() + RESTORE_DEADLINE_S
        while time.monotonic() < deadline:
            if any(r.state and r.state.name == "AwaitingRetry" for r in task_runs(tag)):
                try:
                    restore()
                except BaseException as exc:  # reported by the test through .errors
                    errors.append(exc)
                return
            time.sleep(0.2)
        errors.append(TimeoutError(f"no task run tagged {tag} awaited a retry"))

    thread = threading.Thread(target=watch, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread
