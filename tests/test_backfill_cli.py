"""`streamnotary backfill`: directories of generated DWD archives, progress, idempotent re-run.

Real broker, SeaweedFS, local ledger and Prefect (the session harness), the CLI as a process.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from streamnotary.commands.generate import write_history
from tasks.synth import SynthOptions, station_ids, station_releases
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def test_backfill_of_a_directory_anchors_everything_once(env: PipelineEnv, tmp_path: Path) -> None:
    options = SynthOptions(seed=2, stations=2, start=date(2020, 5, 1), days=3, republish_days=0)
    history = tmp_path / "history"
    write_history(options, history)
    rows = [o for s in station_ids(options) for _, r, _ in station_releases(options, s) for o in r]
    windows = {(o.station_id, o.observed_at.date()) for o in rows}

    first = env.run_cli("backfill", str(history), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["new_anchors"] == len(windows) == 6
    assert summary["messages_read"] == summary["ingested_records"] == len(rows)
    assert summary["timings"]["call_s"] >= summary["timings"]["wall_s"] > 0

    again = env.run_cli("backfill", str(history), "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["new_anchors"] == 0 and second["skipped_sources"] == 2


def test_backfill_prints_rate_and_eta(env: PipelineEnv, tmp_path: Path) -> None:
    options = SynthOptions(seed=4, stations=1, start=date(2020, 5, 1), days=2, republish_days=0)
    write_history(options, tmp_path / "h")
    done = env.run_cli("backfill", str(tmp_path / "h"))
    assert done.returncode == 0, done.stderr
    assert "messages/s" in done.stderr and "windows/s" in done.stderr
    assert "/s" in done.stderr.split("backfill:")[0]  # the progress bars' rate column
    assert "ERROR" not in done.stderr


def test_backfill_of_an_empty_directory_is_a_clear_error(env: PipelineEnv, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = env.run_cli("backfill", str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "no DWD archives or product files found" in done.stderr
