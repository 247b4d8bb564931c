"""The warm runner's forked child: it becomes the caller's command (`streamnotary.warm`).

It takes the caller's terminal (fds 0-2 passed over the socket), working directory,
environment and arguments, makes Prefect read that environment again, tells the caller its
PID, waits for the caller's ``go`` and runs ``streamnotary.cli.main(argv)``. A caller that
dies (SIGKILL cannot be passed on) takes the command with it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

from streamnotary.warm_client import GO


def send(conn: socket.socket, doc: dict[str, Any]) -> None:
    """One newline-delimited JSON answer to the caller."""
    conn.sendall(json.dumps(doc).encode() + b"\n")


def run_child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the client's command and run it; its exit status."""
    try:
        become_client(request, fds)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        # Nothing ran: the client, which sees no ``pid`` answer, runs the command itself.
        print(f"warm runner: cannot take over the command: {exc}", file=sys.stderr)
        return 1
    send(conn, {"pid": os.getpid()})
    if not caller_says_go(conn):
        return 0  # the caller gave up waiting and runs the command itself: nothing ran here
    finished = threading.Event()
    threading.Thread(
        target=_die_with_the_caller, args=(conn, finished), name="warm-caller", daemon=True
    ).start()
    from streamnotary.cli import main

    try:
        return int(main(list(request["argv"])) or 0)
    except SystemExit as exc:  # argparse and explicit exits, as the interpreter ends them
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception:
        # Any error of any command ends here, because this forked child must never unwind
        # into the runner's accept loop. Nothing is swallowed: it ends exactly as an
        # uncaught exception ends a cold process (the installed excepthook, status 1).
        sys.excepthook(*sys.exc_info())
        return 1
    finally:
        finished.set()


def caller_says_go(conn: socket.socket) -> bool:
    """Wait for the caller's `go`, sent once it has our PID; False if it hung up instead.

    The caller stops waiting for our PID after `START_TIMEOUT_S` and then runs the command
    itself. Without this answer, a PID sent just as the caller gave up would have the
    command run twice, here and there. The caller sends `go` only while it still waits,
    and never runs the command itself once `go` is sent, so exactly one of the two runs it.
    Waits as long as the caller does: a caller that sent `go` is then waiting for our exit.
    """
    try:
        conn.settimeout(None)
        received = b""
        while len(received) < len(GO) and (chunk := conn.recv(len(GO) - len(received))):
            received += chunk
    except OSError:
        return False
    return received == GO


def _die_with_the_caller(conn: socket.socket, finished: threading.Event) -> None:
    """Kill the command when its caller is gone before it ended.

    The caller passes on every signal it can catch; one it cannot (SIGKILL, e.g. a kill -9
    or an out-of-memory kill of the `streamnotary` process) closes the socket, and the
    command must die with it, as it would have in the caller's own process.
    """
    try:
        conn.settimeout(None)
        gone = conn.recv(1) == b""
    except OSError:
        gone = True
    if gone and not finished.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


def become_client(request: dict[str, Any], fds: list[int]) -> None:
    """The client's terminal, working directory, environment and arguments."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own fd 0 from now on
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=os.isatty(fd) or name == "stderr",
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    sys.argv = ["streamnotary", *request["argv"]]
    refresh_prefect()


def refresh_prefect() -> None:
    """Prefect read its settings and configured logging when the runner imported it; the
    command's environment (``PREFECT_API_URL``, ``PREFECT_LOGGING_LEVEL``...) is another."""
    from streamnotary.cli import refresh_imported_prefect

    refresh_imported_prefect(logging_too=True)
