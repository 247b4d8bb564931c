"""The CLI side of the warm runner: hand a command to the home's warm process, or run it here.

Why: a `streamnotary anchor` process spends ~4.2 s importing Prefect, pyarrow, boto3 and
the flows before its first record (measured on the 2-core build machine, issue 10), a
third of the demo's anchor run. `streamnotary up` therefore starts a *warm runner*
(`streamnotary.warm`): one process per home that has imported all of that once and forks a
child per command. The child is the same ``main(argv)`` a cold process would run, with the
caller's arguments, environment, working directory and terminal (stdin, stdout and stderr
are passed over the socket), and its exit status comes back here. This module is the client
and imports little beyond the standard library, so handing a command over costs
milliseconds.

When there is no warm runner, when it runs other code than this installation (the
`code_stamp` differs: an upgrade or an edit since `up`) or when ``STREAMNOTARY_WARM=0``, the
command runs in this process exactly as before. Service commands (`up`, `down`, `status`)
always run here.

Protocol (``<home>/run/warm.sock``, AF_UNIX, mode 0600, peer uid checked by the runner):
the client sends a 4-byte big-endian length and a JSON request ``{"v": 1, "argv", "cwd",
"env", "stamp"}`` with its fds 0, 1, 2 attached (SCM_RIGHTS); it reads newline-delimited
JSON answers: ``{"refused": reason}``, or ``{"pid": n}`` from the forked child, to which the
client answers ``go`` (the child runs the command only then) and, when the command ends,
``{"exit": code}``. The client gives up waiting for the PID after `START_TIMEOUT_S` and
runs the command itself; since it never sends ``go`` after that, a child that answered
late runs nothing: a command runs exactly once, here or there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

PROTOCOL = 2
GO = b"go\n"  # the answer to the child's PID: the command runs there, not here
# Commands that manage the services themselves never go through the warm runner.
LOCAL_COMMANDS = frozenset({"up", "down", "status"})
# The packages whose code a warm runner holds in memory; any change to them makes it stale.
CODE_PACKAGES = ("streamnotary", "flows", "tasks", "storage")
# Libraries it holds too: an upgrade rewrites their __init__.py (located, never imported).
LIBRARIES = ("prefect", "pyarrow", "boto3", "botocore", "confluent_kafka", "pydantic", "rich")
CONNECT_TIMEOUT_S = 2.0
START_TIMEOUT_S = 15.0  # from sending the request to the child's first answer
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class WarmRunnerLost(RuntimeError):
    """The child running the command ended without reporting an exit status."""


def socket_path(home: Path) -> Path:
    return home / "run" / "warm.sock"


def code_stamp(root: Path | None = None) -> str:
    """SHA-256 over the interpreter, the main libraries' entry files and every source file's
    path, size and mtime.

    Both sides compute it: the runner when it imports the code, the client on every command
    (~200 stats, a few milliseconds). Equal stamps mean the child would run the code the
    client would have run.
    """
    import importlib.util

    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0".encode())
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        origin = spec.origin if spec is not None else None
        if origin and os.path.exists(origin):
            st = os.stat(origin)
            digest.update(f"{origin}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for package in CODE_PACKAGES:
        for directory, dirs, files in os.walk(root / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".json")):
                    path = Path(directory, name)
                    st = path.stat()
                    rel = path.relative_to(root).as_posix()
                    digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def home_of(argv: list[str]) -> Path:
    """The home a command names (``--home X`` / ``--home=X``), else the default one."""
    for i, arg in enumerate(argv):
        if arg == "--home" and i + 1 < len(argv):
            return Path(argv[i + 1]).expanduser().resolve()
        if arg.startswith("--home="):
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    from streamnotary.config import default_home

    return default_home().expanduser().resolve()


def wants_warm(argv: list[str]) -> bool:
    """A command that may be handed to a warm runner (not a service command, not disabled)."""
    if os.environ.get("STREAMNOTARY_WARM", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command is not None and command not in LOCAL_COMMANDS


def request_bytes(argv: list[str], stamp: str) -> bytes:
    request = {
        "v": PROTOCOL,
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "stamp": stamp,
    }
    body = json.dumps(request).encode()
    return struct.pack(">I", len(body)) + body


def run_warm(argv: list[str], home: Path | None = None, *, stamp: str | None = None) -> int | None:
    """Run `argv` in the home's warm runner; its exit status, or None to run it here.

    None means nothing was executed: no runner, a stale one (it says why on stderr) or one
    that did not start the command in time.
    """
    path = socket_path(home or home_of(argv))
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except OSError:
            return None
        data = request_bytes(argv, stamp or code_stamp())
        sock.settimeout(START_TIMEOUT_S)
        try:
            sent = socket.send_fds(sock, [data], [0, 1, 2])
            sock.sendall(data[sent:])
            answers = sock.makefile("rb")
            first = _answer(answers)
        except (OSError, ValueError) as exc:  # say why: nothing ran there, it runs here
            print(
                f"streamnotary: warm runner gave no answer ({exc}); running here", file=sys.stderr
            )
            return None
        if first is None or "pid" not in first:
            if first and "refused" in first:
                print(
                    f"streamnotary: warm runner: {first['refused']}; running here", file=sys.stderr
                )
            return None
        try:  # from here on the command runs there and never here (warm_child.caller_says_go)
            sock.sendall(GO)
        except OSError as exc:  # not sent: the child never runs it
            print(f"streamnotary: warm runner went away ({exc}); running here", file=sys.stderr)
            return None
        sock.settimeout(None)
        try:
            return _wait(int(first["pid"]), answers)
        except WarmRunnerLost as exc:
            print(f"streamnotary: {exc}", file=sys.stderr)
            return 1
    finally:
        sock.close()


def _answer(answers: object) -> dict[str, object] | None:
    line = answers.readline()  # type: ignore[attr-defined]
    if not line:
        return None
    doc = json.loads(line)
    return doc if isinstance(doc, dict) else None


def _wait(pid: int, answers: object) -> int:
    """Forward our signals to the child until the runner reports its wait status.

    A child killed by a signal is reported as minus that signal: this process then dies of
    the same signal, so that whoever runs `streamnotary` sees what a cold process shows.
    """

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                doc = _answer(answers)
            except InterruptedError:
                continue
            if doc is None:  # the runner itself went away (`down`) while the command ran
                while os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.2)
                raise WarmRunnerLost(
                    f"the warm runner stopped while its child {pid} ran the command; "
                    "its exit status is unknown"
                )
            if "exit" in doc:
                code = int(doc["exit"])  # type: ignore[call-overload]
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code
