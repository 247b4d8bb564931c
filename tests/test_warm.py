"""The warm runner (`streamnotary.warm`): commands forked from one warm process behave as
cold ones — same output, exit status, working directory and environment — and the runner
refuses what it must: stale code, other users, and it passes signals on.

Real processes only: the runner is ``python -m streamnotary.warm`` started as `up` starts it,
and the client is the `streamnotary` command run as a user runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamnotary.warm import log_path, runner_pid, start_runner, stop_runner
from streamnotary.warm_client import PROTOCOL, code_stamp, request_bytes, run_warm, socket_path
from tests.pipeline_env import wait_for


def cli(
    home: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMNOTARY_")}
    environment.update(STREAMNOTARY_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


def served(home: Path) -> list[str]:
    return [line for line in log_path(home).read_text().splitlines() if " served " in line]


@pytest.fixture(scope="module")
def warm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("warm") / "home"
    pid, started = start_runner(home)
    assert started and runner_pid(home) == pid
    try:
        yield home
    finally:
        stop_runner(home)


def test_a_command_runs_warm_with_the_callers_terminal_cwd_and_environment(
    warm_home: Path, tmp_path: Path
) -> None:
    def generate(outdir: str, **env: str) -> subprocess.CompletedProcess[str]:
        args = ("generate", outdir, "--stations", "2", "--days", "3", "--json")
        return cli(warm_home, *args, cwd=tmp_path, COLUMNS="57", **env)

    before = len(served(warm_home))
    warm = generate("out")
    assert len(served(warm_home)) == before + 1 and "served generate" in served(warm_home)[-1]
    cold = generate("cold", STREAMNOTARY_WARM="0")
    assert len(served(warm_home)) == before + 1  # STREAMNOTARY_WARM=0 ran it here
    assert warm.returncode == cold.returncode == 0, warm.stderr
    assert warm.stdout.replace('"out/', '"cold/') == cold.stdout and warm.stdout.startswith("{")
    # relative to the caller's working directory, not the runner's
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in (tmp_path / "cold").iterdir()
    )
    # argparse wraps its usage at $COLUMNS: the caller's environment reached the child
    warm_err = cli(warm_home, "generate", "--stations", "x", COLUMNS="57")
    cold_err = cli(warm_home, "generate", "--stations", "x", COLUMNS="57", STREAMNOTARY_WARM="0")
    assert warm_err.returncode == cold_err.returncode == 2
    assert warm_err.stderr == cold_err.stderr and "invalid int value" in warm_err.stderr
    wide = cli(warm_home, "generate", "--stations", "x", COLUMNS="200")
    assert wide.returncode == 2 and wide.stderr != warm_err.stderr


def start_long_command(home: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A `generate` of ten years of 400 stations, handed to the runner; (caller, child PID)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMNOTARY_")}
    environment["STREAMNOTARY_HOME"] = str(home)
    before = len(served(home))
    argv = ["generate", str(tmp_path / "big"), "--stations", "400", "--days", "3650"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamnotary.cli", *argv],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(served(home)) > before or proc.poll() is not None, "the hand-over")
    assert proc.poll() is None, proc.communicate()
    child = int(served(home)[-1].rsplit("pid=", 1)[1])
    # mid-work: its first archive is written, ten years of 400 stations are not
    wait_for(lambda: any((tmp_path / "big").glob("*.zip")), "the first archive", 60)
    assert Path(f"/proc/{child}").exists()
    return proc, child


def gone(pid: int) -> bool:
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"process {pid} to end", 10)
    return True


def test_a_signal_to_the_caller_reaches_the_command(warm_home: Path, tmp_path: Path) -> None:
    proc, child = start_long_command(warm_home, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert gone(child)
    assert runner_pid(warm_home) is not None  # the runner itself lives on


def test_a_killed_caller_takes_the_command_with_it(warm_home: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be passed on; the command must not outlive its `streamnotary` process."""
    proc, child = start_long_command(warm_home, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert gone(child)
    assert runner_pid(warm_home) is not None


def test_a_command_killed_by_a_signal_kills_its_caller_alike(
    warm_home: Path, tmp_path: Path
) -> None:
    """Whoever runs `streamnotary` sees what a cold process shows: death by that signal."""
    proc, child = start_long_command(warm_home, tmp_path)
    os.kill(child, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err


def test_stopping_the_runner_leaves_running_commands_to_finish(tmp_path: Path) -> None:
    home = tmp_path / "home"
    start_runner(home)
    proc, child = start_long_command(home, tmp_path)
    try:
        assert stop_runner(home)
        assert Path(f"/proc/{child}").exists()  # the command goes on without its runner
        os.kill(child, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "exit status is unknown" in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        stop_runner(home)


def test_a_runner_with_other_code_refuses_stops_and_the_command_runs_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    start_runner(home)
    try:
        assert run_warm(["generate", "--help"], home, stamp="0" * 64) is None
        assert "runs other code" in capsys.readouterr().err
        wait_for(lambda: runner_pid(home) is None, "the stale runner to stop", 10)
        assert not socket_path(home).exists()
        assert "served" not in log_path(home).read_text()
    finally:
        stop_runner(home)


def test_a_child_whose_caller_gave_up_waiting_runs_nothing(warm_home: Path, tmp_path: Path) -> None:
    """The caller stops waiting for the child's PID after START_TIMEOUT_S and runs the
    command itself; a PID that arrives as it gives up must not start a second run there."""
    out = tmp_path / "out.txt"
    request = request_bytes(["generate", "--help"], code_stamp())
    with open(out, "w") as terminal, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(socket_path(warm_home)))
        sent = socket.send_fds(s, [request], [0, terminal.fileno(), terminal.fileno()])
        s.sendall(request[sent:])
        answer = json.loads(s.makefile("rb").readline())
        # The caller has given up: it never answers `go`. Meanwhile the runner serves a
        # later command from start to end (a whole client process), while this child,
        # already holding its command, must have run nothing.
        assert cli(warm_home, "generate", "--help").returncode == 0
        assert out.read_text() == ""  # `generate --help` printed nothing here
    pid = int(answer["pid"])
    assert gone(pid)  # the hang-up ends it
    assert out.read_text() == ""  # and it never ran


@pytest.mark.parametrize(
    "request_doc",
    [
        {"v": PROTOCOL, "argv": 7, "cwd": "/", "env": {}, "stamp": ""},
        {"v": PROTOCOL, "argv": ["status"], "cwd": "/", "env": {"A": 1}, "stamp": ""},
        {"v": PROTOCOL, "argv": ["status"], "cwd": None, "env": {}, "stamp": ""},
        {"v": PROTOCOL + 1},
        [],
    ],
)
def test_a_malformed_request_is_refused_and_the_runner_serves_on(
    warm_home: Path, request_doc: object
) -> None:
    body = json.dumps(request_doc).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(socket_path(warm_home)))
        socket.send_fds(s, [struct.pack(">I", len(body)) + body], [0, 1, 2])
        assert s.recv(100) == b""  # closed without an answer: nothing was forked
    assert (
        log_path(warm_home)
        .read_text()
        .splitlines()[-1]
        .split(" ", 1)[1]
        .startswith("bad request: ")
    )
    assert runner_pid(warm_home) is not None
    assert cli(warm_home, "generate", "--help").returncode == 0  # and it still serves
    assert "served generate" in served(warm_home)[-1]


def test_the_stamp_follows_the_code(tmp_path: Path) -> None:
    for package in ("streamnotary", "flows", "tasks", "storage"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    first = code_stamp(tmp_path)
    assert code_stamp(tmp_path) == first
    (tmp_path / "tasks" / "window.py").write_text("X = 1\n")
    second = code_stamp(tmp_path)
    assert second != first
    (tmp_path / "tasks" / "window.py").write_text("X = 2\n")  # same size, new mtime
    os.utime(tmp_path / "tasks" / "window.py", ns=(1, 1))
    assert code_stamp(tmp_path) not in (first, second)


def test_only_the_owner_may_hand_over_commands(warm_home: Path) -> None:
    sock = socket_path(warm_home)
    assert sock.stat().st_mode & 0o777 == 0o600
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    if os.getuid() != 0:
        return  # another uid to try with needs root; the modes above are the first guard
    # The second guard, SO_PEERCRED: even through an opened-up socket, another uid is refused.
    # (A hard link in /tmp, since the test's own directories are not searchable by others.)
    opened = Path("/tmp") / f"sn-warm-{os.getpid()}.sock"
    os.link(sock, opened)
    opened.chmod(0o666)
    try:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # another user tries to hand over a command
            os.close(read)
            answer = b"?"
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(str(opened))
                socket.send_fds(s, [b"\0\0\0\2{}"], [0, 1, 2])
                answer = b"eof" if s.recv(100) == b"" else b"answered"
            except (BrokenPipeError, ConnectionResetError):
                answer = b"eof"  # closed on us before or while we sent
            except OSError as exc:
                answer = f"error {exc}".encode()
            os.write(write, answer)
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        answer = os.read(read, 200)
        os.close(read)
    finally:
        opened.unlink()
        sock.chmod(0o600)
    assert answer == b"eof", answer
    assert "refused a client of uid 65534" in log_path(warm_home).read_text()
