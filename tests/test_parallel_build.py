"""Window building on a real `distributed` cluster (flows/window_build.py) is byte-identical.

Real Dask workers (separate processes), real broker, SeaweedFS, local ledger and Prefect (the
session harness). A backfill whose windows are built by 2 Dask workers anchors the same
window roots, payloads, checkpoints and anchor log as a backfill built in-process.
"""

from __future__ import annotations

import json
import os
import socket
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dask
import distributed
import pytest
from prefect import flow

from flows import window_build
from flows.backfill import backfill
from storage.logkey import load_signer, log_origin
from storage.tlog import LogReader
from streamnotary.commands.generate import write_history
from streamnotary.commands.pipeline import expand_sources
from streamnotary.config import Settings
from tasks import merkle, payload_process, stage_timing, window_jobs
from tasks.canonical import canonical_digest
from tasks.message import SourceMessage, classify
from tasks.record import canonical_bytes
from tasks.synth import SynthOptions
from tasks.tlog.entries import entry_bytes
from tasks.window import WindowSpec
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(600)]

# 3 stations x 30 days: 90 daily windows (> MIN_PARALLEL_WINDOWS), with the generator's
# duplicates, conflicting re-publications, gaps and late rows.
HISTORY = SynthOptions(seed=10, stations=3, start=date(2021, 3, 1), days=30, republish_days=5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """A Dask cluster of 2 worker processes, as an operator runs one (`dask scheduler`)."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        preload=["flows.window_build"],  # as docs/operations.md tells `dask worker`
    ) as c:
        yield c


def executed(cluster: distributed.LocalCluster) -> int:
    """Tasks the cluster's workers have run so far."""
    with distributed.Client(cluster, set_as_default=False) as client:
        counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
    return sum(counts.values())


def classified_windows(hours: int) -> list[tuple[Any, list[Any]]]:
    """The demo observations as Kafka messages in hourly windows, with a duplicate and a
    malformed message mixed in (dedup and rejections are part of a window's content)."""
    spec = WindowSpec(3600)
    observations = demo_observations(days=hours // 24)
    messages = [
        SourceMessage("t", i % 3, i, o.station_id.encode(), canonical_bytes(o), None)
        for i, o in enumerate(observations)
    ]
    first = observations[0]
    n = len(messages)
    messages += [
        SourceMessage("t", 0, n, first.station_id.encode(), canonical_bytes(first), None),
        SourceMessage(
            "t",
            1,
            n + 1,
            first.station_id.encode(),
            canonical_bytes(first).replace(b'"quality_level":', b'"quality_level":9,"x":'),
            int(first.observed_at.timestamp() * 1000),
        ),
    ]
    groups: dict[Any, list[Any]] = defaultdict(list)
    for m in messages:
        c = classify(m, spec)
        groups[c.window].append(c)
    return sorted((k, v) for k, v in groups.items() if k is not None)


def test_two_dask_workers_build_exactly_what_one_process_builds() -> None:
    windows = classified_windows(hours=24 * 4)
    assert len(windows) >= window_build.MIN_PARALLEL_WINDOWS
    assert any(c.rejected for _, items in windows for c in items)
    jobs = [window_build.WindowJob(k, items, "drain") for k, items in windows]

    @flow
    def plan(**options: Any) -> tuple[list[Any], dict[str, Any]]:
        clock = stage_timing.start_run()
        settings = Settings(topic="t", window_seconds=3600, **options)
        revisions = window_build.plan_revisions(settings, jobs, lambda k: f"s3://b/{k}")
        return revisions, clock.report()

    try:
        serial, serial_timing = plan()
        parallel, parallel_timing = plan(workers=2)  # a LocalCluster started by the code
        cluster = window_build.local_cluster(2)
        assert len(cluster.workers) == 2
        assert executed(cluster) >= 2  # the chunks ran on the cluster's worker processes
    finally:
        window_build.close_local_clusters()

    assert [r.payload for r in parallel] == [r.payload for r in serial]
    assert [r.checkpoint for r in parallel] == [r.checkpoint for r in serial]
    assert [r.digest for r in parallel] == [r.digest for r in serial]
    assert [r.ranges for r in parallel] == [r.ranges for r in serial]
    assert [r.checkpoint_bytes for r in parallel] == [r.checkpoint_bytes for r in serial]
    # the workers' window and Parquet time is reported in the run's stages
    assert parallel_timing["stages"]["window"] > 0 and parallel_timing["stages"]["parquet"] > 0
    assert serial_timing["stages"]["parquet"] > 0


def test_an_unreachable_scheduler_is_a_named_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused_tcp_port = s.getsockname()[1]
    jobs = [window_build.WindowJob(k, v, "drain") for k, v in classified_windows(hours=24 * 3)]
    settings = Settings(topic="t", dask_scheduler_address=f"tcp://127.0.0.1:{unused_tcp_port}")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(window_build.ParallelError, match="dask_scheduler_address"),
    ):
        window_build.plan_revisions(settings, jobs, lambda k: k)


def test_workers_below_one_is_a_named_error() -> None:
    with pytest.raises(window_build.ParallelError, match="at least 1"):
        window_build.parallel(Settings(workers=0))


def run_backfill(env: PipelineEnv, history: Path, **settings: str) -> dict[str, Any]:
    settings = {"ingest_roots": str(history), **settings}
    env_vars = {f"STREAMNOTARY_{k.upper()}": v for k, v in settings.items()}
    saved = {k: os.environ.get(k) for k in env_vars}
    try:
        with env.active():
            os.environ.update(env_vars)
            return backfill(sources=expand_sources([str(history)]))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_task_runs(since: datetime) -> int:
    """`build-windows` task runs (chunks built on Dask) that the Prefect API recorded."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterStartTime,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="build-windows"),
                start_time=TaskRunFilterStartTime(after_=since),
            )
        )
    return sum(r.state is not None and r.state.is_completed() for r in runs)


def anchored(env: PipelineEnv) -> dict[str, Any]:
    """Checkpoints, payload digests and the anchor log of `env`, each checkpoint and log
    entry also in the form it would have on topic and bucket `neutral` (a checkpoint names
    both; log entries name the topic and the run's wall-clock time)."""
    settings = env.settings()
    store = env.store()
    checkpoints = env.checkpoints()
    verifier = load_signer(settings, create=False).named(log_origin(settings)).verifier()
    reader = LogReader(store, env.topic, verifier, log_origin(settings))
    head = reader.checkpoint()
    assert head is not None
    entries = list(reader.entries(0, head.size))
    assert head.root == merkle.merkle_root([entry_bytes(e) for e in entries])
    return {"checkpoints": checkpoints, "entries": entries, "head": head}


def neutral(doc: Any, env: PipelineEnv) -> Any:
    text = json.dumps(doc).replace(env.bucket, "BUCKET").replace(env.topic, "TOPIC")
    return json.loads(text)


def test_a_backfill_on_two_dask_workers_anchors_what_one_worker_anchors(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, cluster: distributed.LocalCluster
) -> None:
    history = tmp_path / "history"
    write_history(HISTORY, history)
    one = make_env(tmp_path / "one", kafka_bootstrap, s3_server)
    two = make_env(tmp_path / "two", kafka_bootstrap, s3_server)

    first = run_backfill(one, history)
    # the same backfill with its windows built on the 2 workers of a running Dask cluster
    started = datetime.now(UTC)
    before = executed(cluster)
    second = run_backfill(two, history, dask_scheduler_address=cluster.scheduler_address)
    assert executed(cluster) >= before + 2  # the chunks ran on the cluster's workers
    assert build_task_runs(since=started) >= 2  # each chunk a Prefect task run

    assert first["anchored"]["new_anchors"] == second["anchored"]["new_anchors"] >= 90
    assert_same_anchors(one, two)


def test_a_backfill_with_payload_helpers_anchors_what_one_process_anchors(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default configuration's helper processes (setting `payload_processes`), here for
    every run however small: same payloads, checkpoints and log as encoding in-process."""
    history = tmp_path / "history"
    write_history(HISTORY, history)
    one = make_env(tmp_path / "one", kafka_bootstrap, s3_server)
    two = make_env(tmp_path / "two", kafka_bootstrap, s3_server)
    first = run_backfill(one, history, payload_processes="0")
    monkeypatch.setattr(window_build, "MIN_PAYLOAD_PROCESS_WINDOWS", 1)
    monkeypatch.setattr(window_jobs, "OVERLAP_WINDOWS", 16)
    submitted: list[int] = []
    submit = payload_process.PayloadEncoder.submit

    def counted(self: payload_process.PayloadEncoder, windows: Any) -> Any:
        submitted.append(len(windows))
        return submit(self, windows)

    monkeypatch.setattr(payload_process.PayloadEncoder, "submit", counted)
    second = run_backfill(two, history, payload_processes="2")
    assert len(submitted) >= 2 and sum(submitted) >= 90  # the helpers encoded the payloads
    assert payload_process.payload_encoder(2).pids()
    assert first["anchored"]["new_anchors"] == second["anchored"]["new_anchors"] >= 90
    assert_same_anchors(one, two)


def assert_same_anchors(one: PipelineEnv, two: PipelineEnv) -> None:
    """The same windows, roots, payloads, checkpoints and anchor log in both environments
    (but for the topic, bucket and times they name)."""
    a, b = anchored(one), anchored(two)
    roots = {k: cp["merkle"]["root"] for k, cp in a["checkpoints"].items()}
    assert len(roots) >= 90
    assert roots == {k: cp["merkle"]["root"] for k, cp in b["checkpoints"].items()}
    assert a["checkpoints"].keys() == b["checkpoints"].keys()
    for key, cp in a["checkpoints"].items():
        other = b["checkpoints"][key]
        assert other["payload"]["sha256"] == cp["payload"]["sha256"]
        assert other["merkle"] == cp["merkle"]
        # the same checkpoint document but for the topic and bucket it names
        assert neutral(other, two) == neutral(cp, one)
    assert len(a["entries"]) == len(b["entries"])

    # The same anchor log: B's entries, with A's topic, timestamps and digests where they
    # name B's topic, are byte for byte A's entries, so they hash to A's signed log root.
    digests = {
        canonical_digest(b["checkpoints"][k]): canonical_digest(cp)
        for k, cp in a["checkpoints"].items()
    }
    rewritten = []
    for ea, eb in zip(a["entries"], b["entries"], strict=True):
        eb = neutral(eb, two)
        for field in ("anchored_at", "closed_at", "cursor_digest"):
            if field in ea:
                eb[field] = ea[field]
        if "checkpoint_digest" in eb:
            eb["checkpoint_digest"] = digests[eb["checkpoint_digest"]]
        eb = json.loads(json.dumps(eb).replace("TOPIC", one.topic))
        rewritten.append(eb)
    assert rewritten == a["entries"]
    assert merkle.merkle_root([entry_bytes(e) for e in rewritten]) == a["head"].root
    assert a["head"].size == b["head"].size
