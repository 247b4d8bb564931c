"""Per-stage timings (tasks/stage_timing.py) in every anchor run's summary."""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flows.anchor_windows import anchor_windows
from tasks import stage_timing
from tasks.stage_timing import STAGES, StageClock, add_call_time, describe, timed
from tasks.synth import SynthOptions, station_ids, station_releases
from tests.pipeline_env import PipelineEnv, make_env

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nested_stages_are_exclusive_and_add_up_to_at_most_the_wall_time() -> None:
    clock = StageClock()
    with clock.stage("window"):
        _busy(0.02)
        with clock.stage("parquet"):
            _busy(0.03)
        _busy(0.02)
    report = clock.report()
    assert 0.03 <= report["stages"]["parquet"] < 0.04 + 0.02
    assert 0.04 <= report["stages"]["window"] < 0.05 + 0.02
    assert report["calls"]["window"] == report["calls"]["parquet"] == 1
    assert sum(report["stages"].values()) <= report["wall_s"] + 1e-3
    assert report["schema"] == "streamnotary.stage_timings/1"


def test_threads_keep_their_own_nesting() -> None:
    clock = StageClock()

    def work() -> None:
        with clock.stage("objects"):
            _busy(0.02)

    with clock.stage("read"):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stages = clock.report()["stages"]
    assert stages["objects"] >= 0.06  # three threads' time, each in its own stack
    assert stages["read"] >= 0.02


def test_timed_costs_nothing_without_a_run_and_reports_with_one() -> None:
    @timed("decode")
    def f(x: int) -> int:
        return x + 1

    stage_timing._current = None
    assert f(1) == 2
    clock = stage_timing.start_run()
    assert f(2) == 3
    assert clock.report()["calls"]["decode"] == 1
    timings = add_call_time(clock.report(), clock.report()["wall_s"] + 1.5)
    assert timings["flow_overhead_s"] >= 1.4
    assert describe(timings).startswith("time ")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


@pytest.mark.usefixtures("prefect_harness")
def test_anchor_run_summary_reports_every_stage(env: PipelineEnv) -> None:
    options = SynthOptions(seed=1, stations=2, start=date(2021, 3, 1), days=4)
    observations = [
        obs
        for station in station_ids(options)
        for _, rows, _ in station_releases(options, station)
        for obs in rows
    ]
    with env.active():
        env.produce_observations(observations)
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 2 * 4
    timings = summary["timings"]
    assert set(STAGES) <= set(timings["stages"])
    for name in ("read", "decode", "window", "parquet", "objects", "ledger"):
        assert timings["stages"][name] > 0, name
        assert timings["calls"][name] >= 1, name
    # the run's 8 payloads are encoded together (`encode_payloads`), one window each
    assert timings["calls"]["parquet"] == 1 and timings["calls"]["window"] >= 2 * 4
    assert sum(timings["stages"].values()) <= timings["wall_s"]
    schema = json.loads((SCHEMAS / "stage_timings.schema.json").read_text())
    jsonschema.validate(add_call_time(timings, timings["wall_s"] + 0.5), schema)
