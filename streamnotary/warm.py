"""The warm runner: one process per home that imports the pipeline once and forks per command.

`streamnotary up` starts it (``python -m streamnotary.warm --home H``) beside the broker,
the S3 server and the Prefect server; the client side is `streamnotary.warm_client`, which
says why it exists and describes the protocol. This side:

* imports every flow and command module, then checks that it is still single-threaded:
  forking a process with threads can copy a lock another thread holds, so a runner that
  finds threads after its imports refuses to serve;
* listens on ``<home>/run/warm.sock`` (directory 0700, socket 0600, bound under a temporary
  name and renamed, so a client never sees a half-made socket) and answers only peers with
  its own uid (SO_PEERCRED);
* per request: checks the client's `code_stamp` (a different one means the code changed
  since the runner imported it: it refuses and exits, the client runs the command itself)
  and forks. The child (`streamnotary.warm_child`) takes the client's fds 0-2, environment,
  working directory and arguments, refreshes Prefect's settings and logging from that
  environment and runs ``streamnotary.cli.main(argv)``; the runner reaps it and sends the
  client its wait status.
  The runner stays single-threaded.

Each served command is one line in ``<home>/logs/warm.log`` (command name and child PID; never
arguments or environment, which may hold secrets).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamnotary.warm_child import run_child, send
from streamnotary.warm_client import PROTOCOL, code_stamp, socket_path

# Imported before the first fork: everything a command imports on its way to a flow run.
PRELOAD = (
    "prefect",
    "flows.anchor_windows",
    "flows.anchor_groups",
    "flows.catch_up",
    "flows.audit",
    "flows.audit_groups",
    "flows.prove",
    "flows.backfill",
    "flows.ingest_dwd",
    "flows.repair",
    "streamnotary.cli",
)
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 1 << 20
READY_TIMEOUT_S = 120.0  # the imports take ~4 s on an idle 2-core machine


class WarmRunnerError(RuntimeError):
    """The warm runner cannot start or serve (threads after import, socket in use...)."""


def pid_path(home: Path) -> Path:
    return home / "run" / "warm.pid"


def log_path(home: Path) -> Path:
    return home / "logs" / "warm.log"


def _log(home: Path, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with log_path(home).open("a") as fh:
        fh.write(f"{stamp} {message}\n")


def preload() -> None:
    """Import what the commands import; refuse if any import left a thread running."""
    for name in PRELOAD:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(name)
    from streamnotary.cli import build_parser

    build_parser()  # imports every command module
    if threading.active_count() != 1:
        names = [t.name for t in threading.enumerate()]
        raise WarmRunnerError(f"threads running after the imports, cannot fork safely: {names}")


def listen(home: Path) -> socket.socket:
    """The runner's socket, owner-only, created atomically."""
    run = socket_path(home).parent
    run.mkdir(parents=True, exist_ok=True)
    run.chmod(0o700)
    final = socket_path(home)
    if final.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(final))
        except OSError:
            pass  # a dead runner's leftover: replaced below
        else:
            raise WarmRunnerError(f"another warm runner serves {home} already")
        finally:
            probe.close()
    temporary = run / f".warm-{os.getpid()}.sock"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(temporary))
    temporary.chmod(0o600)
    listener.listen(16)
    os.replace(temporary, final)
    return listener


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The length-prefixed JSON request and the three fds that came with it."""
    conn.settimeout(REQUEST_TIMEOUT_S)
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        if len(fds) != 3:
            raise WarmRunnerError(f"request carried {len(fds)} file descriptors, not 3")
        while len(data) < 4:
            data += _recv_more(conn)
        (length,) = struct.unpack(">I", data[:4])
        if length > MAX_REQUEST_BYTES:
            raise WarmRunnerError(f"request of {length} bytes refused")
        while len(data) < 4 + length:
            data += _recv_more(conn)
        request = json.loads(data[4 : 4 + length])
        check_request(request)
        return request, fds
    except (OSError, ValueError, WarmRunnerError):  # ValueError: JSON, UTF-8
        for fd in fds:
            os.close(fd)
        raise


def check_request(request: Any) -> None:
    """The request's shape, before anything acts on it (`WarmRunnerError` otherwise)."""
    if not isinstance(request, dict) or request.get("v") != PROTOCOL:
        raise WarmRunnerError("not a warm-runner request of this protocol version")
    argv, env = request.get("argv"), request.get("env")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise WarmRunnerError("request argv is not a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise WarmRunnerError("request env is not an object of strings")
    if not isinstance(request.get("cwd"), str) or not isinstance(request.get("stamp"), str):
        raise WarmRunnerError("request cwd or stamp is not a string")


def _recv_more(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise WarmRunnerError("request ended early")
    return chunk


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def serve(home: Path) -> None:
    """Accept commands until stopped (SIGTERM) or until a client runs other code.

    A forked child leaves this function by `SystemExit` with its command's status, so that
    the interpreter exits normally (Prefect drains its log and event workers at exit); the
    clean-up below is the runner's alone. The runner keeps each client's connection until
    it has reaped that client's child, and then sends the child's wait status: an exit code,
    or minus the signal that killed it (the client then dies of the same signal).
    """
    runner = os.getpid()
    stamp = code_stamp()
    preload()
    listener = listen(home)
    write_pid(home)
    waiting: dict[int, socket.socket] = {}

    def reap(_signum: int, _frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _log(home, f"ready pid={runner} stamp={stamp[:12]}")
    try:
        while True:
            conn, _ = listener.accept()
            # No reaping between the fork and `waiting[pid] = conn` (a fast child's status
            # would be lost): SIGCHLD waits until the connection is registered.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = _serve_one(home, conn, stamp, listener)
                if pid is None:
                    conn.close()
                    continue
                if pid < 0:
                    conn.close()
                    return
                waiting[pid] = conn
            finally:
                if os.getpid() == runner:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    finally:
        if os.getpid() == runner:
            listener.close()
            if runner_pid_file(home) == runner:
                for path in (socket_path(home), pid_path(home)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            _log(home, f"stopped pid={runner}")


def write_pid(home: Path) -> None:
    temporary = pid_path(home).with_suffix(f".{os.getpid()}")
    temporary.write_text(f"{os.getpid()}\n")
    os.replace(temporary, pid_path(home))


def runner_pid_file(home: Path) -> int | None:
    try:
        return int(pid_path(home).read_text().strip())
    except (OSError, ValueError):
        return None


def _serve_one(home: Path, conn: socket.socket, stamp: str, listener: socket.socket) -> int | None:
    """One connection: the child's PID, None if refused, -1 when the runner must stop
    (its code is stale)."""
    uid = peer_uid(conn)
    if uid != os.getuid():
        _log(home, f"refused a client of uid {uid}")
        return None
    try:
        request, fds = read_request(conn)
    except (OSError, ValueError, WarmRunnerError) as exc:
        _log(home, f"bad request: {exc}")
        return None
    try:
        if request.get("stamp") != stamp:
            send(conn, {"refused": "it runs other code than this installation (stopping it)"})
            _log(home, "stale: a client runs other code; stopping")
            return -1
        pid = os.fork()
        if pid == 0:  # the child: leaves by SystemExit, never back into the accept loop
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command's own subprocesses
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            code = run_child(conn, request, fds)
            with contextlib.suppress(OSError, ValueError):  # a closed or broken terminal
                sys.stdout.flush()
                sys.stderr.flush()
            sys.exit(code)
        command = next((a for a in request["argv"] if not str(a).startswith("-")), "?")
        _log(home, f"served {command} pid={pid}")
        return pid
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


# -- lifecycle, used by `up`, `down` and `status` ---------------------------------------------


def _is_warm_runner(pid: int) -> bool:
    from streamnotary.services import runs_module

    return runs_module(pid, "-m", "streamnotary.warm")


def runner_pid(home: Path) -> int | None:
    """The PID of this home's warm runner if it runs and its socket is in place."""
    pid = runner_pid_file(home)
    if pid is None or not _is_warm_runner(pid) or not socket_path(home).exists():
        return None
    return pid


def start_runner(
    home: Path, timeout_s: float = READY_TIMEOUT_S, *, wait: bool = True
) -> tuple[int, bool]:
    """Start this home's warm runner unless one runs; (PID, started now).

    Ready when the runner has written its PID file, which it does after its imports and
    once its socket is in place; with `wait` False it is left to get ready on its own
    (commands run cold until then).
    """
    from streamnotary.services import ServiceError, spawn

    pid = runner_pid(home)
    if pid is not None:
        return pid, False
    cmd = [sys.executable, "-m", "streamnotary.warm", "--home", str(home)]
    log = log_path(home)
    proc = spawn("warm", cmd, log, dict(os.environ), detach=True)
    if not wait:
        return proc.pid, True
    deadline = time.monotonic() + timeout_s
    while runner_pid(home) != proc.pid:
        if not _is_warm_runner(proc.pid):
            raise ServiceError(f"warm runner exited; see {log}")
        if time.monotonic() > deadline:
            raise ServiceError(f"warm runner not ready after {timeout_s:.0f} s; see {log}")
        time.sleep(0.1)
    return proc.pid, True


def stop_runner(home: Path, timeout_s: float = 10.0) -> bool:
    """Stop this home's warm runner by its PID (checked first); True if it was running.
    Commands it is running are its children in other processes and finish on their own."""
    pid = runner_pid_file(home)
    if pid is None or not _is_warm_runner(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_warm_runner(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_warm_runner(pid):
        os.kill(pid, signal.SIGKILL)
    for path in (socket_path(home), pid_path(home)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamnotary.warm")
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args(argv)
    home = args.home.expanduser().resolve()
    log_path(home).parent.mkdir(parents=True, exist_ok=True)
    try:
        serve(home)
    except WarmRunnerError as exc:
        _log(home, f"cannot serve: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
