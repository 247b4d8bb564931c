"""Drills of issue 8 on the real services (noida-db, SeaweedFS, embedded ledger).

Each drill plays one attacker against data anchored by the real pipeline, through the
signed anchor log, and asserts the finding that the defence produces; each names the
defence whose removal makes it pass silently (see docs/audit.md, "Threat model"):

* every object of one window deleted          -> the log still names it (enumeration)
* first message dropped, anchored consistently -> coverage (offset_outside_window)
* a window rewritten and re-anchored after DeleteRecords -> duplicate_log_entry
* the log rebuilt from scratch, one window changed -> anchored heads / remembered head
* a hostile bundle's text                      -> printed escaped by both verifiers
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import Selection, run_audit
from flows.audit_log import TrustPolicy
from storage import layout
from storage.kafka import KafkaLog
from storage.ledger.local import LocalLedger
from storage.logkey import load_signer, log_origin
from storage.tlog import LogReader
from storage.tlog_writer import LogWriter
from streamnotary.commands.trust import trust_policy
from tasks.record import canonical_bytes
from tasks.tlog.entries import entry_bytes
from tasks.window import WindowKey
from tests.audit_env import anchor_demo_days, audit_observations, ledger_path, window
from tests.pipeline_env import PipelineEnv, make_env

TARGET = "00433_20190907T000000Z_86400s"
TARGET_KEY = WindowKey.parse(TARGET)


def log_audit(
    env: PipelineEnv, *, state: Path | None = None, pinned: bool = True
) -> dict[str, Any]:
    """`run_audit` of every window, pinned to the env's trust policy (as `--trust`)."""
    with (
        env.active() as settings,
        LocalLedger(ledger_path(env)) as ledger,
        KafkaLog(env.kafka_bootstrap, env.topic) as kafka,
    ):
        trust = TrustPolicy.from_json(trust_policy(settings), "test") if pinned else None
        return run_audit(
            store=env.store(),
            ledger=ledger,
            kafka=kafka,
            topic=settings.topic,
            selection=Selection(all=True),
            trust=trust,
            fallback=(log_origin(settings), None),
            state_dir=str(state) if state else None,
        )


def codes(findings: list[dict[str, Any]]) -> set[str]:
    return {f["code"] for f in findings}


def window_codes(report: dict[str, Any], window_id: str) -> set[str]:
    w = window(report, window_id)
    out = codes(w["findings"])
    for r in w["revisions"]:
        for c in r["checks"].values():
            out |= {f["code"] for f in c["findings"] if f["severity"] != "info"}
    return out


def others_pass(report: dict[str, Any], *failing: str) -> None:
    bad = [
        (w["window_id"], w["verdict"])
        for w in report["windows"]
        if w["window_id"] not in failing and w["verdict"] != "pass"
    ]
    assert not bad, bad


@pytest.fixture(scope="module")
def logged_env(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    s3_server: Any,
    prefect_harness: None,
) -> Iterator[PipelineEnv]:
    env = make_env(tmp_path_factory.mktemp("logaudit"), kafka_bootstrap, s3_server, "per_window")
    anchor_demo_days(env)
    yield env


def test_untouched_log_passes_and_every_offset_is_accounted(
    logged_env: PipelineEnv, tmp_path: Path
) -> None:
    from streamnotary.report import validate_report

    report = log_audit(logged_env, state=tmp_path / "state")
    validate_report(report)
    log = report["log"]
    assert report["verdict"] == "pass", [f for f in log["findings"]]
    assert log["key_pinned"] and log["verdict"] == "pass" and log["anchored_heads"]
    with KafkaLog(logged_env.kafka_bootstrap, logged_env.topic) as kafka:
        high = {p: kafka.watermarks(p)[1] for p in kafka.partitions()}
    for c in log["coverage"]["partitions"]:
        assert (c["first"], c["last"]) == (0, high[c["partition"]])
        assert c["accounted"] == c["offsets"] and c["verdict"] == "pass", c
    assert sum(c["offsets"] for c in log["coverage"]["partitions"]) == sum(high.values())
    timeline = window(report, TARGET)["timeline"]
    assert timeline["closed_at"] <= timeline["anchored_at"] and timeline["seconds"] >= 0
    assert list((tmp_path / "state").glob("audit-state-*.json"))
    again = log_audit(logged_env, state=tmp_path / "state")
    assert again["verdict"] == "pass"


def test_deleted_window_objects_fail_that_window_by_name(logged_env: PipelineEnv) -> None:
    """Defence: windows are enumerated from the log. Listing the bucket would not see it."""
    store = logged_env.store()
    keys = [f(logged_env.topic, TARGET_KEY, 0) for f in (layout.checkpoint_key, layout.receipt_key)]
    cp = json.loads(store.get(keys[0]))
    if "pack" not in cp["payload"]:  # a pack holds the other windows too: it stays
        keys.append(layout.payload_key(logged_env.topic, TARGET_KEY, 0))
    saved = {k: store.get(k) for k in keys}
    for k in keys:
        store.delete(k)
    try:
        report = log_audit(logged_env)
    finally:
        for k, data in saved.items():
            store.put(k, data)
    assert window(report, TARGET)["verdict"] == "fail"
    assert {"checkpoint_missing", "receipt_missing"} <= window_codes(report, TARGET)
    others_pass(report, TARGET)


def test_first_message_dropped_and_anchored_consistently_fails_coverage(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, prefect_harness: None, monkeypatch: Any
) -> None:
    """The operator's pipeline leaves out the first message of a window and anchors the rest:
    checkpoint, payload, log and ledger all agree. Defence: coverage (every offset the
    runs read is in the ranges of the window it classifies into)."""
    from tasks import steps

    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    env.produce_observations(audit_observations())
    first = min(
        (o for o in audit_observations() if o.station_id == "00433"),
        key=lambda o: (not TARGET_KEY.contains(o.observed_at), o.observed_at),
    )
    with KafkaLog(env.kafka_bootstrap, env.topic) as kafka:
        found = [
            (m.partition, m.offset)
            for p in kafka.partitions()
            for m in kafka.read_range(p, 0, kafka.watermarks(p)[1], timeout_s=30)
            if m.value == canonical_bytes(first)
        ]
    ((partition, offset),) = found
    honest = steps.read_offset_ranges

    def dropping(settings: Any, ranges: Any) -> list[Any]:
        got = honest.fn(settings, ranges)
        return [m for m in got if (m.partition, m.offset) != (partition, offset)]

    monkeypatch.setattr(steps, "read_offset_ranges", dropping)
    with env.active():
        anchor_windows(drain=True)
    monkeypatch.undo()

    report = log_audit(env)

    assert report["verdict"] == "fail"
    target = window(report, TARGET)
    hits = [f for f in target["findings"] if f["code"] == "offset_outside_window"]
    assert [(f["partition"], f["offset"]) for f in hits] == [(partition, offset)]
    cov = next(c for c in report["log"]["coverage"]["partitions"] if c["partition"] == partition)
    assert cov["verdict"] == "fail" and cov["accounted"] == cov["offsets"] - 1
    assert report["log"]["verdict"] == "pass"  # everything the operator signed is consistent
    others_pass(report, TARGET)


def _forge_target(env: PipelineEnv) -> tuple[dict[str, Any], bytes, dict[int, tuple[int, int]]]:
    """TARGET's messages from Kafka with the first record's temperature changed, rebuilt
    by the pipeline's own functions: (checkpoint, payload bytes, ranges)."""
    import dataclasses
    import hashlib

    from tasks.checkpoint import PayloadRef, build_checkpoint, ranges_of
    from tasks.message import SourceMessage, classify
    from tasks.payload import encode_payload
    from tasks.window import WindowSpec
    from tasks.window_content import build_window

    topic = env.topic
    cp = env.checkpoints()[(TARGET, 0)]  # its own object, or in its run's checkpoint pack
    ranges = ranges_of(cp)
    spec = WindowSpec(TARGET_KEY.size_seconds)
    items = []
    with KafkaLog(env.kafka_bootstrap, topic) as kafka:
        for p, (lo, hi) in ranges.items():
            for m in kafka.read_range(p, lo, hi, timeout_s=30):
                c = classify(m, spec)
                if c.window == TARGET_KEY and c.record is not None and not items:
                    forged = dataclasses.replace(c.record, temperature_tenths=-999)
                    m = SourceMessage(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        canonical_bytes(forged),
                        m.timestamp_ms,
                    )
                    c = classify(m, spec)
                items.append(c)
    content = build_window(TARGET_KEY, [c for c in items if c.window == TARGET_KEY])
    payload = encode_payload(content.records)
    doc = build_checkpoint(
        content=content,
        topic=topic,
        revision=0,
        supersedes=None,
        close_reason=cp["window"]["close_reason"],
        payload=PayloadRef(cp["payload"]["uri"], hashlib.sha256(payload).hexdigest(), len(payload)),
        pipeline_version="forged",
    )
    return doc, payload, ranges


def _append_forged_run(
    env: PipelineEnv, doc: dict[str, Any], ranges: dict[int, tuple[int, int]]
) -> None:
    """A later run that logs (TARGET, r0) again with the forged digest, signed with the
    operator's key, and anchors its head on the ledger (no batch: runs anchor the log head)."""
    from tasks.checkpoint import checkpoint_digest
    from tasks.revision import receipt
    from tasks.run_log import head_entry, log_proof
    from tasks.tlog.entries import run_entry, window_entry

    store, topic = env.store(), env.topic
    digest = checkpoint_digest(doc)
    with env.active() as settings:
        signer, origin = load_signer(settings, create=False), log_origin(settings)
    reader = LogReader(store, topic, signer.named(origin).verifier(), origin)
    head, last = reader.checkpoint(), reader.last_entry()
    assert head is not None and last is not None
    run = last["run"] + 1
    entries = [
        window_entry(
            topic=topic,
            window_id=TARGET,
            revision=0,
            checkpoint_digest=digest,
            ranges={p: [r] for p, r in ranges.items()},
            supersedes=None,
            closed_at="2026-01-01T00:00:00Z",
            run=run,
        ),
        run_entry(
            topic=topic,
            run=run,
            read={},
            quarantined={},
            unattributable={},
            held_open={},
            cursor_digest=last["cursor_digest"],
            anchored_at="2026-01-01T00:00:01Z",
        ),
    ]
    new = LogWriter(store, topic, signer, origin).append(
        head.size, [entry_bytes(e) for e in entries]
    )
    with LocalLedger(ledger_path(env)) as ledger:
        head_ref = ledger.anchor(head_entry(topic, new.new.size, new.new.root.hex(), head.size))
    size, root = new.new.size, new.new.root.hex()
    proof = LogReader(store, topic, signer.named(origin).verifier(), origin).inclusion_proof(
        head.size, size
    )
    rc = receipt(
        topic,
        TARGET_KEY,
        0,
        digest,
        log_proof(origin, head.size, size, root, proof, new.note.decode()),
        head_ref,
        None,
    )
    store.put(layout.checkpoint_key(topic, TARGET_KEY, 0), json.dumps(doc).encode())
    store.put(layout.receipt_key(topic, TARGET_KEY, 0), json.dumps(rc).encode())


def test_a_signed_log_that_names_no_window_still_accounts_for_every_message(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, prefect_harness: None
) -> None:
    """The operator logs runs that read real records but list no window, anchored or held:
    the log names no window size to classify messages under. Before, the audit classified
    nothing, counted every offset as "without message" (info) and passed. Now every message
    is classified, and each record fails as unaccounted."""
    from tasks.run_log import head_entry
    from tasks.tlog.entries import run_entry

    env = make_env(tmp_path, kafka_bootstrap, s3_server, "per_window")
    env.produce_observations(audit_observations()[:24])
    with KafkaLog(env.kafka_bootstrap, env.topic) as kafka:
        high = {p: kafka.watermarks(p)[1] for p in kafka.partitions()}
    store, topic = env.store(), env.topic
    with env.active() as settings:
        signer, origin = load_signer(settings), log_origin(settings)
    forged = run_entry(
        topic=topic,
        run=1,
        read={p: (0, h) for p, h in high.items() if h},
        quarantined={},
        unattributable={},
        held_open={},
        cursor_digest="00" * 32,
        anchored_at="2026-01-01T00:00:01Z",
    )
    new = LogWriter(store, topic, signer, origin).append(0, [entry_bytes(forged)])
    with LocalLedger(ledger_path(env)) as ledger:
        ledger.anchor(head_entry(topic, new.new.size, new.new.root.hex(), 0))

    report = log_audit(env)
    coverage = report["log"]["coverage"]["partitions"]
    unaccounted = [f for c in coverage for f in c["findings"] if f["code"] == "offset_unaccounted"]
    assert report["verdict"] == "fail" and len(unaccounted) == 24


def test_rewrite_reanchored_after_delete_records_fails_not_not_checkable(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, prefect_harness: None
) -> None:
    """Kafka forgot the window (DeleteRecords); the operator rewrites it and re-anchors it
    in a later run. Defence: one log entry per (window, revision) -> duplicate_log_entry."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    anchor_demo_days(env)
    doc, payload, ranges = _forge_target(env)
    admin = AdminClient({"bootstrap.servers": env.kafka_bootstrap})
    cut = [TopicPartition(env.topic, p, hi) for p, (_lo, hi) in ranges.items()]
    for f in admin.delete_records(cut, request_timeout=10).values():
        f.result(timeout=10)
    env.store().put(layout.payload_key(env.topic, TARGET_KEY, 0), payload)
    _append_forged_run(env, doc, ranges)

    report = log_audit(env)

    target = window(report, TARGET)
    assert target["verdict"] == "fail"
    assert "duplicate_log_entry" in codes(target["findings"])
    assert report["log"]["verdict"] == "pass"  # the log itself is append-only and anchored


def _rebuild_log(env: PipelineEnv) -> None:
    """The operator deletes the log and re-appends every entry, run by run, with TARGET's
    window entry naming another digest, signed with the same key."""
    store, topic = env.store(), env.topic
    with env.active() as settings:
        signer, origin = load_signer(settings, create=False), log_origin(settings)
    reader = LogReader(store, topic, signer.named(origin).verifier(), origin)
    head = reader.checkpoint()
    assert head is not None
    entries = list(reader.entries(0, head.size))
    for k in list(store.list(f"log/{topic}/")):
        store.delete(k)
    writer = LogWriter(store, topic, signer, origin)
    size, batch = 0, []
    for e in entries:
        if e["type"] == "window" and e["window_id"] == TARGET:
            e = {**e, "checkpoint_digest": "00" * 32}
        batch.append(entry_bytes(e))
        if e["type"] == "run":
            writer.append(size, batch)
            size, batch = size + len(batch), []


def test_rebuilt_log_fails_against_anchored_heads_and_the_remembered_head(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, prefect_harness: None
) -> None:
    """Defences: the heads anchored on the ledger, and the head this auditor remembered.
    When the operator also rewrites the ledger (the embedded one is a file the operator
    controls), only the remembered head catches it: the threat model says so."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    anchor_demo_days(env)
    state = tmp_path / "auditor-state"
    assert log_audit(env, state=state)["verdict"] == "pass"
    saved_ledger = ledger_path(env).read_bytes()
    _rebuild_log(env)

    against_ledger = log_audit(env)
    assert "anchored_head_mismatch" in codes(against_ledger["log"]["findings"])

    _reanchor_heads(env)  # the operator rewrites the embedded ledger's head entries too
    fooled = log_audit(env)
    assert "anchored_head_mismatch" not in codes(fooled["log"]["findings"])
    caught = log_audit(env, state=state)
    assert "inconsistent_with_remembered_head" in codes(caught["log"]["findings"])
    assert caught["log"]["verdict"] == "fail"
    ledger_path(env).write_bytes(saved_ledger)


def _reanchor_heads(env: PipelineEnv) -> None:
    """Rebuild the embedded ledger file with every head entry naming the rebuilt log's root
    (a consistent hash chain: the file is the operator's)."""
    from storage.ledger.base import AnchorEntry

    store, topic = env.store(), env.topic
    reader = LogReader(store, topic)
    path = ledger_path(env)
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, kind, body FROM entries ORDER BY seq").fetchall()
    finally:
        db.close()
    fresh = path.with_suffix(".rebuilt")
    with LocalLedger(fresh) as new:
        for key, kind, body in rows:
            doc = json.loads(body)
            if kind == "head":
                doc["root"] = reader.root(doc["size"]).hex()
            new.anchor(AnchorEntry(key=key, kind=kind, body=doc))
    shutil.move(fresh, path)


# ---------------------------------------------------------------------------------------
# Proof bundle v2 on the logged data: both verifiers, pinned key, escaped output
# ---------------------------------------------------------------------------------------

VERIFIER = Path(__file__).resolve().parents[1] / "docs" / "verify_bundle.py"


@pytest.fixture(scope="module")
def bundle_v2(logged_env: PipelineEnv) -> dict[str, Any]:
    from flows.audit import parse_time, prove_record
    from storage.logkey import log_verifier

    with logged_env.active() as settings, LocalLedger(ledger_path(logged_env)) as ledger:
        return prove_record(
            store=logged_env.store(),
            ledger=ledger,
            topic=settings.topic,
            station="00433",
            at=parse_time("2019-09-07T17:00Z"),
            window_seconds=settings.window_seconds,
            verifier=log_verifier(settings),
        )


@pytest.fixture(scope="module")
def trust_file(logged_env: PipelineEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "trust.json"
    with logged_env.active() as settings:
        path.write_text(json.dumps(trust_policy(settings)))
    return path


def _standalone(*args: str | Path) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-I", "-S", str(VERIFIER), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_v2_bundle_verifies_with_the_pinned_key_in_both_verifiers(
    bundle_v2: dict[str, Any], trust_file: Path, tmp_path: Path
) -> None:
    from tasks.proof_bundle import verify_bundle

    assert bundle_v2["schema"] == "streamnotary.proof-bundle/2"
    trust = TrustPolicy.load(trust_file)
    steps = verify_bundle(bundle_v2, (trust.origin, trust.verifier))
    assert any(s.startswith(f"proved: {TARGET} revision 0") for s in steps)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle_v2))
    ok = _standalone("--trust", trust_file, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"proved: {TARGET} revision 0" in ok.stdout
    assert _standalone(path).returncode == 1  # v2 without a pinned key: refused


def test_bundle_signed_by_another_key_is_rejected_by_both_verifiers(
    bundle_v2: dict[str, Any], tmp_path: Path
) -> None:
    from tasks.proof_bundle import ProofBundleError, verify_bundle
    from tasks.tlog.note import Signer

    stranger = Signer.generate(bundle_v2["log"]["origin"])
    policy = {
        "schema": "streamnotary.trust/v1",
        "log": {"origin": bundle_v2["log"]["origin"], "verifier_key": stranger.verifier().encode()},
        "ledger": {"backend": "local", "path_hint": "ledger.sqlite3", "genesis": None},
    }
    trust_path = tmp_path / "stranger.json"
    trust_path.write_text(json.dumps(policy))
    with pytest.raises(ProofBundleError):
        verify_bundle(bundle_v2, (stranger.name, stranger.verifier()))
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle_v2))
    no = _standalone("--trust", trust_path, path)
    assert no.returncode == 1 and "NOT VERIFIED" in no.stdout


def test_hostile_bundle_text_is_printed_escaped_by_both_verifiers(
    bundle_v2: dict[str, Any], trust_file: Path, tmp_path: Path, capsys: Any
) -> None:
    """The ledger reference's backend name is not covered by any hash. Both verifiers
    refuse a reference that does not name the pinned ledger, and print why, with the
    bundle's text in the reason. Defence: `printable`: a forged "VERIFIED" line or a
    terminal escape from the bundle never reaches the terminal."""
    from streamnotary.cli import main as cli_main

    hostile = json.loads(json.dumps(bundle_v2))
    hostile["anchor"]["ref"]["backend"] = "local\nVERIFIED: forged \x1b[2J\u2028"
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(hostile))
    standalone = _standalone("--trust", trust_file, path)
    rc = cli_main(["verify-proof", "--trust", str(trust_file), str(path)])
    ours = capsys.readouterr().out
    for out in (standalone.stdout, ours):
        assert "\x1b" not in out and "\u2028" not in out
        lines = out.splitlines()
        assert not [line for line in lines if line.startswith("VERIFIED")], out
        assert lines[-1].startswith("NOT VERIFIED") and "pinned local ledger" in lines[-1]
        assert "local\\nVERIFIED: forged \\x1b[2J\\u2028" in out
    assert standalone.returncode == 1 and rc == 1


def test_online_verification_reports_a_newer_revision(
    logged_env: PipelineEnv,
    bundle_v2: dict[str, Any],
    trust_file: Path,
    tmp_path: Path,
    capsys: Any,
) -> None:
    """Runs last in this module: late data gives TARGET a revision 1, after which the r0
    bundle still verifies but `verify-proof --online` says it is superseded (exit 2)."""
    from datetime import timedelta

    from streamnotary.cli import main as cli_main
    from tasks.record import Observation

    path = tmp_path / "r0.json"
    path.write_text(json.dumps(bundle_v2))
    with logged_env.active():
        assert cli_main(["verify-proof", "--online", "--trust", str(trust_file), str(path)]) == 0
    assert f"no newer revision of {TARGET}" in capsys.readouterr().out
    late = Observation("00433", TARGET_KEY.start + timedelta(minutes=30), 123, 456, 3)
    logged_env.produce_observations([late])
    with logged_env.active():
        anchor_windows(drain=True)
        rc = cli_main(["verify-proof", "--online", "--trust", str(trust_file), str(path)])
    out = capsys.readouterr().out
    assert rc == 2 and f"NEWER REVISION: {TARGET} r1" in out and "SUPERSEDED" in out
    assert log_audit(logged_env)["verdict"] == "pass"  # r1 logged, covered, consistent
