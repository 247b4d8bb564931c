"""Pure checks of the anchor log side of the audit (tasks.audit.log, tasks.audit.coverage).

Logs are built with the writer's own pure functions (`tasks.tlog.entries`, `tasks.merkle`,
`tasks.tlog.checkpoint`), so every verdict is pinned to one precise cause; the same checks
run on logs written by the real pipeline in tests/test_audit_log_drills.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from storage.ledger.base import AnchorRef
from tasks.audit.coverage import Accounting, check_entries, check_tiling, index_log
from tasks.audit.evidence import LedgerObservation
from tasks.audit.log import HeadEvidence, LogEvidence, RememberedHead, check_log
from tasks.canonical import canonical_digest
from tasks.merkle import consistency_proof, merkle_root
from tasks.message import SourceMessage, classify
from tasks.record import Observation, canonical_bytes
from tasks.tlog.checkpoint import LogCheckpoint, sign_checkpoint
from tasks.tlog.entries import entry_bytes, run_entry, window_entry
from tasks.tlog.note import Signer
from tasks.window import WindowSpec

TOPIC = "t"
ORIGIN = "streamnotary/t"
SPEC = WindowSpec(86_400)
DAY = datetime(2019, 9, 7, tzinfo=UTC)
KEY = SPEC.key_of("00433", DAY)
SIGNER = Signer.generate(ORIGIN)


def _msgs(n: int) -> list[SourceMessage]:
    out = []
    for i in range(n):
        o = Observation("00433", DAY + timedelta(hours=i), 100 + i, 800, 3)
        ts = int((DAY + timedelta(hours=i)).timestamp() * 1000)
        out.append(SourceMessage(TOPIC, 0, i, b"00433", canonical_bytes(o), ts))
    return out


def _window(first: int, end: int, revision: int = 0, run: int = 1, **kw: Any) -> dict[str, Any]:
    return window_entry(
        topic=TOPIC,
        window_id=KEY.window_id,
        revision=revision,
        checkpoint_digest=kw.get("digest", "ab" * 32),
        ranges={0: [(first, end)]},
        supersedes=kw.get("supersedes"),
        closed_at="2019-09-08T02:00:00Z",
        run=run,
    )


def _run(run: int, read: tuple[int, int], **kw: Any) -> dict[str, Any]:
    return run_entry(
        topic=TOPIC,
        run=run,
        read={0: read},
        quarantined={},
        unattributable=kw.get("unattributable", {}),
        held_open=kw.get("held_open", {}),
        cursor_digest="cd" * 32,
        anchored_at="2019-09-08T02:00:05Z",
    )


def _account(entries: list[dict[str, Any]], msgs: list[SourceMessage]) -> Accounting:
    acc = Accounting(index_log(entries))
    for m in msgs:
        acc.add([classify(m, SPEC)])
    return acc


def test_every_offset_in_its_window_is_covered() -> None:
    msgs = _msgs(24)
    acc = _account([_window(0, 24), _run(1, (0, 24))], msgs)
    (cov,) = acc.finish({0: (0, 24)})
    assert (cov.first, cov.last, cov.in_windows, cov.verdict) == (0, 24, 24, "pass")
    assert not acc.window_findings


def test_dropped_first_message_fails_its_window_with_partition_and_offset() -> None:
    msgs = _msgs(24)
    acc = _account([_window(1, 24), _run(1, (0, 24))], msgs)
    (cov,) = acc.finish({0: (0, 24)})
    (finding,) = acc.window_findings[KEY.window_id]
    assert (finding.code, finding.partition, finding.offset) == ("offset_outside_window", 0, 0)
    assert cov.verdict == "fail"


def test_dropped_first_message_with_the_read_range_moved_too_leaves_a_gap() -> None:
    entries = [_run(1, (0, 10)), _window(11, 24, run=2), _run(2, (11, 24))]
    found = check_tiling(index_log(entries))[0]
    assert [(f.code, f.offset) for f in found] == [("read_gap", 10)]


def test_overlapping_reads_and_duplicate_revisions_fail() -> None:
    entries = [_window(0, 24), _run(1, (0, 24)), _window(0, 24, run=2), _run(2, (20, 30))]
    index = index_log(entries)
    assert [f.code for f in check_tiling(index)[0]] == ["read_overlap"]
    per_window, _ = check_entries(index)
    assert [f.code for f in per_window[KEY.window_id]] == ["duplicate_log_entry"]


def test_held_open_and_unattributable_offsets_are_accounted() -> None:
    msgs = _msgs(4)
    junk = SourceMessage(TOPIC, 0, 4, None, b"not json", None)
    held = {KEY.window_id: {0: [(0, 4)]}}
    entries = [_run(1, (0, 5), held_open=held, unattributable={0: [4]})]
    acc = _account(entries, [*msgs, junk])
    (cov,) = acc.finish({0: (0, 5)})
    assert (cov.held_open, cov.unattributable, cov.verdict) == (4, 1, "pass")
    forgot = _account([_run(1, (0, 5), held_open=held)], [*msgs, junk])
    assert [f.code for f in forgot.finish({0: (0, 5)})[0].findings] == ["offset_unaccounted"]


def test_retention_makes_coverage_not_checkable_never_pass() -> None:
    msgs = _msgs(24)
    acc = _account([_window(0, 24), _run(1, (0, 24))], msgs[10:])
    (cov,) = acc.finish({0: (10, 24)})
    assert (cov.not_read, cov.verdict) == (10, "not_checkable")


# ---------------------------------------------------------------------------------------
# Heads: signature, anchoring, consistency, remembered head
# ---------------------------------------------------------------------------------------


def _leaves(n: int) -> list[bytes]:
    return [entry_bytes(_run(i + 1, (i, i + 1))) for i in range(n)]


def _anchored(size: int, root: bytes, previous: int) -> LedgerObservation:
    body = {
        "kind": "head",
        "topic": TOPIC,
        "size": size,
        "root": root.hex(),
        "previous_size": previous,
    }
    ref = AnchorRef("local", f"head/{TOPIC}/{size}", canonical_digest(body), {"seq": size}, 1, 1)
    return LedgerObservation(ref.key, ref=ref, body=body)


def _evidence(leaves: list[bytes], anchored_roots: dict[int, bytes] | None = None) -> LogEvidence:
    """A log whose runs end at sizes 2, 4, ..., anchored with `anchored_roots` (or its own)."""
    size = len(leaves)
    head = LogCheckpoint(ORIGIN, size, merkle_root(leaves))
    ev = LogEvidence(ORIGIN, checkpoint_note=sign_checkpoint(head, SIGNER))
    previous = 0
    for s in range(2, size + 1, 2):
        root = merkle_root(leaves[:s])
        h = HeadEvidence(
            s,
            root,
            previous,
            proof_from_previous=consistency_proof(leaves[:s], previous) if previous else [],
        )
        h.anchored = _anchored(s, (anchored_roots or {}).get(s, root), previous)
        ev.heads.append(h)
        previous = s
    return ev


def test_consistent_signed_anchored_log_passes() -> None:
    res, head = check_log(_evidence(_leaves(6)), SIGNER.verifier())
    assert res.verdict == "pass", res.to_json()
    assert head is not None and head.size == 6


def test_checkpoint_signed_by_another_key_fails() -> None:
    res, _ = check_log(_evidence(_leaves(6)), Signer.generate(ORIGIN).verifier())
    assert "log_signature_invalid" in {f.code for f in res.findings}


def test_rebuilt_log_fails_against_heads_anchored_before() -> None:
    old = _leaves(6)
    rebuilt = [*old[:3], entry_bytes(_run(99, (2, 3))), *old[4:]]
    anchored = {s: merkle_root(old[:s]) for s in (2, 4, 6)}
    res, _ = check_log(_evidence(rebuilt, anchored), SIGNER.verifier())
    assert {f.code for f in res.findings} >= {"anchored_head_mismatch"}
    assert res.verdict == "fail"


def test_rebuilt_log_fails_against_the_remembered_head_even_if_the_ledger_agrees() -> None:
    old = _leaves(6)
    rebuilt = [*old[:3], entry_bytes(_run(99, (2, 3))), *old[4:]]
    ev = _evidence(rebuilt)  # ledger rewritten along with the log (local ledger)
    ev.remembered = RememberedHead(ORIGIN, 4, merkle_root(old[:4]).hex())
    ev.remembered_proof = consistency_proof(rebuilt, 4)
    res, _ = check_log(ev, SIGNER.verifier())
    assert [f.code for f in res.findings] == ["inconsistent_with_remembered_head"]


def test_rolled_back_log_fails_against_the_remembered_head() -> None:
    leaves = _leaves(4)
    ev = _evidence(leaves)
    ev.remembered = RememberedHead(ORIGIN, 6, merkle_root(_leaves(6)).hex())
    res, _ = check_log(ev, SIGNER.verifier())
    assert [f.code for f in res.findings] == ["log_rolled_back"]


def test_unanchored_head_fails() -> None:
    ev = _evidence(_leaves(4))
    ev.heads[1].anchored = LedgerObservation(f"head/{TOPIC}/4")
    res, _ = check_log(ev, SIGNER.verifier())
    assert [f.code for f in res.findings] == ["head_not_anchored"]


def test_remembered_state_round_trips_and_rejects_junk() -> None:
    head = RememberedHead(ORIGIN, 4, "00" * 32, {"seq": 3, "entry_hash": "ff" * 32})
    assert RememberedHead.from_json(head.to_json()) == head
    for junk in ({}, [], {"schema": "streamnotary.audit-state/1", "size": -1}):
        try:
            RememberedHead.from_json(junk)
        except ValueError:
            continue
        raise AssertionError(f"accepted {junk!r}")


def test_messages_after_the_last_run_are_left_to_the_late_data_scan() -> None:
    msgs = _msgs(24)
    acc = _account([_window(0, 20), _run(1, (0, 20))], msgs)
    (cov,) = acc.finish({0: (0, 24)})
    assert (cov.last, cov.in_windows, cov.verdict) == (20, 20, "pass")
    assert not acc.window_findings
