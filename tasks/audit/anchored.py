"""(a) anchored: the stored checkpoint is the one the anchored log commits to.

The checkpoint digest (SHA-256 of its RFC 8785 bytes) must be the one the revision's
window entry in the anchor log names; the log itself (signature, anchored heads,
consistency) is check "log" (`tasks.audit.log`). A v2 receipt's inclusion proof must take
that entry to the root of its run's signed head, and on ledgers with keyed items the
window entry must commit to the checkpoint and point at the entry (`log_index`,
`log_size`). A missing receipt fails unless the log says its run wrote none (layout pack).

Legacy path: a v1 receipt (`batch` member) is checked as before the log head replaced
the batch root: the digest's audit path in the run's batch tree and the batch ledger entry.
"""

from __future__ import annotations

from typing import Any

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, PENDING, CheckResult
from tasks.audit.evidence import (
    LedgerIntegrity,
    LedgerObservation,
    RevisionInputs,
    foreign_writers,
)
from tasks.batch import verify_batch_proof
from tasks.canonical import canonical_digest
from tasks.checkpoint import checkpoint_digest, ranges_of
from tasks.merkle import MerkleError, verify_inclusion
from tasks.tlog.entries import LogEntryError, entry_bytes
from tasks.window import WindowKey


def check_anchored(
    key: WindowKey, topic: str, inp: RevisionInputs, integrity: LedgerIntegrity
) -> tuple[CheckResult, str | None]:
    """Is the stored checkpoint the one the ledger commits to? Returns (result, digest)."""
    res = CheckResult("anchored")
    cp = inp.checkpoint
    digest: str | None = None
    if cp is None:
        code = "checkpoint_invalid" if inp.checkpoint_invalid else "checkpoint_missing"
        res.add(FAIL, code, f"checkpoint {inp.checkpoint_key}: {inp.checkpoint_problem}")
    else:  # screened: conforms to checkpoint.schema.json (tasks.audit.window.screen)
        digest = checkpoint_digest(cp)
        named = (cp["window"]["id"], cp["revision"], cp["source"]["topic"])
        if named != (key.window_id, inp.revision, topic):
            res.add(
                FAIL,
                "checkpoint_misplaced",
                f"checkpoint at {inp.checkpoint_key} names {named[0]} r{named[1]} of topic "
                f"{named[2]!r}",
            )
    _check_log_entry(res, inp, cp, digest)
    rc = inp.receipt
    if rc is None:
        if inp.receipt_invalid or inp.receipt_expected:
            code = "receipt_invalid" if inp.receipt_invalid else "receipt_missing"
            res.add(FAIL, code, f"receipt {inp.receipt_key}: {inp.receipt_problem}")
            return res, digest
        # layout pack: no receipt by design; the log entry (authenticated by the signed,
        # anchored log, check "log") is the proof, and the keyed entry must point at it
        _check_window_entry(res, key, topic, inp, cp, digest, None, integrity)
        return res, digest
    if (rc["window_id"], rc["revision"], rc["topic"]) != (key.window_id, inp.revision, topic):
        res.add(FAIL, "receipt_misplaced", f"receipt at {inp.receipt_key} names another window")
    anchored_digest = str(rc["checkpoint_digest"])
    if digest is not None and digest != anchored_digest:
        res.add(
            FAIL,
            "checkpoint_digest_mismatch",
            f"stored checkpoint digests to {digest}, the anchored digest is {anchored_digest} "
            "(the checkpoint was changed after anchoring)",
        )
    if "batch" in rc:
        _check_batch_receipt(res, key, topic, inp, cp, digest or anchored_digest, integrity)
        return res, digest
    _check_log_proof(res, inp, rc["log"])
    _check_window_entry(
        res, key, topic, inp, cp, anchored_digest, rc["ledger"]["window"], integrity
    )
    return res, digest


def _check_log_proof(res: CheckResult, inp: RevisionInputs, proof: dict[str, Any]) -> None:
    """A v2 receipt's inclusion proof takes the logged window entry to the root it names.

    That root is the log's at that size only if the signed note the receipt carries
    verifies and matches the log (check "log": signed_head_not_in_log), which also checks
    that the head of that size is anchored.
    """
    entry = inp.log_entry
    if entry is None:
        return  # attach_log reports not_in_log (FAIL: the receipt claims a log proof)
    if inp.log_index is not None and proof["index"] != inp.log_index:
        res.add(
            FAIL,
            "receipt_log_index_mismatch",
            f"receipt names log index {proof['index']}, the log has the entry at {inp.log_index}",
        )
    try:
        verify_inclusion(
            entry_bytes(entry),
            proof["index"],
            proof["size"],
            [bytes.fromhex(h) for h in proof["proof"]],
            bytes.fromhex(proof["root"]),
        )
    except (MerkleError, LogEntryError, ValueError) as exc:
        res.add(
            FAIL,
            "log_proof_invalid",
            f"the receipt's inclusion proof does not take the window entry to root "
            f"{proof['root'][:16]}... of size {proof['size']}: {exc}",
        )


def _check_window_entry(
    res: CheckResult,
    key: WindowKey,
    topic: str,
    inp: RevisionInputs,
    cp: dict[str, Any] | None,
    digest: str | None,
    receipt_ref: dict[str, Any] | None,
    integrity: LedgerIntegrity,
) -> None:
    """The keyed window entry (ledgers with keys) commits to the checkpoint and points to
    the revision's place in the log: `{..., log_index, log_size}`."""
    if receipt_ref is None and (inp.window_entry is None or inp.window_entry.ref is None):
        return  # ledger without keyed items (or none observed): the head anchors it
    expected = {
        "kind": "window",
        "topic": topic,
        "window_id": key.window_id,
        "station_id": key.station_id,
        "revision": inp.revision,
        "checkpoint_digest": digest,
        "merkle_root": (cp or {}).get("merkle", {}).get("root"),
        "log_index": inp.log_index,
        "log_size": inp.log_size,
    }
    _check_entry(res, "window", inp.window_entry, expected, receipt_ref, integrity)


def _check_batch_receipt(
    res: CheckResult,
    key: WindowKey,
    topic: str,
    inp: RevisionInputs,
    cp: dict[str, Any] | None,
    digest: str,
    integrity: LedgerIntegrity,
) -> None:
    """Legacy path: a v1 receipt's batch proof, its batch entry and batch-era window entry.
    Runs no longer anchor batches, but their anchors stay verifiable (docs/formats.md)."""
    rc = inp.receipt or {}
    batch, ledger_refs = rc["batch"], rc["ledger"]
    try:
        verify_batch_proof(digest, batch)
    except (MerkleError, KeyError, TypeError, ValueError) as exc:
        res.add(
            FAIL,
            "batch_proof_invalid",
            f"checkpoint digest is not in batch {batch.get('root')}: {exc}",
        )
    batch_root = str(batch.get("root"))
    expected_batch_body = {
        "kind": "batch",
        "topic": topic,
        "root": batch_root,
        "size": batch.get("size"),
    }
    _check_entry(
        res, "batch", inp.batch_entry, expected_batch_body, ledger_refs.get("batch"), integrity
    )
    window_ref = ledger_refs.get("window")
    if window_ref is not None or (
        inp.window_entry is not None and inp.window_entry.ref is not None
    ):
        expected_window_body = {
            "kind": "window",
            "topic": topic,
            "window_id": key.window_id,
            "station_id": key.station_id,
            "revision": inp.revision,
            "checkpoint_digest": str(rc["checkpoint_digest"]),
            "merkle_root": (cp or {}).get("merkle", {}).get("root"),
            "batch_root": batch_root,
        }
        _check_entry(res, "window", inp.window_entry, expected_window_body, window_ref, integrity)


def _check_log_entry(
    res: CheckResult, inp: RevisionInputs, cp: dict[str, Any] | None, digest: str | None
) -> None:
    """The stored checkpoint is the one the anchor log's window entry names."""
    entry = inp.log_entry
    if entry is None or cp is None or digest is None:
        return
    if entry["checkpoint_digest"] != digest:
        res.add(
            FAIL,
            "log_digest_mismatch",
            f"the anchor log names checkpoint digest {entry['checkpoint_digest']}, the stored "
            f"checkpoint digests to {digest}",
        )
    logged = {int(p): [tuple(r) for r in rs] for p, rs in entry["ranges"].items()}
    stored = {p: [r] for p, r in ranges_of(cp).items()}
    if logged != stored:
        res.add(
            FAIL,
            "log_ranges_mismatch",
            f"the anchor log gives ranges {logged}, the checkpoint {stored}",
        )
    link = cp["supersedes"]
    if entry["supersedes"] != link:
        res.add(FAIL, "log_supersedes_mismatch", "the log and the checkpoint supersede differently")


def _check_entry(
    res: CheckResult,
    kind: str,
    obs: LedgerObservation | None,
    expected: dict[str, Any],
    receipt_ref: dict[str, Any] | None,
    integrity: LedgerIntegrity,
) -> None:
    if obs is None:
        res.add(
            NOT_CHECKABLE, f"{kind}_entry_not_queried", f"the {kind} ledger entry was not looked up"
        )
        return
    if obs.unavailable:
        res.add(
            NOT_CHECKABLE, "ledger_unavailable", f"ledger unreachable for {obs.key}: {obs.error}"
        )
        return
    if obs.error is not None:
        res.add(FAIL, f"{kind}_entry_unreadable", f"{obs.key}: {obs.error}")
        return
    if obs.foreign:
        writers = foreign_writers(obs.foreign)
        res.add(
            INFO,
            f"{kind}_entry_foreign_items",
            f"{len(obs.foreign)} item(s) under {obs.key} by untrusted writer(s) "
            f"{', '.join(writers)} ignored",
        )
    if obs.ref is None or obs.body is None:
        res.add(FAIL, f"{kind}_entry_missing", f"no ledger entry under {obs.key}")
        return
    ref, body = obs.ref, obs.body
    body_digest = canonical_digest(body)
    if body_digest != ref.digest:
        res.add(
            FAIL,
            f"{kind}_entry_body_altered",
            f"ledger entry {obs.key}: stored body digests to {body_digest}, "
            f"entry records {ref.digest}",
        )
    if body != expected:
        diff = sorted(k for k in expected.keys() | body.keys() if body.get(k) != expected.get(k))
        res.add(
            FAIL, f"{kind}_entry_mismatch", f"ledger entry {obs.key} differs in {', '.join(diff)}"
        )
    if receipt_ref is not None and receipt_ref.get("digest") != ref.digest:
        res.add(
            FAIL,
            f"{kind}_receipt_ref_mismatch",
            f"receipt names digest {receipt_ref.get('digest')} for {obs.key}, "
            f"the ledger has {ref.digest}",
        )
    if integrity.touches(ref):
        res.add(
            FAIL,
            "ledger_integrity",
            f"{integrity.backend} ledger integrity broken at this entry: {integrity.detail}",
        )
    if not ref.final:
        res.add(
            PENDING,
            f"{kind}_entry_not_final",
            f"{obs.key} has {ref.confirmations} of {ref.required_confirmations} confirmations",
        )
