"""One writer per topic: the lease in the bucket and the compare-and-swap cursor.

Drills on the real services (noida-db, SeaweedFS, real `streamnotary` processes): a second
run while the first holds the topic exits naming the holder; an expired or dead holder's
lease is taken over exactly once; renewal keeps a long run's lease; the cursor is never
rolled back and not rewritten when nothing changed; backfill goes through the lease too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.backfill import backfill
from storage import layout
from storage.lease import Holder, LeaseHeld, LeaseLost, TopicLease, read_lease
from storage.objectstore import ObjectStore, S3ObjectStore
from streamnotary.commands.pipeline import EXIT_TOPIC_BUSY
from tasks import steps
from tasks.planner import Cursor, CursorConflict
from tests.pipeline_env import PipelineEnv, demo_observations, make_env, wait_for
from tests.test_schemas import small_dwd_file

HARNESS = pytest.mark.usefixtures("prefect_harness")

ELSEWHERE = Holder("another-host.example", 4242, "run-elsewhere")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def start_cli(env: PipelineEnv, *args: str, pause_file: Path) -> subprocess.Popen[str]:
    """`streamnotary <args>` as a real process that pauses after writing its plan."""
    from prefect.settings import PREFECT_API_URL

    child = {
        **os.environ,
        **env.env,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "STREAMNOTARY_PAUSE_AT": "after_plan",
        "STREAMNOTARY_PAUSE_FILE": str(pause_file),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "streamnotary.cli", *args],
        env=child,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@HARNESS
def test_a_second_process_exits_naming_the_holder(env: PipelineEnv, tmp_path: Path) -> None:
    env.produce_observations(demo_observations(days=3))
    pause = tmp_path / "release-first"
    first = start_cli(env, "anchor", "--drain", "--json", pause_file=pause)
    try:
        wait_for(lambda: Path(f"{pause}.reached").exists() or first.poll() is not None, "plan")
        assert first.poll() is None, first.communicate()[1][-2000:]
        held = read_lease(env.store(), env.topic)
        assert held is not None and held.holder.pid == first.pid

        second = env.run_cli("anchor", "--drain", "--json")
        assert second.returncode == EXIT_TOPIC_BUSY, second.stderr[-2000:]
        message = second.stderr.strip().splitlines()[-1]
        assert f"pid {first.pid} on " in message and "is being written by run" in message
        assert second.stdout == ""
    finally:
        pause.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out)["new_anchors"] > 0
    store = env.store()
    assert store.head(layout.lease_key(env.topic)) is None  # released at the end
    assert store.head(layout.pending_key(env.topic)) is None
    third = env.run_cli("anchor", "--drain", "--json")
    assert third.returncode == 0 and json.loads(third.stdout)["new_anchors"] == 0


@HARNESS
def test_backfill_and_in_process_runs_go_through_the_lease(
    env: PipelineEnv, tmp_path: Path
) -> None:
    source = small_dwd_file(tmp_path, "00433", days=3)
    with env.active():
        store = env.store()
        foreign = TopicLease(store, env.topic, seconds=60, holder=ELSEWHERE)
        foreign.acquire()
        try:
            with pytest.raises(LeaseHeld, match="run-elsewhere"):
                anchor_windows(drain=True)
            with pytest.raises(LeaseHeld, match=r"another-host\.example"):
                backfill(sources=[str(source)])
            assert store.head(layout.cursor_key(env.topic)) is None  # nothing was written
            assert not list(store.list(f"checkpoints/{env.topic}/"))
            assert not list(store.list(layout.packs_prefix(env.topic)))
        finally:
            foreign.release()
        summary = backfill(sources=[str(source)])
        assert summary["anchored"]["new_anchors"] > 0


@HARNESS
def test_state_writes_outside_the_lease_are_refused(env: PipelineEnv) -> None:
    with env.active() as settings:
        cursor = Cursor.empty(settings.topic, settings.window_seconds)
        successor = Cursor(settings.topic, settings.window_seconds, runs=1)
        assert cursor.runs == 0
        with pytest.raises(LeaseLost, match="no lease held"):
            steps.advance_cursor.fn(settings, successor.to_json())
        assert env.store().head(layout.cursor_key(env.topic)) is None


def test_an_expired_lease_is_taken_over_once_and_the_old_holder_stops(
    s3_store: S3ObjectStore,
) -> None:
    old = TopicLease(s3_store, "t", seconds=5, holder=ELSEWHERE)
    old.acquire()
    contender = TopicLease(s3_store, "t", seconds=60)
    with pytest.raises(LeaseHeld, match="run-elsewhere"):
        contender.acquire()
    wait_for(lambda: _expired(s3_store), "lease expiry", timeout_s=10)
    a = TopicLease(s3_store, "t", seconds=60, holder=Holder("host-a", 1, "run-a"))
    b = TopicLease(s3_store, "t", seconds=60, holder=Holder("host-b", 2, "run-b"))
    a.acquire()
    with pytest.raises(LeaseHeld, match="run-a"):
        b.acquire()  # saw the same expired lease? no: a took it, b sees a's live lease
    with pytest.raises(LeaseLost):
        old.check()
    with pytest.raises(LeaseLost):
        old.renew()
    old.release()  # must not delete a's lease
    current = read_lease(s3_store, "t")
    assert current is not None and current.holder.run_id == "run-a"
    a.release()
    assert read_lease(s3_store, "t") is None


def _expired(store: ObjectStore) -> bool:
    from datetime import UTC, datetime

    doc = read_lease(store, "t")
    return doc is None or doc.expires_at <= datetime.now(UTC)


def test_renewal_keeps_a_long_run_s_lease(s3_store: S3ObjectStore) -> None:
    with TopicLease(s3_store, "t", seconds=3, holder=ELSEWHERE) as lease:
        first = read_lease(s3_store, "t")
        assert first is not None
        wait_for(
            lambda: (
                (doc := read_lease(s3_store, "t")) is not None
                and doc.expires_at > first.expires_at + _seconds(2)
            ),
            "two renewals",
            timeout_s=15,
        )
        lease.check()  # still ours, past the original expiry
        with pytest.raises(LeaseHeld):
            TopicLease(s3_store, "t", seconds=3).acquire()
    assert read_lease(s3_store, "t") is None


def _seconds(n: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


@HARNESS
def test_a_killed_run_s_lease_is_taken_over_by_the_next_run(env: PipelineEnv) -> None:
    env.produce_observations(demo_observations(days=2))
    killed = env.run_cli("anchor", "--drain", kill_at="after_plan")
    assert killed.returncode < 0
    stale = read_lease(env.store(), env.topic)
    assert stale is not None and stale.expires_at.timestamp() > time.time()  # not expired
    rerun = env.run_cli("anchor", "--drain", "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["resumed_plan"] is True


@HARNESS
def test_the_cursor_is_never_rolled_back(env: PipelineEnv) -> None:
    env.produce_observations(demo_observations(days=3))
    with env.active() as settings:
        anchor_windows(drain=True)
        store = env.store()
        stored = Cursor.from_json(json.loads(store.get(layout.cursor_key(env.topic))))
        stale = Cursor(settings.topic, settings.window_seconds, runs=stored.runs)  # from run n-1
        with TopicLease(store, env.topic, seconds=30), pytest.raises(CursorConflict):
            steps.advance_cursor.fn(settings, stale.to_json())
        assert Cursor.from_json(json.loads(store.get(layout.cursor_key(env.topic)))) == stored


@HARNESS
def test_the_cursor_is_not_written_when_nothing_changed(env: PipelineEnv) -> None:
    store = env.store()
    assert isinstance(store, S3ObjectStore)
    store.client.put_bucket_versioning(  # every write of the cursor leaves a version
        Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    key = layout.cursor_key(env.topic)

    def cursor_versions() -> int:
        listing = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)
        return len(listing.get("Versions", []))

    env.produce_observations(demo_observations(days=3))
    with env.active() as settings:
        anchor_windows(drain=True)
        assert cursor_versions() == 1
        stored = store.get(key)
        assert anchor_windows(drain=True)["new_anchors"] == 0
        with TopicLease(store, env.topic, seconds=30):  # a retried advance of the same cursor
            steps.advance_cursor.fn(settings, json.loads(stored))
    assert cursor_versions() == 1 and store.get(key) == stored
