"""Durability of the local store: every new directory entry is fsynced into its directory.

fsync(2) on a file does not make its *name* durable; the directory holding the new entry
(after link, rename, unlink, mkdir) must be fsynced too, or a power cut can lose an
object whose bytes were synced. These tests run real store operations in a child process
under strace(1) and check, from the system calls the kernel actually saw, that each
link/rename/unlink/mkdir is followed by an fsync of the directory it changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from storage.localstore import LocalObjectStore
store = LocalObjectStore(sys.argv[1])
store.put_once("payloads/t/00433/w/r0000.parquet", b"payload")
tag = store.put_if("state/t/cursor.json", b"gen-1", None)
store.put_if("state/t/cursor.json", b"gen-2", tag)
store.put_once("state/t/pending.json", b"plan")
store.delete("state/t/pending.json")
"""

_CALL = re.compile(r"^\d+\s+(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)")
_PATH = re.compile(r'"([^"]+)"')
_FD_PATH = re.compile(r"^\d+<([^>]+)>")


def traced_calls(root: Path) -> list[tuple[str, list[str]]]:
    """(syscall, paths) of the child's successful namespace changes and fsyncs, in order."""
    trace = root.parent / "strace.txt"
    subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-o",
            str(trace),
            "-e",
            "trace=fsync,link,linkat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat",
            sys.executable,
            "-c",
            SCRIPT,
            str(root),
        ],
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    calls = []
    for line in trace.read_text().splitlines():
        m = _CALL.match(line)
        if m is None or m["ret"] != "0":
            continue
        if m["name"] == "fsync":
            fd = _FD_PATH.match(m["args"])
            calls.append(("fsync", [fd.group(1)] if fd else []))
        else:
            calls.append((m["name"], _PATH.findall(m["args"])))
    return calls


@pytest.mark.parametrize("relpath", ["payloads/t/00433/w/r0000.parquet", "state/t/cursor.json"])
def test_every_entry_change_is_followed_by_a_directory_fsync(tmp_path: Path, relpath: str) -> None:
    root = tmp_path / "objects"
    root.mkdir()
    calls = traced_calls(root)
    target = str(root / relpath)
    changes = [
        (i, name, paths)
        for i, (name, paths) in enumerate(calls)
        if name != "fsync" and any(p.startswith(str(root)) for p in paths)
    ]
    assert any(target in paths for _, _, paths in changes), calls
    for i, name, paths in changes:
        changed = Path(paths[-1])  # the new name (link/rename target) or the path itself
        later_fsyncs = {p for n, ps in calls[i + 1 :] if n == "fsync" for p in ps}
        assert str(changed.parent) in later_fsyncs, f"{name}{paths}: directory not fsynced"


def test_removing_the_plan_is_durable(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    root.mkdir()
    calls = traced_calls(root)
    plan = str(root / "state/t/pending.json")
    unlinks = [i for i, (n, ps) in enumerate(calls) if n.startswith("unlink") and plan in ps]
    assert unlinks, calls
    after = {p for n, ps in calls[unlinks[-1] + 1 :] if n == "fsync" for p in ps}
    assert str(root / "state/t") in after
