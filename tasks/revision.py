"""Assemble everything one run writes and anchors (pure): revisions, entries, receipts.

Given window contents, this module produces the exact bytes and documents of a run:
payload bytes, checkpoint documents, the ledger entries and the receipts. Runs anchor the
head of the signed anchor log (`tasks.run_log.head_entry`); the batch tree of earlier
versions is kept only to read (and, in tests, to make) v1 receipts (`legacy_receipt`).
Keeping it free of I/O means the write-ahead plan (`streamnotary.pending/1`) fully
determines every later write, which is what makes a killed run resumable.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage import layout
from storage.ledger.base import AnchorEntry, AnchorRef
from tasks.batch import RECEIPT_SCHEMA, Batch, BatchMember, batch_proof
from tasks.canonical import canonical_json, sha256_hex
from tasks.checkpoint import PayloadRef, Supersedes, build_checkpoint, checkpoint_digest
from tasks.message import Classified
from tasks.pack import PackBuilder
from tasks.payload import encode_payload
from tasks.stage_timing import WINDOW, timed
from tasks.window import WindowKey
from tasks.window_content import WindowContent

PENDING_SCHEMA = "streamnotary.pending/1"
RECEIPT_SCHEMA_V2 = "streamnotary.receipt/2"
QUARANTINE_SCHEMA = "streamnotary.quarantine/1"
QUARANTINE_RUN_SCHEMA = "streamnotary.quarantine_run/1"


@dataclass(frozen=True)
class PlannedRevision:
    """One window revision, ready to be written and anchored."""

    key: WindowKey
    revision: int
    # the window's offset ranges: all of its content a run needs once the checkpoint is
    # built (the records and leaves are let go, so a run holds them only while building)
    ranges: dict[int, tuple[int, int]]
    payload: bytes
    checkpoint: dict[str, Any]
    digest: str
    # `document_bytes(checkpoint)`, serialized once: its digest and its span in the pack
    checkpoint_bytes: bytes

    @property
    def window_id(self) -> str:
        return self.key.window_id


@timed(WINDOW)
def plan_revision(
    *,
    content: WindowContent,
    topic: str,
    revision: int,
    supersedes: Supersedes | None,
    close_reason: str,
    uri_of: Callable[[str], str],
    pipeline_version: str,
    pack: PackBuilder | None = None,
    payload: bytes | None = None,
    scope: str | None = None,
) -> PlannedRevision:
    """Encode the payload and build the checkpoint of one window revision.

    With `pack` (layout pack) the payload is appended to the run's pack and the checkpoint
    addresses it there; without, it is its own object at `layout.payload_key`. `payload`
    is `encode_payload(content.records)` when the caller already has it (built in parallel
    by `flows/window_build.py`); it is encoded here otherwise. `scope` names the keys
    (`tasks.groups.LogScope.name`: a partition group's window is its own); the topic.
    """
    if payload is None:
        payload = encode_payload(content.records)
    digest = sha256_hex(payload)
    if pack is None:
        key = layout.payload_key(scope or topic, content.key, revision)
        ref = PayloadRef(uri=uri_of(key), sha256=digest, size=len(payload))
    else:
        offset = pack.add(payload)
        ref = PayloadRef(uri_of(pack.key), digest, len(payload), pack.key, offset)
    checkpoint = build_checkpoint(
        content=content,
        topic=topic,
        revision=revision,
        supersedes=supersedes,
        close_reason=close_reason,
        payload=ref,
        pipeline_version=pipeline_version,
    )
    data = canonical_json(checkpoint)
    return PlannedRevision(
        content.key, revision, content.ranges, payload, checkpoint, sha256_hex(data), data
    )


def make_batch(topic: str, revisions: Sequence[PlannedRevision]) -> Batch:
    """The batch tree of earlier versions (legacy: new runs anchor the log head instead)."""
    return Batch.of(topic, [BatchMember(r.window_id, r.revision, r.digest) for r in revisions])


def batch_entry(batch: Batch) -> AnchorEntry:
    """The ledger entry of a legacy batch root (read by the audit's legacy path)."""
    root = batch.root.hex()
    return AnchorEntry(
        key=layout.batch_entry_key(batch.topic, root),
        kind="batch",
        body={"kind": "batch", "topic": batch.topic, "root": root, "size": len(batch.members)},
    )


def window_entry(
    topic: str,
    key: WindowKey,
    revision: int,
    checkpoint: dict[str, Any],
    log_index: int,
    log_size: int,
    scope: str | None = None,
    digest: str | None = None,
) -> AnchorEntry:
    """The keyed ledger entry of a window revision (ledgers with keys): it commits to the
    checkpoint and to where the revision sits in the anchor log (its entry's index, and the
    size of the head its run anchored), so the keyed item points into the log. Its key is
    the window's in `scope` (a partition group's, `tasks.groups.LogScope.name`). `digest`:
    the checkpoint's digest if the caller hashed its canonical bytes already."""
    return AnchorEntry(
        key=layout.window_entry_key(scope or topic, key, revision),
        kind="window",
        body=window_entry_body(topic, key, revision, checkpoint, log_index, log_size, digest),
        index_keys=(key.window_id, key.station_id, topic),
    )


def window_entry_body(
    topic: str,
    key: WindowKey,
    revision: int,
    checkpoint: dict[str, Any],
    log_index: int,
    log_size: int,
    digest: str | None = None,
) -> dict[str, Any]:
    """Body of a window ledger entry (`streamnotary.ledger-entry/1`, kind window)."""
    return {
        **_window_commitment(topic, key, revision, checkpoint, digest),
        "log_index": log_index,
        "log_size": log_size,
    }


def _window_commitment(
    topic: str,
    key: WindowKey,
    revision: int,
    checkpoint: dict[str, Any],
    digest: str | None = None,
) -> dict[str, Any]:
    """What every window entry commits to, then and now: the revision and its checkpoint."""
    return {
        "kind": "window",
        "topic": topic,
        "window_id": key.window_id,
        "station_id": key.station_id,
        "revision": revision,
        "checkpoint_digest": checkpoint_digest(checkpoint) if digest is None else digest,
        "merkle_root": checkpoint["merkle"]["root"],
    }


def legacy_window_entry(
    topic: str, key: WindowKey, revision: int, checkpoint: dict[str, Any], batch_root: str
) -> AnchorEntry:
    """A window entry as earlier versions anchored it (naming its batch root)."""
    return AnchorEntry(
        key=layout.window_entry_key(topic, key, revision),
        kind="window",
        body={**_window_commitment(topic, key, revision, checkpoint), "batch_root": batch_root},
        index_keys=(key.window_id, key.station_id, topic),
    )


def receipt(
    topic: str,
    key: WindowKey,
    revision: int,
    digest: str,
    log: dict[str, Any],
    head_ref: AnchorRef,
    window_ref: AnchorRef | None,
    scope: str | None = None,
) -> dict[str, Any]:
    """The window revision's receipt v2 (layout per_window only): its log inclusion proof
    in the signed head of its run (`tasks.run_log.log_proof`), where that head is anchored,
    and its keyed ledger entry if the ledger has keys. Everything in it can be recomputed
    from the log tiles and the ledger; it saves the auditor that work and names the Bitcoin
    transaction of the head. `scope`: as for `window_entry`."""
    return {
        "schema": RECEIPT_SCHEMA_V2,
        "topic": topic,
        "window_id": key.window_id,
        "revision": revision,
        "checkpoint_key": layout.checkpoint_key(scope or topic, key, revision),
        "checkpoint_digest": digest,
        "log": log,
        "ledger": {
            "head": _stable(head_ref),
            "window": None if window_ref is None else _stable(window_ref),
        },
    }


def legacy_receipt(
    topic: str,
    key: WindowKey,
    revision: int,
    digest: str,
    batch: Batch,
    batch_ref: AnchorRef,
    window_ref: AnchorRef | None,
    log: dict[str, Any] | None = None,
    head_ref: AnchorRef | None = None,
) -> dict[str, Any]:
    """A receipt v1 as earlier versions wrote it (batch proof, optional log proof). Kept so
    that tests can make v1-era evidence the audit and both bundle verifiers must still read."""
    doc = {
        "schema": RECEIPT_SCHEMA,
        "topic": topic,
        "window_id": key.window_id,
        "revision": revision,
        "checkpoint_key": layout.checkpoint_key(topic, key, revision),
        "checkpoint_digest": digest,
        "batch": {
            "key": layout.batch_key(topic, batch.root.hex()),
            **batch_proof(batch, key.window_id, revision),
        },
        "ledger": {
            "batch": _stable(batch_ref),
            "window": None if window_ref is None else _stable(window_ref),
        },
    }
    if log is not None:
        doc["log"] = log
    if head_ref is not None:
        doc["ledger"]["head"] = _stable(head_ref)
    return doc


def _stable(ref: AnchorRef) -> dict[str, Any]:
    """An anchor reference without its confirmation count, which changes as the ledger grows.

    Receipts are written once and must be byte-identical when a resumed run writes them
    again; auditors ask the ledger for the current confirmations anyway.
    """
    doc = ref.to_json()
    del doc["confirmations"]
    return doc


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


_SAFE_INTEGER = 2**53 - 1


def _json_integer(value: int | None) -> int | str | None:
    """`value` as a JSON integer if RFC 8785 can write it exactly, else as decimal text.

    A producer may set any int64 Kafka timestamp (noida-db and Kafka store 2**63-1 as
    given); RFC 8785 numbers are IEEE 754 doubles, so such a value would make the whole
    write-ahead plan uncanonicalizable and wedge every run on the message.
    """
    if value is None or -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return value
    return str(value)


def quarantine_doc(c: Classified) -> dict[str, Any]:
    """The stored form of a rejected message: byte-exact, with position and reason."""
    m = c.message
    return {
        "schema": QUARANTINE_SCHEMA,
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "timestamp_ms": _json_integer(m.timestamp_ms),
        "key_b64": _b64(m.key),
        "value_b64": _b64(m.value),
        "reason": c.reason or "rejected",
        "detail": c.detail or "",
        "window_id": None if c.window is None else c.window.window_id,
    }


def quarantine_run_doc(
    scope: str, run: int, quarantine: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The stored form of a run's rejected messages (`quarantine_doc` each), by position."""
    return {
        "schema": QUARANTINE_RUN_SCHEMA,
        "scope": scope,
        "run": run,
        "messages": sorted(quarantine, key=lambda q: (q["topic"], q["partition"], q["offset"])),
    }


def quarantine_documents(scope: str, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{object key: document} of a write-ahead plan's rejected messages (none: empty)."""
    if not plan["quarantine"]:
        return {}
    run = int(plan["next_cursor"]["runs"])
    return {layout.quarantine_key(scope, run): quarantine_run_doc(scope, run, plan["quarantine"])}


def pending_document(
    topic: str,
    revisions: Sequence[PlannedRevision],
    quarantine: Sequence[dict[str, Any]],
    next_cursor: dict[str, Any],
    log: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The write-ahead plan: once stored, every later write of the run is determined.

    `log` (`tasks.run_log.log_plan`) is what the run appends to the anchor log. `batch` is
    always null now (runs anchor the log head); plans of earlier versions may carry one.
    """
    doc = {
        "schema": PENDING_SCHEMA,
        "topic": topic,
        "batch": None,
        "windows": [
            {
                "window_id": r.window_id,
                "revision": r.revision,
                "checkpoint": r.checkpoint,
                "checkpoint_digest": r.digest,
            }
            for r in revisions
        ],
        "quarantine": list(quarantine),
        "next_cursor": next_cursor,
    }
    if log is not None:
        doc["log"] = log
    return doc


def document_bytes(doc: dict[str, Any]) -> bytes:
    """Stored form of every JSON document: RFC 8785 bytes, so sha256(file) == its digest."""
    return canonical_json(doc)


def plan_bytes(pending: dict[str, Any], checkpoints: Sequence[bytes]) -> bytes:
    """`document_bytes(pending)`, with each window's checkpoint spliced in from its canonical
    bytes (`PlannedRevision.checkpoint_bytes`, in plan order) instead of serialized again.

    RFC 8785 writes every member of an object on its own, in sorted key order, so an
    object's bytes are its members' bytes joined: ``windows`` is the plan's last key and
    ``checkpoint`` the first key of each of its entries. tests/test_revision.py proves the
    result equal to `document_bytes`; a plan with any later key is serialized whole.
    """
    windows = pending["windows"]
    if len(checkpoints) != len(windows) or max(pending) != "windows":
        return document_bytes(pending)
    head = canonical_json({**pending, "windows": []})
    parts = []
    for w, checkpoint in zip(windows, checkpoints, strict=True):
        rest = canonical_json({k: v for k, v in w.items() if k != "checkpoint"})
        if min(w) != "checkpoint" or rest == b"{}":
            return document_bytes(pending)
        parts.append(b'{"checkpoint":' + checkpoint + b"," + rest[1:])
    return head[: -len(b"]}")] + b",".join(parts) + b"]}"
