"""Proof of one record: a v2 bundle through the signed log, or v1 for pre-log windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flows.audit_evidence import LedgerReader, load_json, pinned_version
from flows.audit_select import iso_z
from storage import layout
from storage.checkpoint_store import PackReader, latest_entries
from storage.ledger.base import AnchorRef, Ledger, LedgerError, LedgerUnavailable
from storage.objectstore import ObjectNotFound, ObjectStore, read_payload
from storage.tlog import LogError, LogReader
from tasks.audit import LedgerObservation
from tasks.audit.documents import (
    CHECKPOINT_SCHEMA_FILE,
    RECEIPT_SCHEMA_FILE,
    parse_object_name,
    schema_problem,
)
from tasks.checkpoint import checkpoint_digest
from tasks.checkpoint_pack import CheckpointPackError
from tasks.merkle import MerkleError, merkle_root, verify_consistency
from tasks.pack import PackError, payload_location
from tasks.payload import PayloadError, decode_payload
from tasks.proof_bundle import LedgerEvidence, ProofBundleError, make_bundle
from tasks.proof_bundle_v2 import make_bundle_v2
from tasks.record import canonical_bytes
from tasks.run_log import log_proof
from tasks.tlog.checkpoint import LogCheckpoint, LogCheckpointError
from tasks.tlog.entries import LogEntryError
from tasks.tlog.note import NoteError, Verifier
from tasks.tlog.tiles import TileError
from tasks.window import WindowKey, WindowSpec


class ProofError(RuntimeError):
    """No proof can be produced for the requested record."""


# ---------------------------------------------------------------------------------------
# Proof of one record
# ---------------------------------------------------------------------------------------


def _revisions_of(store: ObjectStore, topic: str, key: WindowKey) -> list[int]:
    """Revisions with a checkpoint (layout pack writes no receipts); stray objects in the
    window's prefix are ignored."""
    names = (
        parse_object_name(topic, k)
        for k in store.list(layout.window_checkpoints_prefix(topic, key))
    )
    return sorted({n.revision for n in names if n.revision is not None and n.window == key})


def _logged(store: ObjectStore, topic: str, verifier: Verifier | None) -> dict[str, Any]:
    """Window id -> window entry of its latest revision in the signed log ({} without a
    log key or a log): layout pack stores checkpoints where only the log locates them."""
    if verifier is None:
        return {}
    log = LogReader(store, topic, verifier, verifier.name)
    try:
        head = log.checkpoint()
        return {} if head is None else dict(latest_entries(log.entries(0, head.size)))
    except (LogError, TileError, LogEntryError, LogCheckpointError, NoteError, ValueError) as exc:
        raise ProofError(f"the anchor log of {topic!r} is unreadable: {exc}") from exc


def _window_for(
    store: ObjectStore,
    topic: str,
    station: str,
    at: datetime,
    size: int,
    logged: dict[str, Any] | None = None,
) -> WindowKey:
    key = WindowSpec(size).key_of(station, at)
    if key.window_id in (logged or {}) or _revisions_of(store, topic, key):
        return key
    for wid in logged or {}:  # other window sizes, packed
        try:
            other = WindowKey.parse(wid)
        except ValueError:
            continue  # the audit reports a malformed logged window id
        if other.station_id == station and other.contains(at):
            return other
    for k in store.list(layout.checkpoints_prefix(topic, station)):  # other window sizes
        other = parse_object_name(topic, k)
        if other.revision is not None and other.window and other.window.contains(at):
            return other.window
    raise ProofError(
        f"no anchored window of station {station} contains {iso_z(at)} in topic {topic!r}"
    )


def logged_window(
    store: ObjectStore,
    scope: str,
    verifier: Verifier,
    station: str,
    at: datetime,
    window_seconds: int,
) -> WindowKey | None:
    """The window of `station` at `at` that the signed log of `scope` holds, if any.

    Layout pack keeps no per-window checkpoint, so for a topic in partition groups the
    group to prove from is the one whose log holds the window (read with that group's key).
    """
    logged = _logged(store, scope, verifier)
    key = WindowSpec(window_seconds).key_of(station, at)
    if key.window_id in logged:
        return key
    for wid in logged:  # other window sizes
        try:
            other = WindowKey.parse(wid)
        except ValueError:
            continue
        if other.station_id == station and other.contains(at):
            return other
    return None


def holds_window(
    store: ObjectStore, scope: str, station: str, at: datetime, window_seconds: int
) -> bool:
    """Whether a per-window checkpoint under the keys of `scope` (a partition group's
    ``<topic>/<group>``) holds `station` at `at`: only to choose which group's log to prove
    from (the proof itself is checked against that log's key)."""
    try:
        _window_for(store, scope, station, at, window_seconds)
    except ProofError:
        return False
    return True


def prove_record(
    *,
    store: ObjectStore,
    ledger: Ledger,
    topic: str,
    station: str,
    at: datetime,
    window_seconds: int,
    verifier: Verifier | None = None,
    log_scope: str | None = None,
) -> dict[str, Any]:
    """Proof bundle of the record of `station` at `at`, in its window's latest revision.

    `log_scope` names the log that holds the window, and the window's keys: the topic
    (default), or ``<topic>/<group>`` for a topic anchored in partition groups, whose
    windows are per group (`holds_window`, `logged_window` tell which groups hold one).

    Every link is checked against the stored evidence before the bundle is written: a
    bundle is never issued from a payload or checkpoint that does not match the anchors.
    A revision anchored through the signed log gets a v2 bundle, verified here with the
    operator's log key `verifier`: the inclusion proof comes from its receipt, or, without
    one (layout pack), from the log tiles. Revisions with a v1 receipt and no log proof
    (batch anchors) get v1.
    """
    scope = log_scope or topic
    logged = _logged(store, scope, verifier)
    key = _window_for(store, scope, station, at, window_seconds, logged)
    entry = logged.get(key.window_id)
    rev = max([*_revisions_of(store, scope, key), -1 if entry is None else entry["revision"]])
    receipt, problem = load_json(store, layout.receipt_key(scope, key, rev))
    if receipt is not None:
        problem = schema_problem(receipt, RECEIPT_SCHEMA_FILE)
    elif verifier is not None:
        receipt = _tile_receipt(store, scope, key, rev, verifier)
        problem = None if receipt is not None else f"{problem}, and not in the anchor log"
    if entry is not None and entry["revision"] == rev and entry.get("checkpoint") is not None:
        checkpoint, cp_problem = _packed_checkpoint(store, scope, entry)
    else:
        checkpoint, cp_problem = load_json(
            store, layout.checkpoint_key(scope, key, rev), pinned_version(receipt, "checkpoint")
        )
    if checkpoint is not None:
        cp_problem = schema_problem(checkpoint, CHECKPOINT_SCHEMA_FILE)
    if receipt is None or checkpoint is None or problem or cp_problem:
        raise ProofError(
            f"{key.window_id} r{rev}: receipt {problem or 'ok'}, checkpoint {cp_problem or 'ok'}"
        )
    digest = checkpoint_digest(checkpoint)
    if digest != receipt["checkpoint_digest"]:
        raise ProofError(
            f"{key.window_id} r{rev}: stored checkpoint does not match the anchored digest"
        )
    try:
        where = payload_location(scope, key, rev, checkpoint)
        records = decode_payload(read_payload(store, where, pinned_version(receipt, "payload")))
    except (ObjectNotFound, PayloadError, PackError) as exc:
        raise ProofError(f"{key.window_id} r{rev}: payload unusable: {exc}") from exc
    leaves = [canonical_bytes(r) for r in records]
    if merkle_root(leaves).hex() != checkpoint["merkle"]["root"]:
        raise ProofError(f"{key.window_id} r{rev}: payload does not hash to the anchored root")
    index = next((i for i, r in enumerate(records) if r.observed_at == at), None)
    if index is None:
        raise ProofError(f"{key.window_id} r{rev} holds no record of {station} at {iso_z(at)}")
    reader = LedgerReader(ledger)
    if isinstance(receipt.get("log"), dict):
        return _bundle_v2(store, reader, scope, checkpoint, receipt["log"], leaves, index, verifier)
    batch_obs = reader.observe(
        layout.batch_entry_key(topic, receipt["batch"]["root"]),
        ((receipt.get("ledger") or {}).get("batch") or {}).get("locator"),
    )
    if batch_obs.ref is None or batch_obs.body is None:
        raise ProofError(f"ledger entry {batch_obs.key} not found: {batch_obs.error or 'absent'}")
    window_ev = None
    if receipt["ledger"].get("window") is not None:
        w = reader.observe(layout.window_entry_key(scope, key, rev))
        if w.ref is None or w.body is None:
            raise ProofError(f"ledger entry {w.key} not found: {w.error or 'absent'}")
        window_ev = LedgerEvidence(w.ref.to_json(), w.body)
    return make_bundle(
        leaves=leaves,
        index=index,
        checkpoint=checkpoint,
        receipt=receipt,
        batch_entry=LedgerEvidence(batch_obs.ref.to_json(), batch_obs.body),
        window_entry=window_ev,
    )


def _packed_checkpoint(
    store: ObjectStore, topic: str, entry: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """(checkpoint, problem) of a revision whose log entry locates it in a checkpoint pack."""
    try:
        cp = PackReader(store, topic).of_entry(entry)
    except CheckpointPackError as exc:
        return None, f"unusable: {exc}"
    except ObjectNotFound:
        return None, "its checkpoint pack is missing from the object store"
    return cp, None


def _tile_receipt(
    store: ObjectStore, topic: str, key: WindowKey, rev: int, verifier: Verifier
) -> dict[str, Any] | None:
    """What a receipt would say, computed from the log tiles: the revision's window entry
    and its inclusion proof in the current signed head (layout pack writes no receipts).
    None when the log does not hold the revision."""
    log = LogReader(store, topic, verifier, verifier.name)
    try:
        head, note = log.checkpoint(), log.checkpoint_note()
        if head is None or note is None:
            return None
        index = next(
            (
                i
                for i, e in enumerate(log.entries(0, head.size))
                if e.get("type") == "window"
                and (e.get("window_id"), e.get("revision")) == (key.window_id, rev)
            ),
            None,
        )
        if index is None:
            return None
        entry = next(iter(log.entries(index, index + 1)))
        proof = log.inclusion_proof(index, head.size)
    except (LogError, TileError, LogEntryError, LogCheckpointError, NoteError, ValueError) as exc:
        raise ProofError(f"{key.window_id} r{rev}: the anchor log cannot prove it: {exc}") from exc
    return {
        "checkpoint_digest": entry["checkpoint_digest"],
        "log": log_proof(verifier.name, index, head.size, head.root.hex(), proof, note.decode()),
    }


def _bundle_v2(
    store: ObjectStore,
    reader: LedgerReader,
    topic: str,
    checkpoint: dict[str, Any],
    log_proof: dict[str, Any],
    leaves: list[bytes],
    index: int,
    verifier: Verifier | None,
) -> dict[str, Any]:
    """The v2 bundle: the window's log entry, its proof in the run's signed head, and the
    newest anchored head (with a consistency proof when it is newer than the run's)."""
    window = f"{checkpoint['window']['id']} r{checkpoint['revision']}"
    if verifier is None:
        raise ProofError(f"{window}: no log key to check the signed head with")
    log = LogReader(store, topic, verifier, log_proof["origin"])
    try:
        latest = log.checkpoint()
        (entry,) = list(log.entries(log_proof["index"], log_proof["index"] + 1))
        anchor = _newest_anchored(log, reader, topic, log_proof["size"], latest)
        size = anchor.body["size"] if anchor.body else log_proof["size"]
        consistency = (
            log.consistency_proof(log_proof["size"], size) if size > log_proof["size"] else []
        )
    except (LogError, TileError, LogEntryError, LogCheckpointError, NoteError, ValueError) as exc:
        raise ProofError(f"{window}: the anchor log cannot prove it: {exc}") from exc
    if anchor.ref is None or anchor.body is None:
        raise ProofError(f"{window}: log head {anchor.key} is not on the ledger")
    try:
        return make_bundle_v2(
            leaves=leaves,
            index=index,
            checkpoint=checkpoint,
            log_entry=entry,
            log_proof=log_proof,
            anchor_ref=anchor.ref.to_json(),
            anchor_body=anchor.body,
            consistency=consistency,
            verifier=verifier,
        )
    except ProofBundleError as exc:
        raise ProofError(f"{window}: {exc}") from exc


def _newest_anchored(
    log: LogReader, reader: LedgerReader, topic: str, size: int, latest: LogCheckpoint | None
) -> LedgerObservation:
    """The ledger entry of the log's current head if anchored, else of the run's own head."""
    if latest is not None and latest.size > size:
        newest = reader.observe(f"head/{topic}/{latest.size}")
        if newest.ref is not None and newest.body is not None:
            return newest
    return reader.observe(f"head/{topic}/{size}")


def _read_own_ref(ledger: Ledger, ref: dict[str, Any]) -> dict[str, Any]:
    """The body of the very entry the bundle's locator names, read through the pinned
    ledger: a locator pointing at a third party's entry (whatever writer it claims) is
    refused by the ledger (`ForeignAnchor`, `ForeignPublisher`), not looked past."""
    try:
        return ledger.read(AnchorRef.from_json(ref))
    except LedgerUnavailable as exc:
        raise ProofBundleError(f"the pinned ledger is unreachable: {exc}") from exc
    except LedgerError as exc:
        raise ProofBundleError(
            f"the bundle's anchor reference is not the pinned writer's entry "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofBundleError(f"the bundle's anchor reference is unusable: {exc}") from exc


def check_online(
    bundle: dict[str, Any],
    trust: Any,  # flows.audit_log.TrustPolicy | None
    pinned: tuple[str, Verifier] | None,
    topic: str | None = None,
    group: str | None = None,
) -> list[str]:
    """After the offline check: is the anchored head on the pinned ledger, is the current
    log consistent with it, and was a newer revision of the window logged since?

    Raises `ProofBundleError` on any contradiction; returns the steps that passed.
    """
    from storage.ledger.factory import open_ledger
    from storage.objectstore import open_store
    from streamnotary.config import load_settings

    if bundle.get("schema") != "streamnotary.proof-bundle/2" or pinned is None:
        raise ProofBundleError("--online needs a v2 bundle and a pinned log key")
    cp, anchor = bundle["checkpoint"], bundle["anchor"]
    settings = load_settings(topic=topic or cp["source"]["topic"])
    steps = []
    with open_ledger(settings, trusted_identity=trust.ledger if trust else None) as ledger:
        obs = LedgerReader(ledger).observe(anchor["ref"]["key"])
        own = _read_own_ref(ledger, anchor["ref"])
    if own != anchor["body"]:
        raise ProofBundleError(f"the entry the bundle references holds another body than {own}")
    if obs.ref is None or obs.ref.digest != anchor["ref"]["digest"]:
        raise ProofBundleError(
            f"the pinned ledger has no entry {anchor['ref']['key']} with digest "
            f"{anchor['ref']['digest']} ({obs.error or 'absent or different'})"
        )
    steps.append(f"the pinned {ledger.backend} ledger holds {obs.key} with the bundle's digest")
    scope = f"{settings.topic}/{group}" if group else settings.topic  # tasks.groups.LogScope
    log = LogReader(open_store(settings), scope, pinned[1], pinned[0])
    try:
        head = log.checkpoint()
        if head is None:
            raise ProofBundleError("the bucket holds no anchor log for this topic")
        size = anchor["body"]["size"]
        verify_consistency(
            size,
            head.size,
            bytes.fromhex(anchor["body"]["root"]),
            head.root,
            log.consistency_proof(size, head.size),
        )
        newer = [
            (i, e["revision"])
            for i, e in enumerate(log.entries(0, head.size))
            if e["type"] == "window"
            and e["window_id"] == cp["window"]["id"]
            and e["revision"] > cp["revision"]
        ]
    except (LogError, TileError, LogEntryError, LogCheckpointError, NoteError, MerkleError) as exc:
        raise ProofBundleError(f"the current log does not extend the bundle's head: {exc}") from exc
    steps.append(f"the current signed log (size {head.size}) extends the anchored head {size}")
    if newer:
        i, rev = newer[-1]
        steps.append(
            f"NEWER REVISION: {cp['window']['id']} r{rev} (log entry {i}) supersedes the proven "
            f"r{cp['revision']}: this record may have changed"
        )
    else:
        steps.append(
            f"no newer revision of {cp['window']['id']} is logged: r{cp['revision']} is current"
        )
    return steps
