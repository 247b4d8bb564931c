"""Tamper drills: each tampering of anchored evidence is found, on the right window and check.

The data is anchored by the real pipeline (noida-db, SeaweedFS, embedded SQLite ledger).
Every drill changes one thing, audits everything, asserts that exactly the tampered
window fails and on which check, and that every untouched window still passes, then puts
the evidence back so the next drill starts clean.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from storage import layout
from storage.kafka import KafkaLog
from streamnotary.report import validate_report
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowKey
from tests.audit_env import (
    anchor_demo_days,
    anchored_env,
    audit_observations,
    audit_report,
    check,
    codes,
    ledger_path,
    window,
)
from tests.pipeline_env import PipelineEnv, make_env

__all__ = ["anchored_env"]

TARGET = "00433_20190907T000000Z_86400s"
TARGET_KEY = WindowKey.parse(TARGET)


def _others_pass(report: dict[str, Any], *failing: str) -> None:
    others = [w for w in report["windows"] if w["window_id"] not in failing]
    assert len(others) == len(report["windows"]) - len(failing)
    assert others and all(w["verdict"] == "pass" for w in others), [
        (w["window_id"], w["verdict"]) for w in others if w["verdict"] != "pass"
    ]


@pytest.fixture
def env(anchored_env: PipelineEnv) -> Iterator[PipelineEnv]:
    """The shared anchored environment; each drill must leave it clean (checked after)."""
    yield anchored_env
    assert audit_report(anchored_env)["verdict"] == "pass", "drill did not restore the evidence"


def test_untouched_anchored_windows_pass_every_check(anchored_env: PipelineEnv) -> None:
    from streamnotary.report import validate_report

    report = audit_report(anchored_env)
    validate_report(report)
    assert report["summary"]["windows"] == 6
    for w in report["windows"]:
        for r in w["revisions"]:
            assert {c: v["verdict"] for c, v in r["checks"].items()} == dict.fromkeys(
                r["checks"], "pass"
            )
    assert all(p["error"] is None for p in report["kafka"]["partitions"])


def test_flipped_payload_byte_fails_payload_check_of_that_window_only(env: PipelineEnv) -> None:
    store = env.store()
    key = layout.payload_key(env.topic, TARGET_KEY, 0)
    original = store.get(key)
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    store.put(key, bytes(tampered))
    try:
        report = audit_report(env)
    finally:
        store.put(key, original)
    assert window(report, TARGET)["verdict"] == "fail"
    assert "payload_sha256_mismatch" in codes(check(report, TARGET, "payload"))
    assert check(report, TARGET, "completeness")["verdict"] == "pass"  # Kafka still agrees
    assert check(report, TARGET, "anchored")["verdict"] == "pass"
    _others_pass(report, TARGET)


def test_deleted_payload_is_reported_missing(env: PipelineEnv) -> None:
    store = env.store()
    key = layout.payload_key(env.topic, TARGET_KEY, 0)
    original = store.get(key)
    store.delete(key)
    try:
        report = audit_report(env)
    finally:
        store.put(key, original)
    assert codes(check(report, TARGET, "payload")) == {"payload_missing"}
    assert check(report, TARGET, "canonical")["verdict"] == "not_checkable"
    assert window(report, TARGET)["verdict"] == "fail"
    _others_pass(report, TARGET)


def test_edited_checkpoint_breaks_the_anchor_and_the_analytics(env: PipelineEnv) -> None:
    store = env.store()
    key = layout.checkpoint_key(env.topic, TARGET_KEY, 0)
    original = store.get(key)
    doc = json.loads(original)
    doc["aggregates"]["temperature_c"]["max"] = "39.9"  # a friendlier record high
    store.put(key, json.dumps(doc).encode())
    try:
        report = audit_report(env)
    finally:
        store.put(key, original)
    assert "checkpoint_digest_mismatch" in codes(check(report, TARGET, "anchored"))
    assert "aggregate_mismatch" in codes(check(report, TARGET, "analytics"))
    assert check(report, TARGET, "payload")["verdict"] == "pass"
    _others_pass(report, TARGET)


def test_edited_ledger_row_fails_the_anchor_of_its_window(env: PipelineEnv) -> None:
    entry_key = layout.window_entry_key(env.topic, TARGET_KEY, 0)
    db = sqlite3.connect(ledger_path(env))
    try:
        (body,) = db.execute("SELECT body FROM entries WHERE key = ?", (entry_key,)).fetchone()
        forged = json.loads(body)
        forged["merkle_root"] = "0" * 64
        with db:
            db.execute("UPDATE entries SET body = ? WHERE key = ?", (json.dumps(forged), entry_key))
        try:
            report = audit_report(env)
        finally:
            with db:
                db.execute("UPDATE entries SET body = ? WHERE key = ?", (body, entry_key))
    finally:
        db.close()
    assert report["ledger"]["integrity"]["ok"] is False
    anchored = check(report, TARGET, "anchored")
    assert anchored["verdict"] == "fail"
    assert codes(anchored) & {
        "window_entry_unreadable",
        "window_entry_body_altered",
        "ledger_integrity",
    }
    assert check(report, TARGET, "completeness")["verdict"] == "pass"
    _others_pass(report, TARGET)


def test_late_record_is_named_by_partition_and_offset_and_duplicates_are_only_noted(
    tmp_path: Any, kafka_bootstrap: str, s3_server: Any, prefect_harness: None
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    anchor_demo_days(env)
    assert audit_report(env)["verdict"] == "pass"
    anchored = [
        o
        for o in audit_observations()
        if TARGET_KEY.contains(o.observed_at) and o.station_id == "00433"
    ]
    late = Observation("00433", anchored[5].observed_at + timedelta(minutes=30), 123, 456, 3)
    dup_window = "00427_20190906T000000Z_86400s"
    duplicate = next(o for o in audit_observations() if o.station_id == "00427")
    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        before = {p: log.watermarks(p)[1] for p in log.partitions()}
    env.produce_observations([late, duplicate])

    report = audit_report(env)

    completeness = check(report, TARGET, "completeness")
    assert completeness["verdict"] == "fail"
    (finding,) = [f for f in completeness["findings"] if f["code"] == "late_unanchored"]
    assert canonical_bytes(late).decode() in finding["message"]
    assert finding["offset"] == before[finding["partition"]]  # the first offset after the anchors
    dup = check(report, dup_window, "completeness")
    assert dup["verdict"] == "pass"
    assert codes(dup) == {"late_duplicate"}
    _others_pass(report, TARGET)


def test_retention_removed_data_is_not_checkable_never_a_silent_pass(
    tmp_path: Any, kafka_bootstrap: str, s3_server: Any, prefect_harness: None
) -> None:
    """Kafka's retention (here: DeleteRecords, the same low-watermark move) removes the
    first window's messages; its completeness becomes not_checkable, the others still pass."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    anchor_demo_days(env)
    first = "00433_20190906T000000Z_86400s"
    cp = env.checkpoints()[(first, 0)]
    ((partition, start),) = [(r["partition"], r["start"]) for r in cp["source"]["ranges"]]
    admin = AdminClient({"bootstrap.servers": env.kafka_bootstrap})
    cut = start + 5  # drop the window's first five messages, as retention would
    for f in admin.delete_records(
        [TopicPartition(env.topic, partition, cut)], request_timeout=10
    ).values():
        f.result(timeout=10)
    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        assert log.watermarks(partition)[0] == cut

    report = audit_report(env)

    completeness = check(report, first, "completeness")
    assert completeness["verdict"] == "not_checkable"
    assert window(report, first)["verdict"] == "not_checkable"
    assert report["verdict"] != "pass"
    for name in ("anchored", "payload", "canonical", "analytics"):
        assert (
            check(report, first, name)["verdict"] == "pass"
        )  # what does not need Kafka still holds
    untouched = [
        w
        for w in report["windows"]
        if w["window_id"] != first and w["window_id"].startswith("00433")
    ]
    assert untouched and all(w["verdict"] == "pass" for w in untouched)


# ---------------------------------------------------------------------------------------
# Hostile and stray objects (issue 9): findings on the window they name or on the run,
# never an exception; every other window is still audited. Without the screening in
# tasks/audit/documents.py each of these raised (ValueError, OverflowError, KeyError).
# ---------------------------------------------------------------------------------------


@contextmanager
def _planted(store: Any, items: dict[str, bytes]) -> Iterator[None]:
    """Put hostile objects (replacing originals) and restore the bucket afterwards."""
    originals: dict[str, bytes | None] = {}
    for k, data in items.items():
        originals[k] = store.get(k) if k in set(store.list(k)) else None
        store.put(k, data)
    try:
        yield
    finally:
        for k, data in originals.items():
            if data is None:
                store.delete(k)
            else:
                store.put(k, data)


def _window_dir(env: PipelineEnv, kind: str) -> str:
    return layout.checkpoint_key(env.topic, TARGET_KEY, 0).replace("checkpoints/", f"{kind}/", 1)


def test_stray_readme_in_a_window_is_a_finding_on_that_window(env: PipelineEnv) -> None:
    store = env.store()
    readme = _window_dir(env, "checkpoints").rsplit("/", 1)[0] + "/README.json"
    with _planted(store, {readme: b'{"hello": "auditor"}'}):
        report = audit_report(env)
    validate_report(report)
    target = window(report, TARGET)
    assert [(f["code"], f["severity"]) for f in target["findings"]] == [("stray_object", "info")]
    assert "README.json" in target["findings"][0]["message"]
    assert len(report["windows"]) == 6 and report["verdict"] == "pass"


def test_window_size_that_overflows_is_a_run_finding_and_the_rest_is_audited(
    env: PipelineEnv,
) -> None:
    store = env.store()
    forged = f"receipts/{env.topic}/00433/20190907T000000Z_{10**30}s/r0000.json"
    with _planted(store, {forged: b"{}"}):
        report = audit_report(env)
    validate_report(report)
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [
        ("unusable_window_object", "fail")
    ]
    assert report["verdict"] == "fail"
    _others_pass(report)


@pytest.mark.parametrize(
    ("name", "document", "kind", "code"),
    [
        ("empty checkpoint", b"{}", "checkpoints", "checkpoint_invalid"),
        ("checkpoint list", b"[1, 2]", "checkpoints", "checkpoint_missing"),
        ("deep receipt", b"[" * 100_000 + b"]" * 100_000, "receipts", "receipt_missing"),
        ("receipt of wrong shape", b'{"batch": "x", "ledger": 1}', "receipts", "receipt_invalid"),
        ("binary checkpoint", bytes(range(256)), "checkpoints", "checkpoint_missing"),
    ],
)
def test_hostile_document_fails_its_window_by_name_and_others_pass(
    env: PipelineEnv, name: str, document: bytes, kind: str, code: str
) -> None:
    store = env.store()
    with _planted(store, {_window_dir(env, kind): document}):
        report = audit_report(env)
    validate_report(report)
    anchored = check(report, TARGET, "anchored")
    assert code in codes(anchored), (name, anchored)
    assert window(report, TARGET)["verdict"] == "fail"
    _others_pass(report, TARGET)
