"""Flow-run heartbeats of a catch-up: one shared thread, one heartbeat per run.

Prefect's crashed-run detection watches the event ``prefect.flow-run.heartbeat``. A
catch-up replaces Prefect's per-run heartbeat thread (which every run waits up to a second
for at its end) by one thread for the process (flows/heartbeat.py). The drill runs a
catch-up of a grouped topic (each run a parent flow run with a subflow per group, the
subflows at the same time) on the real broker, S3 server and Prefect server, and reads the
heartbeat events back from the server: every flow run has exactly one (none: the shared
thread is missing; two: Prefect's thread was not turned off).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.events.utilities import emit_event

from flows import heartbeat
from flows.catch_up import anchor_until_caught_up
from tests.pipeline_env import PipelineEnv, make_env
from tests.test_partition_groups import GROUPS, A, B, two_groups_of_data


def wait_until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_each_run_beats_at_once_then_every_interval_until_removed() -> None:
    beats: dict[str, list[float]] = {"a": [], "b": []}
    beat = heartbeat.ProcessHeartbeat(seconds=0.2)
    beat.start()
    try:
        beat.add("a", lambda: beats["a"].append(time.monotonic()))
        assert len(beats["a"]) == 1  # the first one before add() returns: a short run has one
        beat.add("b", lambda: beats["b"].append(time.monotonic()))
        assert len(beats["b"]) == 1
        wait_until(lambda: len(beats["a"]) >= 3, "a's third heartbeat")
        gaps = [later - earlier for earlier, later in itertools.pairwise(beats["a"])]
        assert min(gaps) >= 0.2 * 0.95, gaps  # never before its interval
        beat.remove("a")
        sent = len(beats["a"])
        wait_until(lambda: len(beats["b"]) >= 3, "b's heartbeats going on")
        assert len(beats["a"]) == sent  # none after remove() returned
    finally:
        beat.stop()
    # stop() joined the thread: nothing is left that could send another heartbeat
    assert not [t for t in threading.enumerate() if t.name == "flow-run-heartbeat"]


def test_a_failing_send_is_retried_at_the_next_interval() -> None:
    calls: list[float] = []

    def send() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("the events worker is down")

    beat = heartbeat.ProcessHeartbeat(seconds=0.1)
    beat.start()
    try:
        beat.add("run", send)
        wait_until(lambda: len(calls) >= 2, "the heartbeat after the failed one")
    finally:
        beat.stop()


def test_outside_a_flow_run_or_a_catch_up_nothing_is_shared() -> None:
    with heartbeat.beating():  # no catch-up: Prefect's own thread beats for a run
        pass
    beat = heartbeat.ProcessHeartbeat(seconds=60)
    token = heartbeat._shared.set(beat)
    try:
        with heartbeat.beating():  # no flow run: nothing to beat for
            assert beat._runs == {}
    finally:
        heartbeat._shared.reset(token)


# -- the drill on the real services -------------------------------------------------------


def anchor_runs_since(since: datetime) -> list[UUID]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )

    async def read() -> list[UUID]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["anchor-windows"])),
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
            )
        return [r.id for r in runs]

    return asyncio.run(read())


def heartbeats_since(since: datetime) -> dict[str, int]:
    """Heartbeat events the Prefect server stored since `since`, by flow-run resource id."""
    return events_since(since, heartbeat.HEARTBEAT_EVENT)


def events_since(since: datetime, name: str) -> dict[str, int]:
    """Events named `name` the Prefect server stored since `since`, by resource id."""
    from prefect.client.orchestration import get_client

    async def read() -> dict[str, int]:
        counts: dict[str, int] = {}
        body = {
            "filter": {
                "event": {"name": [name]},
                "occurred": {"since": since.isoformat()},
            },
            "limit": 50,
        }
        async with get_client() as client:
            page = (await client._client.post("/events/filter", json=body)).json()
            while True:
                for event in page["events"]:
                    rid = event["resource"]["prefect.resource.id"]
                    counts[rid] = counts.get(rid, 0) + 1
                if not page.get("next_page"):
                    return counts
                page = (await client._client.get(page["next_page"])).json()

    return asyncio.run(read())


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def test_a_grouped_catch_up_sends_one_heartbeat_per_flow_run(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    two_groups_of_data(env, days=2)  # 48 messages a group
    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "20")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "10")
    frequency_in_runs: list[int | None] = []
    since = datetime.now(UTC)
    with env.active():
        runs = anchor_until_caught_up(
            drain=True,
            after_run=lambda _s: frequency_in_runs.append(
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
            ),
        )
    # three catch-up runs, each a parent run and one subflow per group: nine flow runs
    assert len(runs) == 3 and all(set(r["groups"]) == {A, B} for r in runs), runs
    flow_runs = anchor_runs_since(since)
    assert len(flow_runs) == 9, flow_runs
    wanted = {f"prefect.flow-run.{r}" for r in flow_runs}

    def all_arrived() -> bool:
        return wanted <= set(heartbeats_since(since))

    wait_until(all_arrived, "every flow run's heartbeat at the Prefect server", timeout_s=60)
    # Every heartbeat of these runs was handed to the events worker before the catch-up
    # returned; an event emitted now reaches the server after them, through the same worker.
    marker = f"streamnotary.test.{uuid4()}"
    emit_event(event="streamnotary.test.marker", resource={"prefect.resource.id": marker})
    wait_until(
        lambda: marker in events_since(since, "streamnotary.test.marker"),
        "the marker",
        timeout_s=60,
    )
    counts = heartbeats_since(since)
    assert {rid: counts[rid] for rid in wanted} == dict.fromkeys(wanted, 1), counts
    assert set(counts) == wanted  # and none for a run that is not one of these
    # Prefect's per-run thread is off inside the catch-up only
    assert frequency_in_runs == [None] * 3
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == 180
