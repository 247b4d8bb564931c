"""anchor-windows explains itself: the pure run report, and its artifacts on a real run.

The pure part (tasks/run_report.py) is checked on plans computed by the real planner; the
edge (tasks/run_artifacts.py) on a real anchor-windows run against noida-db, SeaweedFS and
the session's Prefect server, reading the artifacts and the state back through the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from storage import layout
from tasks.message import SourceMessage
from tasks.planner import Cursor, PlanOptions, plan_run
from tasks.record import canonical_bytes
from tasks.run_report import (
    artifact_key,
    document_links,
    headline,
    held_open_advice,
    held_open_by_station,
    render_markdown,
)
from tasks.window import WindowSpec
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _messages(days: int) -> list[SourceMessage]:
    return [
        SourceMessage(
            "t",
            0,
            i,
            o.station_id.encode(),
            canonical_bytes(o),
            int(o.observed_at.timestamp() * 1e3),
        )
        for i, o in enumerate(demo_observations(days=days))
    ]


def test_held_open_windows_are_counted_per_station_with_since_and_advice() -> None:
    cursor = Cursor.empty("t", 86_400)
    plan = plan_run(cursor, _messages(3), {0: 144}, PlanOptions(WindowSpec(86_400)), NOW)
    held = held_open_by_station(plan.held_open, plan.next_cursor)
    # three days per station read, two closed by the watermark: the last day stays open
    assert sorted(held) == ["00427", "00433"]
    for station, h in held.items():
        assert h["windows"] == 1 and h["messages"] == 24
        assert h["oldest_window"] == f"{station}_20180926T000000Z_86400s"
        assert h["oldest_window_start"] == "2018-09-26T00:00:00Z"
        assert h["watermark"] == "2018-09-26T23:00:00Z"
        assert h["last_progress_at"] == "2026-01-01T00:00:00Z"
    assert "drain=true" in held_open_advice(held, 0)
    assert "forever" in held_open_advice(held, 0)
    assert "3600" in held_open_advice(held, 3600)
    assert held_open_advice({}, 0) == ""

    drained = plan_run(
        cursor, _messages(3), {0: 144}, PlanOptions(WindowSpec(86_400), drain=True), NOW
    )
    assert held_open_by_station(drained.held_open, drained.next_cursor) == {}


def test_headline_and_markdown_say_what_was_anchored_held_and_quarantined() -> None:
    summary: dict[str, Any] = {
        "topic": "dwd.x",
        "ledger": "local",
        "new_anchors": 4,
        "messages_read": 145,
        "unattributable": 0,
        "ledger_entries": 5,
        "log_size": 42,
        "log_root": "ab" * 32,
        "head_ref": {"locator": {"seq": 7}},
        "stations": {
            "00433": {
                "windows": 2,
                "revisions": 0,
                "records": 48,
                "missing_values": 1,
                "duplicates": 0,
                "conflicts": 0,
                "quarantined": 1,
            }
        },
        "held_open": {
            "00433": {
                "windows": 1,
                "messages": 24,
                "oldest_window": "00433_20180926T000000Z_86400s",
                "oldest_window_start": "2018-09-26T00:00:00Z",
                "newest_window": "00433_20180926T000000Z_86400s",
                "watermark": "2018-09-26T23:00:00Z",
                "closed_until": "2018-09-25T22:00:00Z",
                "last_progress_at": "2026-01-01T00:00:00Z",
            }
        },
    }
    line = headline(summary)
    assert line == (
        "anchored 4 window revision(s) of dwd.x on the local ledger (log head 42); "
        "1 window(s) held open in 1 station(s); 1 message(s) quarantined"
    )
    quarantine = [
        {"partition": 0, "offset": 9, "window_id": None, "reason": "not_json", "detail": "x|y"}
    ]
    links = document_links("dwd.x", lambda k: f"s3://b/{k}", None)
    assert [link.url for link in links] == [f"s3://b/{layout.cursor_key('dwd.x')}"]
    md = render_markdown(
        summary,
        cursor_before={"partitions": {}, "stations": {}},
        cursor_after={
            "partitions": {"0": {"resume": 120, "read_end": 145}},
            "stations": {"00433": {"watermark": "2018-09-26T23:00:00Z", "closed_until": None}},
        },
        quarantine=quarantine,
        links=links,
        idle_timeout_seconds=0,
    )
    assert line in md
    assert "| 00433 | 2 | 0 | 48 | 1 | 0 | 0 | 1 |" in md  # per-station row
    assert "| 0 | 0 → 120 | 0 → 145 |" in md  # cursor before -> after
    assert "| 00433 | 1 | 24 | 2018-09-26T00:00:00Z |" in md  # held open, since
    assert "drain=true" in md
    assert "1 × `not_json`" in md and "x\\|y" in md  # reasons, escaped for the table
    assert "head/dwd.x/42" in md and "seq `7`" in md
    assert (
        artifact_key("anchor-windows", "dwd.Observations_2") == "anchor-windows-dwd-observations-2"
    )


# -- a real run ----------------------------------------------------------------------------


def _artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


@pytest.mark.usefixtures("prefect_harness")
def test_anchor_run_publishes_keyed_artifacts_and_its_headline(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    env: PipelineEnv = make_env(tmp_path, kafka_bootstrap, s3_server)
    observations = demo_observations(days=3)
    env.produce_observations(observations)
    bad_at = int((observations[0].observed_at + timedelta(minutes=30)).timestamp() * 1000)
    env.produce([(b"00433", b"{not json", bad_at)])
    with env.active():
        state = anchor_windows(drain=False, return_state=True)
    summary = state.result()
    assert state.is_completed()
    assert state.message == headline(summary)
    assert state.message.startswith(f"anchored 4 window revision(s) of {env.topic}")
    assert "2 window(s) held open in 2 station(s); 1 message(s) quarantined" in state.message
    assert summary["held_open"]["00433"]["windows"] == 1

    found = _artifacts(state.state_details.flow_run_id)
    by_type: dict[str, list[Any]] = {}
    for a in found:
        by_type.setdefault(a.type, []).append(a)
    # link artifacts are stored as markdown ("[text](url)") too
    keyed = {a.key: a for a in found if a.key}
    md = keyed[artifact_key("anchor-windows", env.topic)]
    assert state.message in md.data and "## Windows held open" in md.data
    assert "## Quarantined" in md.data and "| 0 |" in md.data

    (table,) = by_type["table"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["window"] for r in rows} == {w for w, _, _ in env.roots()}
    store = env.store()
    packed = env.settings().object_layout == "pack"
    for r in rows:  # every URI names an object the run stored
        assert (r["receipt"] == "-") == packed  # layout pack writes no receipts
        for column in ("payload", "checkpoint") + (() if packed else ("receipt",)):
            key = r[column].removeprefix(f"s3://{env.bucket}/").split("#", 1)[0]
            assert store.head(key) is not None, r[column]
        assert r["ledger key (window)"].startswith(f"window/{env.topic}/{r['window']}/r0")
        assert r["ledger key (log head)"] == layout.head_entry_key(env.topic, summary["log_size"])

    links = {k: a.data for k, a in keyed.items()}
    assert artifact_key("anchor-batch", env.topic) not in links  # runs anchor the log head
    assert not list(store.list(f"batches/{env.topic}/"))
    assert artifact_key("anchor-cursor", env.topic) in links

    # the anchor-log head the run anchored: the signed checkpoint and the ledger agree
    _assert_log_head(env, summary, md.data)

    progress = by_type["progress"]
    assert {a.description.split(":")[0] for a in progress} >= {"payloads", "checkpoints"}
    assert all(float(a.data) == 100.0 for a in progress)

    # a second run with nothing new still explains itself (and keeps the key's history)
    with env.active():
        again = anchor_windows(drain=False, return_state=True)
    assert again.message.startswith(f"nothing new to anchor on {env.topic}")
    assert "2 window(s) held open" in again.message
    md2 = {a.key: a for a in _artifacts(again.state_details.flow_run_id)}[md.key]
    assert md2.id != md.id and "nothing new to anchor" in md2.data


def _assert_log_head(env: PipelineEnv, summary: dict[str, Any], markdown: str) -> None:
    """summary["log"] names the head in the bucket's signed checkpoint and the entry the
    ledger holds under its key; the markdown artifact shows origin, size, root and key."""
    from storage.ledger.factory import open_ledger
    from storage.logkey import log_origin, log_verifier
    from storage.tlog import LogReader

    log = summary["log"]
    with env.active() as settings:
        origin, verifier = log_origin(settings), log_verifier(settings)
        with open_ledger(settings) as ledger:
            ref = ledger.lookup(log["ledger_key"])
            assert ref is not None
            body = ledger.read(ref)
    head = LogReader(env.store(), env.topic, verifier, origin).checkpoint()
    assert head is not None
    assert (log["origin"], log["size"], log["root"]) == (origin, head.size, head.root.hex())
    assert log["ledger_key"] == layout.head_entry_key(env.topic, head.size)
    assert (body["size"], body["root"], body["previous_size"]) == (
        head.size, log["root"], log["previous_size"],
    )  # fmt: skip
    assert log["ledger_locator"] == ref.locator and log["previous_size"] == 0
    assert (log["size"], log["root"]) == (summary["log_size"], summary["log_root"])
    section = markdown.split("## Anchor log head", 1)[1].split("\n## ", 1)[0]
    for text in (origin, f"size {head.size}", head.root.hex(), log["ledger_key"],
                 log["checkpoint_key"], f"seq `{ref.locator['seq']}`"):  # fmt: skip
        assert text in section, (text, section)
