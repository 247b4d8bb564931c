"""Drill: a run that holds more windows open than one log entry can list still anchors.

A run entry lists every window it leaves open (about 60 bytes each) and a log entry holds
at most 65,535 bytes. The 10M backfill met this: with ~1,000 stations each holding its
last window open, every run of that scope failed with `EntryTooLarge` and the scope could
not anchor until fewer windows were open. Now the run logs its held-open windows in
run_part entries (`tasks.tlog.entries.split_run_entry`); the auditor joins them back and
accounts for every held message. On noida-db, SeaweedFS and the Prefect harness.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import audit
from tasks.record import Observation
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

STATIONS = 1_200
DAY = datetime(2019, 9, 7, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server, object_layout="pack")


def _first_hours(hours: int) -> list[Observation]:
    """The first `hours` hours of DAY at each of STATIONS stations: every window stays open."""
    return [
        Observation(f"{10_000 + s:05d}", DAY + timedelta(hours=h), 100 + s % 50, 800, 3)
        for h in range(hours)
        for s in range(STATIONS)
    ]


def test_more_open_windows_than_one_log_entry_lists_are_logged_in_parts(
    env: PipelineEnv,
) -> None:
    with env.active():
        env.produce_observations(_first_hours(2))
        first = anchor_windows()  # all 1,200 windows stay open
        held_report = audit(all_windows=True)
        second = anchor_windows(drain=True)  # and now close
        entries = env.log_entries()
        closed_report = audit(all_windows=True)

    assert first["new_anchors"] == 0 and first["messages_held"] == 2 * STATIONS
    assert len(first["held_open"]) == STATIONS
    assert second["new_anchors"] == STATIONS

    parts = Counter(e["run"] for e in entries if e["type"] == "run_part")
    runs = {e["run"]: e for e in entries if e["type"] == "run"}
    assert parts[1] >= 2 and runs[1]["parts"] == parts[1] and runs[1]["held_open"] == {}
    held = {w for e in entries if e["type"] == "run_part" for w in e["held_open"]}
    assert len(held) == STATIONS
    assert 2 not in parts and "parts" not in runs[2]  # nothing left open after the drain

    assert held_report["verdict"] == "pass", held_report["findings"]
    coverage = held_report["log"]["coverage"]["partitions"]
    assert sum(c["held_open"] for c in coverage) == 2 * STATIONS, coverage  # each held once
    assert closed_report["verdict"] == "pass", closed_report["findings"]
    assert len(closed_report["windows"]) == STATIONS
