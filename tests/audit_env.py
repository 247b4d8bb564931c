"""Helpers for audit tests: windows anchored by the real pipeline on the real servers.

`anchored_env` ingests three days of the shipped DWD files (both stations, 2019-09-06 ..
2019-09-08, so 00433 at 2019-09-07T17:00Z is included) into a fresh topic, bucket and
embedded ledger, and runs `anchor_windows(drain=True)`: every audit test starts from data
written by the production code path, not from hand-made documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import Selection, run_audit
from storage.kafka import KafkaLog
from storage.ledger.local import LocalLedger
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

FIRST_DAY = datetime(2019, 9, 6, tzinfo=UTC)
LAST_DAY_END = datetime(2019, 9, 9, tzinfo=UTC)


def audit_observations() -> list[Any]:
    return [o for o in demo_observations() if FIRST_DAY <= o.observed_at < LAST_DAY_END]


def anchor_demo_days(env: PipelineEnv) -> None:
    """Produce the three demo days and anchor them with the real flow."""
    env.produce_observations(audit_observations())
    with env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 6, summary


def ledger_path(env: PipelineEnv) -> Path:
    return env.home / "ledger.sqlite3"


def audit_report(env: PipelineEnv, selection: Selection | None = None) -> dict[str, Any]:
    """Run the audit steps (without Prefect) against the env's real services."""
    with (
        env.active() as settings,
        LocalLedger(ledger_path(env)) as ledger,
        KafkaLog(env.kafka_bootstrap, env.topic) as kafka,
    ):
        return run_audit(
            store=env.store(),
            ledger=ledger,
            kafka=kafka,
            topic=settings.topic,
            selection=selection or Selection(all=True),
        )


def window(report: dict[str, Any], window_id: str) -> dict[str, Any]:
    return next(w for w in report["windows"] if w["window_id"] == window_id)


def check(report: dict[str, Any], window_id: str, name: str, revision: int = 0) -> dict[str, Any]:
    w = window(report, window_id)
    return next(r for r in w["revisions"] if r["revision"] == revision)["checks"][name]


def codes(result: dict[str, Any]) -> set[str]:
    return {f["code"] for f in result["findings"]}


@pytest.fixture(scope="module")
def anchored_env(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    s3_server: Any,
    prefect_harness: None,
) -> Iterator[PipelineEnv]:
    # The drills on this environment tamper with per-window payload objects: it keeps the
    # per_window layout covered (tests/test_pack.py runs the same drills on a pack).
    env = make_env(tmp_path_factory.mktemp("audit"), kafka_bootstrap, s3_server, "per_window")
    anchor_demo_days(env)
    yield env
