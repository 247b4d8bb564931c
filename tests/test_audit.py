"""Pure audit checks on hand-built evidence: the verdicts a real run rarely reaches.

Retention that removed offsets (not_checkable), unconfirmed anchors (pending), and broken
revision chains are produced here directly with the same pure functions the pipeline
uses (`build_window`, `encode_payload`, `build_checkpoint`, `Batch`), so each verdict is
pinned to a precise cause. The receipts here are v1 (batch anchors, written before the
log head replaced the batch root): they exercise the legacy path the audit keeps reading.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from storage import layout
from storage.ledger.base import AnchorRef
from tasks.audit import (
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    audit_window,
    integrity_from_error,
)
from tasks.batch import Batch, BatchMember
from tasks.canonical import canonical_digest
from tasks.checkpoint import (
    PayloadRef,
    Supersedes,
    build_checkpoint,
    checkpoint_digest,
    ranges_of,
)
from tasks.merkle import inclusion_proof, merkle_root
from tasks.message import SourceMessage, classify
from tasks.payload import encode_payload
from tasks.record import Observation, canonical_bytes
from tasks.revision import legacy_receipt as build_receipt
from tasks.revision import receipt as build_receipt_v2
from tasks.revision import window_entry_body
from tasks.run_log import log_proof
from tasks.tlog.entries import entry_bytes
from tasks.tlog.entries import window_entry as log_window_entry
from tasks.window import WindowSpec
from tasks.window_content import build_window

TOPIC = "t"
SPEC = WindowSpec(86_400)
DAY = datetime(2019, 9, 7, tzinfo=UTC)
KEY = SPEC.key_of("00433", DAY)


def _messages(n: int, first_offset: int = 0) -> list[SourceMessage]:
    out = []
    for i in range(n):
        o = Observation("00433", DAY + timedelta(hours=i), 100 + i, 800, 3)
        out.append(SourceMessage(TOPIC, 0, first_offset + i, b"00433", canonical_bytes(o), None))
    return out


def _revision(
    msgs: list[SourceMessage], revision: int, prev: dict[str, Any] | None, *, confirmations: int = 1
) -> tuple[RevisionInputs, dict[str, Any]]:
    content = build_window(KEY, [classify(m, SPEC) for m in msgs])
    payload = encode_payload(content.records)
    pkey = layout.payload_key(TOPIC, KEY, revision)
    cp = build_checkpoint(
        content=content,
        topic=TOPIC,
        revision=revision,
        supersedes=None if prev is None else Supersedes(revision - 1, checkpoint_digest(prev)),
        close_reason="drain",
        payload=PayloadRef(f"file:///{pkey}", hashlib.sha256(payload).hexdigest(), len(payload)),
        pipeline_version="test",
    )
    digest = checkpoint_digest(cp)
    batch = Batch.of(TOPIC, [BatchMember(KEY.window_id, revision, digest)])
    root = batch.root.hex()
    body = {"kind": "batch", "topic": TOPIC, "root": root, "size": 1}
    ref = AnchorRef(
        "local",
        layout.batch_entry_key(TOPIC, root),
        canonical_digest(body),
        {"seq": 1},
        confirmations,
        1,
    )
    receipt = build_receipt(TOPIC, KEY, revision, digest, batch, ref, None)
    inp = RevisionInputs(
        revision=revision,
        receipt_key=layout.receipt_key(TOPIC, KEY, revision),
        checkpoint_key=layout.checkpoint_key(TOPIC, KEY, revision),
        payload_key=pkey,
        receipt=receipt,
        checkpoint=cp,
        payload=payload,
        payload_uri=f"file:///{pkey}",
        batch_entry=LedgerObservation(ref.key, ref=ref, body=body),
    )
    return inp, cp


def _view(msgs: list[SourceMessage], start: int = 0, low: int = 0) -> KafkaView:
    end = max(m.offset for m in msgs) + 1 if msgs else start
    kept = [m for m in msgs if m.offset >= start]
    return KafkaView.of(
        [PartitionScan(0, start, end, low, messages=len(kept))], [classify(m, SPEC) for m in kept]
    )


def _verdicts(audit: Any, revision: int = 0) -> dict[str, str]:
    r = next(r for r in audit.revisions if r.revision == revision)
    return {name: c.verdict for name, c in r.checks.items()}


def test_intact_window_passes_all_checks() -> None:
    msgs = _messages(24)
    inp, _ = _revision(msgs, 0, None)
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    assert set(_verdicts(audit).values()) == {"pass"}


def test_retention_removed_offsets_make_completeness_not_checkable_never_pass() -> None:
    msgs = _messages(24, first_offset=10)
    inp, _ = _revision(msgs, 0, None)
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs, start=20, low=20), LedgerIntegrity("local"))
    assert _verdicts(audit)["completeness"] == "not_checkable"
    finding = audit.revisions[0].checks["completeness"].findings[0]
    assert (finding.code, finding.partition, finding.offset) == ("retention_removed", 0, 10)
    assert audit.verdict == "not_checkable"


def test_unconfirmed_anchor_is_pending_not_pass() -> None:
    msgs = _messages(24)
    inp, _ = _revision(msgs, 0, None, confirmations=0)
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    assert _verdicts(audit)["anchored"] == "pending"
    assert audit.verdict == "pending"


def test_changed_kafka_record_is_named_by_offset() -> None:
    msgs = _messages(24)
    inp, _ = _revision(msgs, 0, None)
    other = Observation("00433", DAY + timedelta(hours=3), -50, 800, 3)
    changed = [
        *msgs[:3],
        SourceMessage(TOPIC, 0, 3, b"00433", canonical_bytes(other), None),
        *msgs[4:],
    ]
    audit = audit_window(KEY, TOPIC, [inp], _view(changed), LedgerIntegrity("local"))
    findings = audit.revisions[0].checks["completeness"].findings
    assert [(f.code, f.partition, f.offset) for f in findings if f.code == "record_changed"] == [
        ("record_changed", 0, 3)
    ]


def test_revision_chain_resolves_and_only_latest_scans_late_data() -> None:
    msgs = _messages(24)
    r0, cp0 = _revision(msgs[:20], 0, None)
    r1, _ = _revision(msgs, 1, cp0)
    audit = audit_window(KEY, TOPIC, [r0, r1], _view(msgs), LedgerIntegrity("local"))
    assert audit.verdict == "pass", [r.to_json() for r in audit.revisions]
    assert [r.latest for r in audit.revisions] == [False, True]
    assert {f.code for f in audit.revisions[0].checks["revisions"].findings} == {"superseded"}


def test_dangling_supersedes_link_and_gap_fail() -> None:
    msgs = _messages(24)
    r0, cp0 = _revision(msgs[:20], 0, None)
    r1, _ = _revision(msgs, 1, cp0)
    wrong = copy.deepcopy(cp0)
    wrong["counts"]["records"] += 1  # r1 links to a digest no stored r0 has
    r1_dangling, _ = _revision(msgs, 1, wrong)
    audit = audit_window(KEY, TOPIC, [r0, r1_dangling], _view(msgs), LedgerIntegrity("local"))
    assert {f.code for f in audit.revisions[1].checks["revisions"].findings} == {"dangling_link"}
    gap = audit_window(KEY, TOPIC, [r1], _view(msgs), LedgerIntegrity("local"))
    assert "revision_gap" in {f.code for f in gap.revisions[0].checks["revisions"].findings}
    assert gap.verdict == "fail"


def test_broken_hash_chain_is_attributed_to_the_entry_at_that_seq() -> None:
    msgs = _messages(24)
    inp, _ = _revision(msgs, 0, None)
    from storage.ledger.base import LedgerCorrupted

    elsewhere = integrity_from_error("local", LedgerCorrupted("entry seq 7: body does not match"))
    here = integrity_from_error("local", LedgerCorrupted("entry seq 1: body does not match"))
    assert (elsewhere.seq, here.seq) == (7, 1)
    assert audit_window(KEY, TOPIC, [inp], _view(msgs), elsewhere).verdict == "pass"
    assert audit_window(KEY, TOPIC, [inp], _view(msgs), here).verdict == "fail"


def test_object_names_never_raise_and_say_what_they_name() -> None:
    from tasks.audit.documents import parse_object_name

    good = parse_object_name(TOPIC, layout.checkpoint_key(TOPIC, KEY, 3))
    assert (good.window, good.revision, good.problem) == (KEY, 3, None)
    readme = parse_object_name(
        TOPIC, f"checkpoints/{TOPIC}/00433/20190907T000000Z_86400s/README.json"
    )
    assert (readme.window, readme.revision) == (KEY, None)
    assert readme.finding().severity == "info" and "README.json" in readme.finding().message
    huge = parse_object_name(TOPIC, f"receipts/{TOPIC}/00433/20190907T000000Z_{10**30}s/r0000.json")
    assert huge.window is None and huge.finding().severity == "fail"
    for hostile in ("", "/", "checkpoints", f"payloads/{TOPIC}/a/b/c/d", "x\n\x1b[2J/y"):
        assert parse_object_name(TOPIC, hostile).problem is not None
    # a partition group's windows are under its own keys, and only there
    group = f"{TOPIC}/p0_1"
    scoped = parse_object_name(group, layout.checkpoint_key(group, KEY, 3))
    assert (scoped.window, scoped.revision, scoped.problem) == (KEY, 3, None)
    assert parse_object_name(TOPIC, layout.checkpoint_key(group, KEY, 3)).problem is not None
    assert parse_object_name(group, layout.checkpoint_key(TOPIC, KEY, 3)).problem is not None


def test_hostile_documents_fail_their_revision_and_never_raise() -> None:
    msgs = _messages(24)
    for hostile in ({}, {"schema": "streamnotary.checkpoint/1"}, {"merkle": []}):
        inp, _ = _revision(msgs, 0, None)
        inp.checkpoint = hostile
        audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
        anchored = audit.revisions[0].checks["anchored"]
        assert "checkpoint_invalid" in {f.code for f in anchored.findings}
        assert audit.verdict == "fail"
    inp, _ = _revision(msgs, 0, None)
    inp.receipt = {"batch": "not an object", "ledger": None}
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    assert {f.code for f in audit.revisions[0].checks["anchored"].findings} == {"receipt_invalid"}
    assert audit.revisions[0].checks["completeness"].verdict == "pass"  # the rest still ran


def test_a_window_named_only_by_stray_objects_is_reported_not_raised() -> None:
    from tasks.audit import Finding

    stray = Finding("info", "stray_object", "stray object 'README.json'")
    audit = audit_window(KEY, TOPIC, [], _view([]), LedgerIntegrity("local"), [stray])
    assert audit.revisions == [] and audit.latest_revision is None
    assert audit.to_json()["findings"] == [stray.to_json()]


# -- receipts v2 and the layout without receipts (the log head replaced the batch) --------


def _logged_revision(msgs: list[SourceMessage], *, with_receipt: bool) -> RevisionInputs:
    """A revision as runs anchor it now: a window entry at index 0 of a two-leaf log whose
    head (size 2) is anchored, a keyed window entry pointing at it, and a receipt v2 (layout
    per_window) or none (layout pack, as the run entry records)."""
    inp, cp = _revision(msgs, 0, None)
    digest = checkpoint_digest(cp)
    entry = log_window_entry(
        topic=TOPIC,
        window_id=KEY.window_id,
        revision=0,
        checkpoint_digest=digest,
        ranges={p: [r] for p, r in ranges_of(cp).items()},
        supersedes=None,
        closed_at="2019-09-08T01:00:00Z",
        run=1,
    )
    leaves = [entry_bytes(entry), b'{"type":"run"}']
    root = merkle_root(leaves).hex()
    body = window_entry_body(TOPIC, KEY, 0, cp, 0, 2)
    window_ref = AnchorRef(
        "local", layout.window_entry_key(TOPIC, KEY, 0), canonical_digest(body), {"seq": 2}, 1, 1
    )
    head_body = {"kind": "head", "topic": TOPIC, "size": 2, "root": root, "previous_size": 0}
    head_ref = AnchorRef(
        "local", layout.head_entry_key(TOPIC, 2), canonical_digest(head_body), {"seq": 1}, 1, 1
    )
    proof = log_proof("o", 0, 2, root, inclusion_proof(leaves, 0), "note")
    inp.receipt = (
        build_receipt_v2(TOPIC, KEY, 0, digest, proof, head_ref, window_ref)
        if with_receipt
        else None
    )
    inp.batch_entry = None
    inp.window_entry = LedgerObservation(window_ref.key, ref=window_ref, body=body)
    inp.log_entry, inp.log_index, inp.log_size = entry, 0, 2
    inp.receipt_expected = with_receipt
    return inp


def test_receipt_v2_and_no_receipt_in_layout_pack_pass_without_any_batch() -> None:
    msgs = _messages(24)
    for with_receipt in (True, False):
        inp = _logged_revision(msgs, with_receipt=with_receipt)
        audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
        assert set(_verdicts(audit).values()) == {"pass"}, (with_receipt, audit)


def test_missing_receipt_fails_unless_the_log_says_the_run_wrote_none() -> None:
    msgs = _messages(24)
    inp = _logged_revision(msgs, with_receipt=False)
    inp.receipt_expected = True  # the run entry has no layout "pack": a receipt was due
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    (finding,) = audit.revisions[0].checks["anchored"].findings
    assert finding.code == "receipt_missing" and KEY.window_id in audit.window_id


def test_receipt_v2_with_a_wrong_log_proof_or_window_entry_fails() -> None:
    msgs = _messages(24)
    inp = _logged_revision(msgs, with_receipt=True)
    assert inp.receipt is not None
    inp.receipt["log"]["proof"] = ["00" * 32]
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    codes = {f.code for f in audit.revisions[0].checks["anchored"].findings}
    assert codes == {"log_proof_invalid"}

    inp = _logged_revision(msgs, with_receipt=False)
    assert inp.window_entry is not None and inp.window_entry.body is not None
    inp.log_index = 5  # the keyed entry points elsewhere than the log holds the revision
    audit = audit_window(KEY, TOPIC, [inp], _view(msgs), LedgerIntegrity("local"))
    codes = {f.code for f in audit.revisions[0].checks["anchored"].findings}
    assert codes == {"window_entry_mismatch"}
