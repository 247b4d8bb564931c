"""A catch-up's next read, done by a helper process (storage/read_ahead.py), on the real
broker: it gives exactly what the run's own read gives, only for exactly the ranges asked,
and every way it can fail leaves the run to read for itself."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flows.catch_up import anchor_until_caught_up
from storage import read_ahead
from storage.kafka import KafkaLog, OffsetRangeUnavailable
from storage.read_ahead import ReadAhead
from streamnotary.config import Settings
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

BASE_TS = 1_700_000_000_000


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """Three partitions of 90 messages each: keys spread them, one value per message."""
    name = f"ahead.{uuid.uuid4().hex[:10]}"
    with KafkaLog(kafka_bootstrap, name) as log:
        log.ensure_topic(3)
        log.produce(
            [(f"{i % 7:05d}".encode(), f"value-{i}".encode(), BASE_TS + i) for i in range(270)]
        )
    return name


def settings_for(bootstrap: str, topic: str, **overrides: Any) -> Settings:
    return dataclasses.replace(
        Settings(topic=topic, kafka_bootstrap=bootstrap, read_page_messages=25), **overrides
    )


def whole(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    with KafkaLog(bootstrap, topic) as log:
        return {p: log.watermarks(p) for p in log.partitions()}


def own_read(settings: Settings, ranges: dict[int, tuple[int, int]]) -> list[Any]:
    with KafkaLog.from_settings(settings) as log:
        return log.read_pages(ranges, page=settings.read_page_messages, timeout_s=30)


def test_the_helper_reads_exactly_what_the_run_would(kafka_bootstrap: str, topic: str) -> None:
    settings = settings_for(kafka_bootstrap, topic)
    ranges = {p: (lo + 3, hi - 2) for p, (lo, hi) in whole(kafka_bootstrap, topic).items()}
    ahead = ReadAhead()
    try:
        ahead.start(settings, ranges)
        got = ahead.take(settings, ranges)
        assert got is not None
        assert got == own_read(settings, ranges)  # every field, in (partition, offset) order
        assert len(got) == sum(hi - lo for lo, hi in ranges.values())
        assert ahead.served(settings) == len(got)
        assert ahead.take(settings, ranges) is None  # taken once; a retry reads for itself
    finally:
        ahead.close()


def test_other_ranges_are_not_served(kafka_bootstrap: str, topic: str) -> None:
    settings = settings_for(kafka_bootstrap, topic)
    ranges = whole(kafka_bootstrap, topic)
    ahead = ReadAhead()
    try:
        ahead.start(settings, ranges)
        shorter = {p: (lo, hi - 1) for p, (lo, hi) in ranges.items()}
        assert ahead.take(settings, shorter) is None
        other_group = dataclasses.replace(settings, group="p0")
        ahead.start(settings, ranges)
        assert ahead.take(other_group, ranges) is None  # another group's run: its own
        assert ahead.take(settings, ranges) == own_read(settings, ranges)
        assert ahead.served(other_group) == 0
    finally:
        ahead.close()


def test_a_failed_read_in_the_helper_leaves_the_error_to_the_run(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(kafka_bootstrap, topic, read_timeout_seconds=5.0)
    beyond = {p: (hi - 5, hi + 5) for p, (_lo, hi) in whole(kafka_bootstrap, topic).items()}
    ahead = ReadAhead()
    try:
        ahead.start(settings, beyond)
        assert ahead.take(settings, beyond) is None
        assert "read-ahead of" in caplog.text and "OffsetRangeUnavailable" in caplog.text
        with pytest.raises(OffsetRangeUnavailable):  # what the run's own read then says
            own_read(settings, beyond)
        ranges = whole(kafka_bootstrap, topic)  # the same helper still serves
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) == own_read(settings, ranges)
    finally:
        ahead.close()


def test_a_killed_helper_costs_a_read_and_is_replaced(kafka_bootstrap: str, topic: str) -> None:
    settings = settings_for(kafka_bootstrap, topic)
    ranges = whole(kafka_bootstrap, topic)
    ahead = ReadAhead()
    try:
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) is not None
        (pid,) = ahead.pids()
        os.kill(pid, signal.SIGKILL)
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) is None  # BrokenProcessPool: read for yourself
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) == own_read(settings, ranges)
        assert ahead.pids() and ahead.pids() != [pid]
    finally:
        ahead.close()


def test_a_stuck_helper_costs_one_deadline_and_is_replaced(
    kafka_bootstrap: str, topic: str
) -> None:
    settings = settings_for(kafka_bootstrap, topic, read_timeout_seconds=1.0)
    ranges = {p: (lo, min(hi, lo + 20)) for p, (lo, hi) in whole(kafka_bootstrap, topic).items()}
    ahead = ReadAhead()
    try:
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) is not None
        (pid,) = ahead.pids()
        os.kill(pid, signal.SIGSTOP)  # stopped, swapped out, deadlocked: it never answers
        ahead.start(settings, ranges)
        began = time.monotonic()
        assert ahead.take(settings, ranges) is None
        waited = time.monotonic() - began
        assert 1.9 < waited < 10  # (3 pages + 1) x 1 s, not forever
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )  # killed, not left stopped
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) == own_read(settings, ranges)
    finally:
        ahead.close()


def test_the_helper_exits_with_the_catch_up(kafka_bootstrap: str, topic: str) -> None:
    settings = settings_for(kafka_bootstrap, topic)
    ranges = whole(kafka_bootstrap, topic)
    with read_ahead.shared_by_runs() as ahead:
        assert read_ahead.active() is ahead
        with read_ahead.shared_by_runs() as inner:  # a nested catch-up shares it
            assert inner is ahead
        ahead.start(settings, ranges)
        assert ahead.take(settings, ranges) is not None
        (pid,) = ahead.pids()
    assert read_ahead.active() is None
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_turned_off_it_reads_nothing(kafka_bootstrap: str, topic: str) -> None:
    settings = settings_for(kafka_bootstrap, topic, read_ahead=False)
    ranges = whole(kafka_bootstrap, topic)
    ahead = ReadAhead()
    try:
        ahead.start(settings, ranges)
        assert ahead.pids() == [] and ahead.take(settings, ranges) is None
    finally:
        ahead.close()


def catch_up(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, on: bool) -> list[dict]:
    monkeypatch.setenv("STREAMNOTARY_READ_AHEAD", "true" if on else "false")
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "60")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "30")
    with env.active():
        return anchor_until_caught_up(drain=True)


def test_a_catch_up_reads_ahead_and_anchors_what_it_would_without(
    tmp_path: Path,
    kafka_bootstrap: str,
    s3_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> None:
    observations = demo_observations(days=3)  # 144 messages over 3 partitions
    ahead_env = make_env(tmp_path / "ahead", kafka_bootstrap, s3_server)
    plain_env = make_env(tmp_path / "plain", kafka_bootstrap, s3_server)
    for env in (ahead_env, plain_env):
        env.produce_observations(observations)
    with_ahead = catch_up(ahead_env, monkeypatch, on=True)
    without = catch_up(plain_env, monkeypatch, on=False)

    assert len(with_ahead) == len(without) >= 3
    read = [r["messages_read"] for r in with_ahead]
    assert read == [r["messages_read"] for r in without] and sum(read) == len(observations)
    # every run after the first took its read from the helper; without it, none did
    assert [r["messages_read_ahead"] for r in with_ahead] == [0, *read[1:]]
    assert [r["messages_read_ahead"] for r in without] == [0] * len(without)
    # and anchored the same windows with the same roots, in the same runs
    assert ahead_env.roots() == plain_env.roots()
    assert [r["new_anchors"] for r in with_ahead] == [r["new_anchors"] for r in without]
    assert [r["log_size"] for r in with_ahead] == [r["log_size"] for r in without]
