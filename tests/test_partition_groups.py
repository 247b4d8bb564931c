"""Partition groups: each group anchors its partitions into its own log under its own lease.

On the real services (noida-db with four partitions, SeaweedFS, the local ledger, real
`streamnotary` processes): two groups hold their leases and anchor at the same time;
each group's log, cursor and heads are under its own keys and cover only its partitions;
`anchor` without `--group` runs every group; no group configured keeps today's keys.
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
from confluent_kafka import Producer

from storage import layout
from storage.lease import read_lease
from storage.tlog import LogReader, checkpoint_key
from tasks.groups import (
    GroupConfigError,
    LogScope,
    assignment_problems,
    group_name,
    parse_groups,
)
from tasks.record import canonical_bytes
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

HARNESS = pytest.mark.usefixtures("prefect_harness")
GROUPS = [[0, 1], [2, 3]]
A, B = group_name(GROUPS[0]), group_name(GROUPS[1])  # "p0_1", "p2_3"


# -- pure -----------------------------------------------------------------------------


def test_the_scope_without_a_group_gives_todays_keys() -> None:
    topic = LogScope("dwd.x")
    assert topic.name == "dwd.x"
    assert layout.cursor_key(topic.name) == "state/dwd.x/cursor.json"
    assert layout.head_entry_key(topic.name, 7) == "head/dwd.x/7"
    group = LogScope("dwd.x", "p0_1")
    assert layout.cursor_key(group.name) == "state/dwd.x/p0_1/cursor.json"
    assert layout.lease_key(group.name) == "state/dwd.x/p0_1/lease.json"
    assert checkpoint_key(group.name) == "log/dwd.x/p0_1/checkpoint"
    assert layout.head_entry_key(group.name, 7) == "head/dwd.x/p0_1/7"
    assert layout.is_pack_key("dwd.x", layout.pack_key(group.name, 3))
    assert layout.is_pack_key("dwd.x", layout.pack_key("dwd.x", 3))
    assert not layout.is_pack_key("dwd.x", "packs/dwd.x/../run-0000000003.pack")


def test_group_settings_are_checked() -> None:
    assert parse_groups("[[1, 0], [2]]") == [[0, 1], [2]]
    assert parse_groups("") == []
    for bad in ("[[0, 1], [1]]", "[[]]", "[[0, -1]]", "[0, 1]", "[[0, 0]]"):
        with pytest.raises(GroupConfigError):
            parse_groups(bad)


def test_an_assignment_must_cover_each_partition_once() -> None:
    assert assignment_problems({A: [0, 1], B: [2, 3]}, range(4)) == []
    assert any("in no group" in p for p in assignment_problems({A: [0, 1]}, range(4)))
    two = assignment_problems({A: [0, 1], "p1_2_3": [1, 2, 3]}, range(4))
    assert any("claimed by groups" in p for p in two)
    assert any("does not name" in p for p in assignment_problems({"p9": [0, 1, 2, 3]}, range(4)))


# -- on the real services -------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def grouped(env: PipelineEnv, groups: list[list[int]] = GROUPS) -> dict[str, str]:
    return {**env.env, "STREAMNOTARY_PARTITION_GROUPS": json.dumps(groups)}


def produce_to(env: PipelineEnv, placement: dict[int, list[Any]], partitions: int = 4) -> None:
    """Observations into chosen partitions (the default partitioner would pick by key)."""
    from storage.kafka import KafkaLog

    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        log.ensure_topic(partitions)
    producer = Producer({"bootstrap.servers": env.kafka_bootstrap, "enable.idempotence": True})
    for partition, observations in placement.items():
        for o in observations:
            producer.produce(
                env.topic,
                canonical_bytes(o),
                o.station_id.encode(),
                partition=partition,
                timestamp=int(o.observed_at.timestamp() * 1000),
            )
    assert producer.flush(60) == 0


def by_station(days: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for o in demo_observations(days=days):
        out.setdefault(o.station_id, []).append(o)
    return out


def two_groups_of_data(env: PipelineEnv, days: int = 3) -> tuple[str, str]:
    """One demo station in partition 0 (group A), the other in partition 2 (group B)."""
    first, second = sorted(by_station(days).items())
    produce_to(env, {0: first[1], 2: second[1]})
    return first[0], second[0]


def run_cli(env: PipelineEnv, extra: dict[str, str], *args: str, pause: Path | None = None):
    from prefect.settings import PREFECT_API_URL

    child = {**os.environ, **extra, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child.pop("STREAMNOTARY_KILL_AT", None)
    if pause is not None:
        child |= {"STREAMNOTARY_PAUSE_AT": "after_plan", "STREAMNOTARY_PAUSE_FILE": str(pause)}
    return subprocess.Popen(
        [sys.executable, "-m", "streamnotary.cli", *args],
        env=child,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_entries(env: PipelineEnv, scope: str) -> list[dict[str, Any]]:
    reader = LogReader(env.store(), scope)
    head = reader.checkpoint()
    assert head is not None, f"no log at {scope}"
    return list(reader.entries(0, head.size))


def partitions_in(entries: list[dict[str, Any]]) -> set[int]:
    out: set[int] = set()
    for e in entries:
        out |= {int(p) for p in (e.get("read") or e.get("ranges") or {})}
    return out


@HARNESS
def test_two_groups_anchor_at_the_same_time(env: PipelineEnv, tmp_path: Path) -> None:
    station_a, station_b = two_groups_of_data(env)
    extra = grouped(env)
    pauses = {g: tmp_path / f"release-{g}" for g in (A, B)}
    runs = {
        g: run_cli(env, extra, "anchor", "--drain", "--json", "--group", g, pause=pauses[g])
        for g in (A, B)
    }
    try:
        deadline = time.monotonic() + 180
        while not all(Path(f"{p}.reached").exists() for p in pauses.values()):
            for g, r in runs.items():
                assert r.poll() is None, (g, r.communicate()[1][-3000:])
            assert time.monotonic() < deadline, "both groups never reached their plans"
            time.sleep(0.05)
        # Both runs are past their plan at the same moment, each under its own lease.
        store = env.store()
        for g, r in runs.items():
            held = read_lease(store, LogScope(env.topic, g).name)
            assert held is not None and held.holder.pid == r.pid
        assert read_lease(store, env.topic) is None
    finally:
        for p in pauses.values():
            p.touch()
    outputs = {g: r.communicate(timeout=300) for g, r in runs.items()}
    for g, r in runs.items():
        assert r.returncode == 0, (g, outputs[g][1][-3000:])

    store = env.store()
    assert store.head(checkpoint_key(env.topic)) is None  # no topic-wide log
    for g, station, parts in ((A, station_a, {0, 1}), (B, station_b, {2, 3})):
        scope = LogScope(env.topic, g).name
        entries = log_entries(env, scope)
        windows = [e for e in entries if e["type"] == "window"]
        assert windows and all(e["window_id"].startswith(f"{station}_") for e in windows)
        assert partitions_in(entries) <= parts
        assert store.head(layout.cursor_key(scope)) is not None
        assert store.list(f"log/{scope}/anchors/")
        summary = json.loads(outputs[g][0])
        assert summary["log"]["ledger_key"].startswith(f"head/{scope}/")
        assert summary["log"]["origin"] == f"streamnotary/{scope}"


@HARNESS
def test_anchor_without_group_runs_every_group(env: PipelineEnv) -> None:
    two_groups_of_data(env, days=2)
    done = run_cli(env, grouped(env), "anchor", "--drain", "--json")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    summaries = json.loads(out)["groups"]
    assert set(summaries) == {A, B}
    for g in (A, B):
        assert summaries[g]["new_anchors"] > 0
        assert log_entries(env, LogScope(env.topic, g).name)


@HARNESS
def test_an_unknown_group_is_refused_before_any_write(env: PipelineEnv) -> None:
    two_groups_of_data(env, days=1)
    bad = run_cli(env, grouped(env), "anchor", "--drain", "--group", "p0")
    _, err = bad.communicate(timeout=300)
    assert bad.returncode != 0 and "no partition group 'p0'" in err
    assert list(env.store().list("state/")) == []
