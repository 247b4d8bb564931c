"""Drill: poison messages through the real broker never wedge anchoring (issue 9 item 1).

Each message below once raised out of `classify` before the write-ahead plan (so the
cursor never moved and every later run failed on it again) or was accepted although it
is not a valid record. They are produced to the real noida-db broker, with the
timestamps and headers a hostile producer can set (noida-db, like Kafka, stores a year
10000, a negative or the largest int64 timestamp as given), beside ordinary records. The
anchor run must quarantine each with its named reason, count it, move the cursor past
it, and anchor the good records; the next run must be clean, and the audit must pass.
Removing any defence makes the first run raise (RecursionError, ValueError,
OverflowError) or anchor a forged record, and this test fail.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from flows.anchor_windows import anchor_windows
from flows.audit import audit
from storage import layout
from storage.kafka import KafkaLog
from tasks.record import to_json_value
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

YEAR_10000_MS = 253_402_300_800_000 + 3_600_000  # 10000-01-01T01:00Z


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def _poison(good_value: dict[str, Any], t: int) -> list[tuple[str, bytes | None, bytes, int]]:
    """(expected reason, key, value, timestamp ms) of each hostile message."""
    record = canonical_bytes_of(good_value)

    def variant(**changes: Any) -> bytes:
        return json.dumps({**good_value, **changes}).encode()

    return [
        ("too_large", b"00433", b"[" * 100_000 + b"]" * 100_000, t),
        ("too_deep", b"00433", b"[" * 2_000 + b"]" * 2_000, t),
        ("bad_json", b"00433", b"{broken", YEAR_10000_MS),
        ("bad_json", b"00433", b"{broken", 2**63 - 1),
        ("bad_json", b"00433", b"{broken", -5),
        ("control_character", b"00433", variant(station_id="00433\n"), t),
        ("duplicate_key", b"00433", record[:-1] + b',"temperature_c_tenths":-300}', t),
        ("non_ijson_number", b"00433", variant(temperature_c_tenths=2**60), t),
        (
            "non_ijson_number",
            b"00433",
            record.replace(b'"quality_level":3', b'"quality_level":1e999'),
            t,
        ),
        (
            "not_canonicalizable",
            b"00433",
            record.replace(b'"quality_level":3', b'"quality_level":NaN'),
            t,
        ),
        ("not_ijson_string", b"00433", variant(station_id="\ud800"), t),
        ("key_mismatch", b"00427", record, t),
        ("key_mismatch", b"00433\n", record, t),
        ("key_mismatch", None, record, t),
    ]


def canonical_bytes_of(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _produce_raw(env: PipelineEnv, messages: list[tuple[str, bytes | None, bytes, int]]) -> None:
    """With a plain producer: hostile headers, and timestamps KafkaLog would not send."""
    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        log.ensure_topic(3)
    producer = Producer({"bootstrap.servers": env.kafka_bootstrap, "enable.idempotence": True})
    failures: list[str] = []
    for _reason, key, value, ts in messages:
        producer.produce(
            env.topic,
            key=key,
            value=value,
            timestamp=ts,
            partition=0,
            headers=[("", None), ("\xff", b"\x00" * 3), ("x" * 300, b"y" * 1000)],
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
    assert producer.flush(30) == 0 and failures == []


def test_poison_messages_are_quarantined_and_never_wedge_the_pipeline(
    env: PipelineEnv,
) -> None:
    good = [o for o in demo_observations(days=2) if o.station_id == "00433"]
    t = int(good[3].observed_at.timestamp() * 1000)
    poison = _poison(to_json_value(good[3]), t)
    with env.active() as settings:
        env.produce_observations(good[:24])
        _produce_raw(env, poison)
        env.produce_observations(good[24:])
        produced = len(good) + len(poison)

        first = anchor_windows(drain=True)

        store = env.store()
        docs = [
            m
            for k in store.list(f"quarantine/{settings.topic}/")
            for m in json.loads(store.get(k))["messages"]
        ]
        assert sorted(d["reason"] for d in docs) == sorted(r for r, *_ in poison)
        envelope_window = "00433_20180924T000000Z_86400s"
        unattributable = [d for d in docs if d["window_id"] is None]
        # year 10000, int64 max, negative timestamps, and keys that are no station id
        assert len(unattributable) == 5 == first["unattributable"]
        attributed = [d for d in docs if d["window_id"] is not None]
        assert {d["window_id"] for d in attributed} == {
            envelope_window,
            "00427_20180924T000000Z_86400s",  # key_mismatch counts under the key's station
        }
        assert first["stations"]["00433"]["quarantined"] == len(attributed) - 1
        assert first["stations"]["00433"]["records"] == len(good)
        total = sum(cp["counts"]["messages"] for cp in env.checkpoints().values())
        assert total + first["unattributable"] == produced

        with KafkaLog(env.kafka_bootstrap, env.topic) as log:
            ends = {p: log.watermarks(p)[1] for p in range(3)}
        cursor = json.loads(store.get(layout.cursor_key(settings.topic)))
        assert {int(p): c["read_end"] for p, c in cursor["partitions"].items()} == ends

        again = anchor_windows(drain=True)  # the next run is clean: nothing re-read as new
        assert again["new_anchors"] == 0 and again["unattributable"] == 0
        env.produce_observations(demo_observations(days=3)[48:72])  # and new data flows
        third = anchor_windows(drain=True)
        assert third["new_anchors"] == 1

        report = audit(all_windows=True)
    assert report["verdict"] == "pass"


def test_a_flood_of_junk_is_logged_in_run_parts_and_never_wedges(env: PipelineEnv) -> None:
    """Every quarantined and unattributable offset is listed in its run's log entries, and a
    log entry holds at most 65,535 bytes (~11,000 offsets). Once, 13,000 messages that name
    no window, or 14,000 junk messages sent into one open window over two runs (quarantined
    all at once when it closes), made the run entry too large: `EntryTooLarge` on that run
    and every re-run, so any producer could stop anchoring. Now both runs log their lists
    in run_part entries, every offset is accounted for, and the audit passes."""
    unattributable, into_window = 13_000, 7_000  # ~74 KB of offsets each
    good = [o for o in demo_observations(days=2) if o.station_id == "00433"]
    t = int(good[12].observed_at.timestamp() * 1000)  # the open day of 00433
    window_junk = [("bad_json", b"00433", b"{broken", t)] * into_window
    with env.active():
        env.produce_observations(good[:12])
        _produce_raw(env, [*window_junk, *[("bad_json", None, b"{broken", -5)] * unattributable])
        first = anchor_windows()
        _produce_raw(env, window_junk)
        second = anchor_windows()
        third = anchor_windows(drain=True)
        entries = env.log_entries()
        report = audit(all_windows=True)
        store = env.store()
        stored = {k: json.loads(store.get(k)) for k in store.list(f"quarantine/{env.topic}/")}
    # the flood costs one object per run that quarantined, never one per junk message
    assert sorted(stored) == [layout.quarantine_key(env.topic, run) for run in (1, 3)]
    assert [len(d["messages"]) for d in stored.values()] == [unattributable, 2 * into_window]
    assert [r["backlog"] for r in (first, second, third)] == [0, 0, 0]  # one read each
    assert first["unattributable"] == unattributable and first["new_anchors"] == 0
    assert second["new_anchors"] == 0 and second["held_open"]
    assert third["new_anchors"] == 1
    assert third["stations"]["00433"]["quarantined"] == 2 * into_window
    runs = {e["run"]: e for e in entries if e["type"] == "run"}
    parts = Counter(e["run"] for e in entries if e["type"] == "run_part")
    assert parts[1] >= 2 and parts[3] >= 2 and 2 not in parts  # run 2 holds 14,012 in ranges
    assert runs[1]["parts"] == parts[1] and runs[3]["parts"] == parts[3]
    assert report["verdict"] == "pass", report["findings"]
