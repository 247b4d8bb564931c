"""The process-wide I/O pool (`storage.io_pool`): batches reuse its threads, keep their own
bound, leave nothing running when they fail, and a forked child gets a pool of its own."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage.io_pool import POOL_THREADS, map_bounded
from storage.objectstore import LocalObjectStore, ObjectStore, ObjectStoreUnavailable
from storage.store_base import PutOutcome, put_all_once
from storage.tlog import StoreTiles

ROOT = Path(__file__).resolve().parent.parent


class Watched:
    """A real store whose calls note the thread they ran on and how many run at once."""

    def __init__(self, store: ObjectStore, fail_key: str | None = None) -> None:
        self.store, self.fail_key = store, fail_key
        self.threads: set[str] = set()
        self.started: list[str] = []
        self.running = self.most = 0
        self._lock = threading.Lock()

    def _enter(self, key: str) -> None:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.started.append(key)
            self.running += 1
            self.most = max(self.most, self.running)

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1

    def put_once(self, key: str, data: bytes, content_type: str) -> PutOutcome:
        self._enter(key)
        try:
            time.sleep(0.005)  # a round trip, so that the calls overlap
            if key == self.fail_key:
                raise ObjectStoreUnavailable(f"drill: {key} refused")
            return self.store.put_once(key, data, content_type)
        finally:
            self._leave()

    def get(self, key: str) -> bytes:
        self._enter(key)
        try:
            return self.store.get(key)
        finally:
            self._leave()


def test_write_batches_and_log_prefetches_reuse_the_pools_threads(s3_store: ObjectStore) -> None:
    """Twenty write batches and twenty prefetches on the real S3 server run on at most the
    pool's threads; a pool per batch (the old code) starts new threads each time, whose
    start waits on the GIL (docs/benchmarks.md, "Session 21")."""
    watched = Watched(s3_store)
    for batch in range(20):
        objects = [(f"log/t/tile/0/{batch:03d}/{i:03d}", b"x%d" % i) for i in range(40)]
        assert put_all_once(watched, objects, lambda _key: "application/octet-stream") == 40  # type: ignore[arg-type]
        tiles = StoreTiles(watched, "t")  # type: ignore[arg-type]
        tiles.prefetch([key.removeprefix("log/t/") for key, _ in objects])
        assert len(tiles._fetched) == 40
    workers = watched.threads - {threading.main_thread().name}
    assert workers, "the batches ran on no worker thread"
    assert all(name.startswith("io_") for name in workers), sorted(workers)[:5]
    assert len(workers) <= POOL_THREADS


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_a_batch_keeps_its_own_bound_and_returns_every_result(limit: int) -> None:
    running = most = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return i * i

    assert sorted(map_bounded(work, range(50), limit)) == [i * i for i in range(50)]
    assert 1 <= most <= limit
    if limit > 1:
        assert most > 1, "the calls never overlapped"


def test_a_failed_batch_stops_starting_and_leaves_nothing_running(tmp_path: Path) -> None:
    """The first failure is raised only after the puts in flight have finished, and no
    further put is started: a caller may publish what commits to these objects only after
    put_all_once returns, and a retry must not race the puts of the failed attempt."""
    objects = [(f"payloads/{i:03d}", b"p%d" % i) for i in range(200)]
    watched = Watched(LocalObjectStore(tmp_path / "objects"), fail_key="payloads/010")
    with pytest.raises(ObjectStoreUnavailable, match="payloads/010"):
        put_all_once(watched, objects, lambda _key: "application/octet-stream", concurrency=4)  # type: ignore[arg-type]
    assert watched.running == 0
    assert 1 < watched.most <= 4
    assert len(watched.started) < 30, len(watched.started)  # not the 200 of the batch


def test_a_forked_child_gets_its_own_pool() -> None:
    """The warm runner forks its anchor runs (streamnotary/warm.py): a child that inherited
    the parent's pool object without its threads would wait forever on its first batch."""
    script = (
        "import os, signal\n"
        "from storage.io_pool import map_bounded\n"
        "assert sorted(map_bounded(abs, [-1, -2, -3], 2)) == [1, 2, 3]\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.alarm(20)\n"
        "    ok = list(map_bounded(abs, [-5], 1)) == [5]\n"  # parent's idle threads: none here
        "    ok = ok and sorted(map_bounded(abs, range(-40, 0), 8)) == list(range(1, 41))\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
