"""Backfill: the ingest phase under the topic lease, and a Kafka topic range as a source.

Real broker, SeaweedFS, local ledger and Prefect (the session harness), `streamnotary` as
processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage import layout
from storage.kafka import KafkaLog
from storage.lease import read_lease
from streamnotary.commands.generate import write_history
from streamnotary.commands.pipeline import EXIT_TOPIC_BUSY
from tasks.record import Observation
from tasks.synth import SynthOptions, station_ids, station_releases
from tests.pipeline_env import PipelineEnv, make_env, wait_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = date(2020, 5, 1)
SYNTH = SynthOptions(seed=7, stations=3, start=START, days=3, republish_days=0)


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def rows_of(station: int) -> list[Observation]:
    return [o for _, rows, _ in station_releases(SYNTH, station) for o in rows]


def test_a_second_run_exits_75_naming_the_backfill_while_it_ingests(
    env: PipelineEnv, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    write_history(SYNTH, tmp_path / "history")
    pause = tmp_path / "release-backfill"
    child = {
        **os.environ,
        **env.env,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "STREAMNOTARY_PAUSE_AT": "mid_ingest",  # half of the first source produced
        "STREAMNOTARY_PAUSE_FILE": str(pause),
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "streamnotary.cli", "backfill", "--json", str(tmp_path / "history")],
        env=child,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: Path(f"{pause}.reached").exists() or first.poll() is not None,
            "the backfill to reach mid_ingest",
            timeout_s=180,
        )
        assert first.poll() is None, first.communicate()[1][-2000:]
        held = read_lease(env.store(), env.topic)
        assert held is not None and held.holder.pid == first.pid
        assert held.purpose == "backfill-ingest"
        for args in (("anchor", "--drain", "--json"), ("backfill", str(tmp_path / "history"))):
            second = env.run_cli(*args)
            assert second.returncode == EXIT_TOPIC_BUSY, (args, second.stderr[-2000:])
            message = second.stderr.strip().splitlines()[-1]
            assert f"pid {first.pid} on " in message and "backfill-ingest" in message, message
        # nothing anchored while the backfill ingests
        assert env.store().head(layout.cursor_key(env.topic)) is None
    finally:
        pause.touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out)["new_anchors"] == SYNTH.stations * SYNTH.days
    assert env.store().head(layout.lease_key(env.topic)) is None


def test_a_topic_range_is_recomputed_skipped_conflicting_or_anchored(env: PipelineEnv) -> None:
    s0, s1, s2 = station_ids(SYNTH)
    # topic A (env.topic) holds and has anchored stations s0 and s1
    env.produce_observations([*rows_of(s0), *rows_of(s1)])
    first = env.run_cli("anchor", "--drain", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["new_anchors"] == 2 * SYNTH.days
    # topic B holds all three stations and one more record in a window of s1 anchored in A
    other = replace(env, topic=f"dwd.{uuid.uuid4().hex[:12]}")
    extra = Observation(
        rows_of(s1)[0].station_id, datetime(2020, 5, 2, 12, 30, tzinfo=UTC), 123, 456, 3
    )
    other.produce_observations([*rows_of(s0), *rows_of(s1), *rows_of(s2), extra])

    done = env.run_cli("backfill", "--from-topic", other.topic, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    windows = summary["backfill"]
    assert windows["recomputed"] == 3 * SYNTH.days
    assert windows["new"] == SYNTH.days  # s2, produced into A and anchored there
    assert windows["conflicts"] == 1 and windows["skipped"] == 2 * SYNTH.days - 1
    (conflict,) = windows["conflicting"]
    assert conflict["window_id"].startswith(f"{extra.station_id}_20200502")
    assert f"conflict: {conflict['window_id']}" in done.stderr
    assert summary["new_anchors"] == SYNTH.days
    assert summary["ingested_records"] == len(rows_of(s2))
    source = windows["topic_source"]
    assert source["messages_read"] == sum(len(rows_of(s)) for s in (s0, s1, s2)) + 1
    assert source["unusable"] == source["records_outside_range"] == 0

    again = env.run_cli("backfill", "--from-topic", other.topic, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["new_anchors"] == 0 and second["skipped_sources"] == 1
    assert second["backfill"]["skipped"] == 3 * SYNTH.days - 1
    assert second["backfill"]["conflicts"] == 1

    # A itself, one day by time: only windows wholly inside the range, all identical
    day = datetime(2020, 5, 2, tzinfo=UTC)
    ranged = env.run_cli(
        "backfill",
        "--from-topic",
        env.topic,
        "--since",
        day.isoformat(),
        "--until",
        (day + timedelta(days=1)).isoformat(),
        "--json",
    )
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    third = json.loads(ranged.stdout)["backfill"]
    assert third["recomputed"] == third["skipped"] == 3 and third["conflicts"] == 0
    assert json.loads(ranged.stdout)["new_anchors"] == 0

    # explicit offsets: a few messages only reach into windows read in part, not compared
    offsets = env.run_cli("backfill", "--from-topic", env.topic, "--offsets", "0:0-5", "--json")
    assert offsets.returncode == 0, offsets.stderr[-3000:]
    fourth = json.loads(offsets.stdout)["backfill"]
    assert fourth["topic_source"]["messages_read"] == 5
    assert fourth["topic_source"]["windows_partly_read"] >= 1
    assert fourth["recomputed"] == fourth["conflicts"] == 0
    # ... the whole topic by offsets: every window compared, all identical
    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        spans = ",".join(f"{p}:0-{log.watermarks(p)[1]}" for p in log.partitions())
    whole = env.run_cli("backfill", "--from-topic", env.topic, "--offsets", spans, "--json")
    assert whole.returncode == 0, whole.stderr[-3000:]
    fifth = json.loads(whole.stdout)["backfill"]
    assert fifth["recomputed"] == fifth["skipped"] == 3 * SYNTH.days
    assert fifth["topic_source"]["windows_partly_read"] == 0


def test_bad_offset_ranges_are_refused(env: PipelineEnv) -> None:
    for spec in ("0:5-1", "x", "0:1-2,0:3-4"):
        done = env.run_cli("backfill", "--from-topic", env.topic, "--offsets", spec)
        assert done.returncode == 2 and "offset range" in done.stderr, done.stderr
    done = env.run_cli("backfill", "--offsets", "0:0-1")
    assert done.returncode == 2 and "--from-topic" in done.stderr
