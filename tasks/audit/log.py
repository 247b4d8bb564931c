"""(g) log: the anchor log is signed, append-only, anchored, and consistent with what the
auditor verified before.

Like a Certificate Transparency monitor (RFC 9162 §8.3) or a Sigsum/immudb client, the
auditor pins the log's verifier key and origin (trust policy, never the bucket), and
checks, on evidence fetched by `flows/audit_log.py`:

* the latest checkpoint carries a valid C2SP signed-note signature by the pinned key;
* every run boundary of the log (the size after each run entry) is anchored on the ledger
  as ``head/<topic>/<size>`` with the root the log has at that size, naming the previous
  anchored head, and the RFC 9162 §2.1.4 consistency proof between each pair of
  consecutive anchored heads verifies: a fork, rewrite or truncation fails;
* every signed note found for an older head (receipts carry them) verifies too;
* the head this auditor remembered (``--state DIR``) is a prefix of the current one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, PENDING, CheckResult
from tasks.audit.evidence import LedgerObservation, foreign_writers
from tasks.canonical import canonical_digest
from tasks.merkle import MerkleError, verify_consistency
from tasks.tlog.checkpoint import LogCheckpoint, LogCheckpointError, open_checkpoint
from tasks.tlog.note import Verifier

STATE_SCHEMA = "streamnotary.audit-state/1"


@dataclass(frozen=True, slots=True)
class RememberedHead:
    """The last log head this auditor verified (``--state DIR``), and the ledger's head."""

    origin: str
    size: int
    root: str  # hex
    ledger: dict[str, Any] | None = None  # e.g. {"seq": n, "entry_hash": hex} (local ledger)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "ledger": self.ledger,
        }

    @classmethod
    def from_json(cls, doc: Any) -> RememberedHead:
        """Strict parse; `ValueError` for anything that is not an audit state document."""
        if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
            raise ValueError(f"not a {STATE_SCHEMA} document")
        origin, size, root, ledger = (doc.get(k) for k in ("origin", "size", "root", "ledger"))
        if not isinstance(origin, str) or type(size) is not int or size < 0:
            raise ValueError("audit state needs an origin and a non-negative size")
        if not isinstance(root, str) or len(root) != 64:
            raise ValueError("audit state root must be 64 hex digits")
        bytes.fromhex(root)
        if ledger is not None and not isinstance(ledger, dict):
            raise ValueError("audit state ledger must be an object")
        return cls(origin, size, root, ledger)


@dataclass(slots=True)
class HeadEvidence:
    """One run boundary of the log: its root there, its ledger entry, and proofs."""

    size: int
    root: bytes  # root of the current log at `size` (from authenticated tiles)
    previous_size: int  # the run boundary before it (0 for the first run)
    anchored: LedgerObservation | None = None
    proof_from_previous: Sequence[bytes] = ()  # consistency proof previous_size -> size
    notes: list[bytes] = field(default_factory=list)  # signed checkpoints of this size


@dataclass(slots=True)
class LogEvidence:
    """What the auditor fetched about one topic's anchor log."""

    origin: str
    checkpoint_note: bytes | None = None
    problem: str | None = None  # the log could not be read (tiles, entries)
    heads: list[HeadEvidence] = field(default_factory=list)
    remembered: RememberedHead | None = None
    remembered_proof: Sequence[bytes] | None = None
    remembered_problem: str | None = None
    ledger_problem: str | None = None  # e.g. remembered ledger head no longer in the chain


def open_head(note: bytes, verifier: Verifier | None, origin: str) -> LogCheckpoint:
    """Verify the note's signature by the pinned key (if any) and parse the checkpoint."""
    if verifier is None:
        from tasks.tlog.note import parse_note

        head = LogCheckpoint.parse(parse_note(note).text)
        if head.origin != origin:
            raise LogCheckpointError(f"checkpoint origin {head.origin!r} is not {origin!r}")
        return head
    head, _ = open_checkpoint(note, verifier, origin)
    return head


def check_log(
    ev: LogEvidence, verifier: Verifier | None
) -> tuple[CheckResult, LogCheckpoint | None]:
    """Signature, anchored heads, consistency, remembered head. Returns (result, head)."""
    res = CheckResult("log")
    if verifier is None:
        res.add(
            INFO,
            "log_key_not_pinned",
            "no trust policy: checkpoint signatures are not checked against a pinned key",
        )
    head: LogCheckpoint | None = None
    if ev.checkpoint_note is None:
        res.add(FAIL, "log_missing", f"no signed checkpoint for log {ev.origin!r}")
    else:
        try:
            head = open_head(ev.checkpoint_note, verifier, ev.origin)
        except (LogCheckpointError, ValueError) as exc:
            res.add(FAIL, "log_signature_invalid", f"latest checkpoint: {exc}")
    if ev.problem is not None:
        res.add(FAIL, "log_unreadable", ev.problem)
    if head is not None:
        _check_remembered(res, ev, head)
    _check_heads(res, ev, verifier)
    if ev.ledger_problem is not None:
        res.add(FAIL, "ledger_rewritten", ev.ledger_problem)
    return res, head


def _check_remembered(res: CheckResult, ev: LogEvidence, head: LogCheckpoint) -> None:
    mem = ev.remembered
    if ev.remembered_problem is not None:
        res.add(FAIL, "state_unreadable", ev.remembered_problem)
    if mem is None:
        return
    if mem.origin != ev.origin:
        res.add(FAIL, "state_other_log", f"remembered head is of log {mem.origin!r}")
        return
    if mem.size > head.size:
        res.add(
            FAIL,
            "log_rolled_back",
            f"the log is at size {head.size}, this auditor already verified size {mem.size}",
        )
        return
    try:
        verify_consistency(
            mem.size, head.size, bytes.fromhex(mem.root), head.root, ev.remembered_proof or []
        )
    except MerkleError as exc:
        res.add(
            FAIL,
            "inconsistent_with_remembered_head",
            f"head {head.size} does not extend the remembered head {mem.size} "
            f"({mem.root[:16]}...): {exc}",
        )


def _check_heads(res: CheckResult, ev: LogEvidence, verifier: Verifier | None) -> None:
    previous: tuple[int, bytes] | None = None  # (size, anchored root)
    for h in ev.heads:
        anchored_root = _anchored_root(res, h)
        for note in h.notes:
            try:
                signed = open_head(note, verifier, ev.origin)
            except (LogCheckpointError, ValueError) as exc:
                res.add(FAIL, "head_signature_invalid", f"signed head of size {h.size}: {exc}")
                continue
            if (signed.size, signed.root) != (h.size, h.root):
                res.add(
                    FAIL,
                    "signed_head_not_in_log",
                    f"a signed checkpoint of size {signed.size} has root "
                    f"{signed.root.hex()[:16]}..., the log has {h.root.hex()[:16]}...",
                )
        if anchored_root is None:
            previous = None
            continue
        if previous is not None and previous[0] < h.size:
            try:
                verify_consistency(
                    previous[0], h.size, previous[1], anchored_root, h.proof_from_previous
                )
            except MerkleError as exc:
                res.add(
                    FAIL,
                    "anchored_heads_inconsistent",
                    f"anchored head {h.size} does not extend anchored head {previous[0]}: {exc}",
                )
        previous = (h.size, anchored_root)


def _anchored_root(res: CheckResult, h: HeadEvidence) -> bytes | None:
    obs = h.anchored
    if obs is None:
        res.add(NOT_CHECKABLE, "head_not_queried", f"head {h.size} was not looked up")
        return None
    if obs.unavailable:
        res.add(NOT_CHECKABLE, "ledger_unavailable", f"ledger unreachable for {obs.key}")
        return None
    if obs.foreign:  # a third party's entries under the key: never the anchor, only noted
        res.add(
            INFO,
            "head_entry_foreign_items",
            f"{len(obs.foreign)} item(s) under {obs.key} by untrusted writer(s) "
            f"{', '.join(foreign_writers(obs.foreign))} ignored",
        )
    if obs.error is not None or obs.ref is None or obs.body is None:
        res.add(
            FAIL,
            "head_not_anchored",
            f"the log head after the run ending at size {h.size} is not on the ledger "
            f"({obs.key}: {obs.error or 'absent'})",
        )
        return None
    body = obs.body
    if canonical_digest(body) != obs.ref.digest:
        res.add(FAIL, "head_entry_body_altered", f"{obs.key}: body does not hash to its digest")
    try:
        anchored_root = bytes.fromhex(str(body["root"]))
        anchored_size, previous_size = body["size"], body["previous_size"]
    except (KeyError, TypeError, ValueError) as exc:
        res.add(FAIL, "head_entry_invalid", f"{obs.key}: {exc}")
        return None
    if anchored_size != h.size or anchored_root != h.root:
        res.add(
            FAIL,
            "anchored_head_mismatch",
            f"the ledger anchors root {anchored_root.hex()[:16]}... at size {anchored_size}, the "
            f"log has {h.root.hex()[:16]}... (the log was rewritten after anchoring)",
        )
    if previous_size != h.previous_size:
        res.add(
            FAIL,
            "head_chain_broken",
            f"{obs.key} names previous head {previous_size}, the log's previous run ends at "
            f"{h.previous_size}",
        )
    if not obs.ref.final:
        res.add(
            PENDING,
            "head_entry_not_final",
            f"{obs.key} has {obs.ref.confirmations} of {obs.ref.required_confirmations} "
            "confirmations",
        )
    return anchored_root
