"""Evidence about the anchor log for an audit run: the pinned trust policy, the log's
entries and heads, their ledger anchors, and the auditor's remembered head (``--state``).

Everything here fetches; every verdict is made by the pure checks in `tasks.audit.log`
and `tasks.audit.coverage`. The trust policy is read from the auditor's own file, never
from the bucket or a bundle; without one the operator's local key is used and the report
says so (`log_key_not_pinned`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.ledger.base import Ledger
from storage.objectstore import ObjectStore, ObjectStoreError
from storage.tlog import LogError, LogReader, head_anchor_key
from tasks.audit.documents import schema_problem
from tasks.audit.log import HeadEvidence, LogEvidence, RememberedHead
from tasks.canonical import parse_document
from tasks.tlog.checkpoint import LogCheckpoint, LogCheckpointError
from tasks.tlog.entries import LogEntryError
from tasks.tlog.note import NoteError, Verifier
from tasks.tlog.tiles import TileError

TRUST_SCHEMA_FILE = "trust.schema.json"
TRUST_GROUPS_SCHEMA_FILE = "trust_groups.schema.json"  # streamnotary.trust/v2
LOG_ERRORS = (LogError, TileError, LogEntryError, LogCheckpointError, NoteError, ObjectStoreError)


class TrustPolicyError(ValueError):
    """The trust policy file is missing, not JSON, or not `streamnotary.trust/v1`."""


@dataclass(frozen=True)
class GroupTrust:
    """One partition group as the trust policy pins it: its partitions and its log."""

    name: str
    partitions: tuple[int, ...]
    origin: str
    verifier: Verifier


@dataclass(frozen=True)
class TrustPolicy:
    """What the auditor pins: the log's origin and verifier key, the ledger identity.

    A `streamnotary.trust/v2` policy (topic anchored in partition groups) pins one log per
    group (`groups`); `origin` and `verifier` are then those of its first group.
    """

    origin: str
    verifier: Verifier
    ledger: dict[str, Any]
    source: str  # where it came from, for the report
    groups: tuple[GroupTrust, ...] = ()
    topic: str | None = None

    def for_group(self, group: GroupTrust) -> TrustPolicy:
        """The policy one group's log is audited with: that group's origin and key."""
        return TrustPolicy(group.origin, group.verifier, self.ledger, self.source)

    @classmethod
    def load(cls, path: str | Path) -> TrustPolicy:
        try:
            doc = parse_document(Path(path).read_bytes())
        except (OSError, ValueError, RecursionError) as exc:
            raise TrustPolicyError(f"trust policy {path}: {exc}") from exc
        return cls.from_json(doc, str(path))

    @classmethod
    def from_json(cls, doc: Any, path: str) -> TrustPolicy:
        """Validate a `streamnotary.trust/v1` or `/v2` document (`TrustPolicyError` if not)."""
        grouped = isinstance(doc, dict) and doc.get("schema") == "streamnotary.trust/v2"
        problem = schema_problem(doc, TRUST_GROUPS_SCHEMA_FILE if grouped else TRUST_SCHEMA_FILE)
        if problem is not None:
            raise TrustPolicyError(f"trust policy {path}: {problem}")
        if grouped:
            groups = tuple(
                GroupTrust(g["name"], tuple(g["partitions"]), *_pinned_log(g["log"], path))
                for g in doc["groups"]
            )
            first = groups[0]
            return cls(first.origin, first.verifier, doc["ledger"], str(path), groups, doc["topic"])
        return cls(*_pinned_log(doc["log"], path), doc["ledger"], str(path))


def _pinned_log(log: dict[str, Any], path: str) -> tuple[str, Verifier]:
    """(origin, verifier) of a trust policy's `log` member; its key must be named the origin."""
    try:
        verifier = Verifier.from_key(log["verifier_key"])
    except NoteError as exc:
        raise TrustPolicyError(f"trust policy {path}: verifier key: {exc}") from exc
    if verifier.name != log["origin"]:
        raise TrustPolicyError(f"trust policy {path}: key name {verifier.name!r} is not the origin")
    return log["origin"], verifier


# ---------------------------------------------------------------------------------------
# Remembered head (--state DIR)
# ---------------------------------------------------------------------------------------


def state_file(state_dir: str | Path, origin: str) -> Path:
    """One file per log, named by a digest of the origin (origins contain slashes)."""
    name = hashlib.sha256(origin.encode()).hexdigest()[:32]
    return Path(state_dir) / f"audit-state-{name}.json"


def load_state(
    state_dir: str | Path | None, origin: str
) -> tuple[RememberedHead | None, str | None]:
    """(remembered head, problem). No directory or no file yet: (None, None)."""
    if not state_dir:
        return None, None
    path = state_file(state_dir, origin)
    try:
        return RememberedHead.from_json(parse_document(path.read_bytes())), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"audit state {path}: {exc}"


def save_state(state_dir: str | Path, head: RememberedHead) -> Path:
    """Write atomically (temp file, fsync, rename), mode 0600 in a 0700 directory."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_file(directory, head.origin)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(head.to_json(), fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def ledger_head(ledger: Ledger) -> dict[str, Any] | None:
    """The embedded ledger's (seq, entry hash), which a remembered state pins too."""
    head = getattr(ledger, "head", None)
    if not callable(head):
        return None
    seq, entry_hash = head()
    return {"seq": int(seq), "entry_hash": str(entry_hash)}


def ledger_still_extends(ledger: Ledger, remembered: RememberedHead | None) -> str | None:
    """A problem if the ledger no longer holds the entry the auditor remembered."""
    if remembered is None or not remembered.ledger:
        return None
    extends = getattr(ledger, "extends", None)
    if not callable(extends):
        return None
    seq, entry_hash = remembered.ledger.get("seq"), remembered.ledger.get("entry_hash")
    if not isinstance(seq, int) or not isinstance(entry_hash, str):
        return "remembered ledger head is malformed"
    if not extends(seq, entry_hash):
        return (
            f"the {ledger.backend} ledger no longer holds entry {seq} ({entry_hash[:16]}...) "
            "this auditor verified: the ledger was rewritten"
        )
    return None


# ---------------------------------------------------------------------------------------
# The log
# ---------------------------------------------------------------------------------------


@dataclass
class LogFetch:
    """The log evidence, and the entries (empty when the log is absent or unreadable)."""

    evidence: LogEvidence
    entries: list[dict[str, Any]]
    head: LogCheckpoint | None


def fetch_log(
    store: ObjectStore,
    topic: str,
    origin: str,
    verifier: Verifier | None,
    notes: dict[int, list[bytes]],
    remembered: RememberedHead | None,
) -> LogFetch:
    """Read the whole log (authenticated against its signed checkpoint), its run boundaries
    and the consistency proofs the checks need (`observe_heads` then asks the ledger).

    `notes` are signed checkpoints found elsewhere (receipts), by tree size.
    """
    ev = LogEvidence(origin, remembered=remembered)
    reader = LogReader(store, topic, verifier, origin)
    try:
        ev.checkpoint_note = reader.checkpoint_note()
    except ObjectStoreError as exc:
        ev.problem = f"checkpoint unreadable: {exc}"
        return LogFetch(ev, [], None)
    if ev.checkpoint_note is None:
        return LogFetch(ev, [], None)
    try:
        head = reader.checkpoint()
    except LOG_ERRORS:
        return LogFetch(ev, [], None)  # check_log reports the signature / origin problem
    if head is None:
        return LogFetch(ev, [], None)
    entries: list[dict[str, Any]] = []
    try:
        entries = list(reader.entries(0, head.size))
        boundaries = [i + 1 for i, e in enumerate(entries) if e.get("type") == "run"]
        if head.size and (not boundaries or boundaries[-1] != head.size):
            ev.problem = f"the log of size {head.size} does not end with a run entry"
        previous = 0
        for size in boundaries:
            h = HeadEvidence(size, reader.root(size), previous)
            if previous:
                h.proof_from_previous = reader.consistency_proof(previous, size)
            h.notes = list(notes.get(size, []))
            ev.heads.append(h)
            previous = size
        if remembered is not None and 0 < remembered.size <= head.size:
            ev.remembered_proof = reader.consistency_proof(remembered.size, head.size)
    except LOG_ERRORS as exc:
        ev.problem = f"{type(exc).__name__}: {exc}"
        return LogFetch(ev, [], head)
    for i, e in enumerate(entries):
        problem = schema_problem(e, "log_entry.schema.json")
        if problem is not None:
            ev.problem = f"log entry {i}: {problem}"
            return LogFetch(ev, [], head)
    return LogFetch(ev, entries, head)


def observe_heads(
    evidence: LogEvidence,
    observe: Any,  # flows.audit_evidence.LedgerReader.observe
    topic: str,
    receipts: Sequence[dict[str, Any] | None] = (),
) -> None:
    """Look every run boundary's head entry up on the (pinned) ledger. Receipts name where
    their run's head entry sits (`ledger.head.locator`): the Bitcoin family finds it by txid,
    without the writer's wallet."""
    locators: dict[int, dict[str, Any]] = {}
    for rc in receipts:
        if not isinstance(rc, dict) or not isinstance(rc.get("ledger"), dict):
            continue  # hostile receipts are the anchored check's to report
        log, ref = rc.get("log"), rc["ledger"].get("head")
        if not (isinstance(log, dict) and isinstance(ref, dict)):
            continue
        if type(log.get("size")) is int and isinstance(ref.get("locator"), dict):
            locators.setdefault(log["size"], ref["locator"])
    for h in evidence.heads:
        h.anchored = observe(head_key(topic, h.size), locators.get(h.size))


def head_anchor_records(
    store: ObjectStore, topic: str, evidence: LogEvidence
) -> list[dict[str, Any]]:
    """The runs' `streamnotary.head-anchor/1` records of the heads in `evidence`, shaped as
    the receipt members `observe_heads` and `receipt_notes` read (`ledger.head`, `log`).

    Layout pack writes no receipts: these records carry what receipts carried for the log
    check, the ledger locator of each head (a Bitcoin-family txid) and its signed note.
    They are hints from the bucket: the ledger entry and the note are verified, an absent,
    unreadable or hostile record only leaves that head to be found without a locator.
    """
    out: list[dict[str, Any]] = []
    for h in evidence.heads:
        try:
            doc = parse_document(store.get(head_anchor_key(topic, h.size)))
        except (ObjectStoreError, ValueError):
            continue
        if schema_problem(doc, "head_anchor.schema.json") is not None:
            continue  # hostile or foreign: the head is looked up without a locator
        if (doc["topic"], doc["size"]) != (topic, h.size):
            continue
        out.append(
            {
                "ledger": {"head": doc.get("ledger")},
                "log": {"size": h.size, "checkpoint": doc.get("checkpoint")},
            }
        )
    return out


def head_key(topic: str, size: int) -> str:
    """Ledger key of the anchored log head of `size` (`storage.layout.head_entry_key`)."""
    return f"head/{topic}/{size}"


def receipt_notes(receipts: Sequence[dict[str, Any] | None]) -> dict[int, list[bytes]]:
    """Signed checkpoints carried by receipts (`receipt.log.checkpoint`), by tree size."""
    out: dict[int, list[bytes]] = {}
    for rc in receipts:
        log = rc.get("log") if isinstance(rc, dict) else None
        if not isinstance(log, dict) or not isinstance(log.get("checkpoint"), str):
            continue
        size = log.get("size")
        if type(size) is int:
            note = log["checkpoint"].encode()
            if note not in out.setdefault(size, []):
                out[size].append(note)
    return out
