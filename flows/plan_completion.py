"""Carrying out an anchor run's write-ahead plan: the steps after the plan is signed.

`complete_plan` is idempotent step by step, so the same code finishes a fresh run, resumes
the plan of a killed one (`flows/anchor_windows.py`) and completes a plan on an operator's
request (`streamnotary repair --complete`). The payloads of a resumed plan are re-derived
from the checkpoints' offset ranges, never taken from anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage import layout
from storage.ledger.base import AnchorRef
from storage.objectstore import open_store
from storage.tlog import checkpoint_key, head_anchor_key
from streamnotary.config import Settings
from streamnotary.faults import kill_point
from tasks import steps
from tasks.canonical import sha256_hex
from tasks.checkpoint import ranges_of
from tasks.checkpoint_pack import packed_windows, plan_checkpoint_packs
from tasks.message import classify
from tasks.pack import payload_location, plan_pack
from tasks.payload import encode_payload
from tasks.revision import quarantine_documents, receipt, window_entry
from tasks.run_log import (
    head_anchor_document,
    head_entry,
    log_proof,
    log_size_after,
    plan_layout,
    window_indexes,
)
from tasks.run_report import log_head_summary
from tasks.run_summary import RunSummary
from tasks.window import WindowKey, WindowSpec
from tasks.window_content import build_window


class PlanResumeError(RuntimeError):
    """An unfinished plan cannot be completed (its source data is gone or differs)."""


def rebuild_payloads(settings: Settings, windows: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """Re-derive the payloads of an unfinished plan from its checkpoints' offset ranges.

    Per-window payloads already stored are skipped. A pack (layout pack) is rebuilt
    whole unless it is stored: the concatenation, in plan order, of the re-derived
    payloads, which the checkpoints' offsets must describe exactly (`tasks.pack.plan_pack`),
    so the resumed run writes the identical bytes (write-once).
    """
    checkpoints = [w["checkpoint"] for w in windows]
    packs = plan_pack(checkpoints)
    packed = {i for members in packs.values() for i in members}
    out: dict[str, bytes] = {}
    store = open_store(settings)
    for i, cp in enumerate(checkpoints):
        if i in packed:
            continue
        key = WindowKey.parse(cp["window"]["id"])
        pkey = layout.payload_key(settings.log_scope.name, key, cp["revision"])
        if store.head(pkey) is not None:
            continue  # written before the crash; write-once comparison is not needed
        out[pkey] = _rederive(settings, cp)
    for pkey, members in packs.items():
        if store.head(pkey) is None:
            out[pkey] = b"".join(_rederive(settings, checkpoints[i]) for i in members)
    return out


def _rederive(settings: Settings, cp: Mapping[str, Any]) -> bytes:
    """One window revision's payload, rebuilt from its offset ranges and checked."""
    spec = WindowSpec(settings.window_seconds)
    key = WindowKey.parse(cp["window"]["id"])
    messages = steps.read_offset_ranges(settings, ranges_of(cp))
    content = build_window(
        key, [c for c in (classify(m, spec) for m in messages) if c.window == key]
    )
    data = encode_payload(content.records)
    if sha256_hex(data) != cp["payload"]["sha256"]:
        raise PlanResumeError(
            f"{cp['window']['id']} r{cp['revision']}: the offset ranges no longer reproduce "
            "the planned payload (source data changed or expired); refusing to anchor "
            "(see `streamnotary repair`)"
        )
    return data


def complete_plan(
    settings: Settings,
    pending: Mapping[str, Any],
    payloads: Mapping[str, bytes] | None,
    summary: RunSummary,
    checkpoint_bytes: Sequence[bytes] | None = None,
) -> None:
    """Carry out a stored plan. Every step is idempotent, so this also resumes a dead run.

    Order: payloads and documents, the log append (tiles, then the signed checkpoint), the
    ledger anchors (log head, then window entries on ledgers with keys), receipts (layout
    per_window), and the cursor last. No batch root is anchored any more: a `batch` in a
    plan of an earlier version is ignored (its windows are in the plan's log entries).
    `checkpoint_bytes`: the canonical bytes of the plan's checkpoints, in plan order, when
    the caller made the plan (a resumed plan's are serialized again, from the stored plan).
    """
    topic = pending["topic"]
    # The keys' scope: the topic, or ``<topic>/<group>`` for a partition group (its own
    # log, state and windows).
    scope = settings.log_scope.name
    windows = pending["windows"]
    log = pending.get("log")
    if log is None:
        raise PlanResumeError(
            f"the unfinished plan of {topic!r} predates the anchor log (no `log` member); "
            "finish it with the version that wrote it or discard it with `streamnotary repair`"
        )
    if payloads is None:
        payloads = rebuild_payloads(settings, windows)
    # layout pack: the checkpoints go into one pack that the log entries locate; written
    # together with the payload pack (one round trip for both)
    checkpoint_packs = plan_checkpoint_packs(topic, windows, log, checkpoint_bytes)
    packed = packed_windows(topic, log)
    steps.write_payloads(settings, {**payloads, **checkpoint_packs})
    docs = quarantine_documents(scope, pending)
    keys = {w["window_id"]: WindowKey.parse(w["window_id"]) for w in windows}
    for w in windows:
        if (w["window_id"], w["revision"]) not in packed:
            key = layout.checkpoint_key(scope, keys[w["window_id"]], w["revision"])
            docs[key] = w["checkpoint"]
    steps.write_documents(settings, docs, phase="checkpoints")
    kill_point("after_payloads")
    head = steps.append_log(settings, log)
    kill_point("after_log")
    previous = 0 if head["old"] is None else head["old"]["size"]
    size = head["new"]["size"]
    head_ref = steps.anchor_head(settings, head_entry(scope, size, head["new"]["root"], previous))
    steps.record_head_anchor(
        settings,
        head_anchor_key(scope, size),
        head_anchor_document(scope, size, head["new"]["root"], head["note"], head_ref.to_json()),
    )
    kill_point("after_head_anchor")
    summary.ledger_entries += 1
    summary.log_size, summary.log_root = size, head["new"]["root"]
    summary.head_ref = head_ref.to_json()
    summary.log = log_head_summary(
        scope, log["origin"], head["new"], previous, head_ref.to_json(), checkpoint_key(scope)
    )

    if windows:
        indexes = window_indexes(log)
        digests = (
            [None] * len(windows)
            if checkpoint_bytes is None
            else [sha256_hex(b) for b in checkpoint_bytes]
        )
        entries = [
            window_entry(
                topic,
                keys[w["window_id"]],
                w["revision"],
                w["checkpoint"],
                indexes[(w["window_id"], w["revision"])],
                log_size_after(log),
                scope,
                digest,
            )
            for w, digest in zip(windows, digests, strict=True)
        ]
        window_refs = steps.anchor_window_entries(settings, entries)
        kill_point("after_anchor")
        if plan_layout(log) == "per_window":
            write_receipts(settings, pending, head, head_ref, window_refs)
        kill_point("before_cursor")
        for w in windows:
            summary.add(w["checkpoint"])
        summary.ledger_entries += 0 if window_refs is None else len(window_refs)
    summary.completed_plans.append(pending)
    steps.advance_cursor(settings, pending["next_cursor"])


def _payload_object(scope: str, w: Mapping[str, Any]) -> str:
    """The object holding a planned window's payload: its own, or the run's pack."""
    key = WindowKey.parse(w["window_id"])
    return payload_location(scope, key, w["revision"], w["checkpoint"]).key


def write_receipts(
    settings: Settings,
    pending: Mapping[str, Any],
    head: Mapping[str, Any],
    head_ref: AnchorRef,
    window_refs: Sequence[AnchorRef] | None,
) -> None:
    """Receipts v2 of the plan's windows (layout per_window): log proof, head and window refs,
    and, on a versioned bucket, the object versions this run wrote."""
    topic, windows, log = pending["topic"], pending["windows"], pending["log"]
    scope = settings.log_scope.name
    keys = {w["window_id"]: WindowKey.parse(w["window_id"]) for w in windows}
    proofs = _log_proofs(settings, log, head)
    receipts = {}
    for i, w in enumerate(windows):
        key = keys[w["window_id"]]
        receipts[layout.receipt_key(scope, key, w["revision"])] = receipt(
            topic,
            key,
            w["revision"],
            w["checkpoint_digest"],
            proofs[(w["window_id"], w["revision"])],
            head_ref,
            None if window_refs is None else window_refs[i],
            scope,
        )
    versions = steps.object_versions(
        settings,
        [
            k
            for w in windows
            for k in (
                layout.checkpoint_key(scope, keys[w["window_id"]], w["revision"]),
                _payload_object(scope, w),
            )
        ],
    )
    if versions:  # versioned bucket: pin the versions this run wrote
        for w in windows:
            key, rev = keys[w["window_id"]], w["revision"]
            receipts[layout.receipt_key(scope, key, rev)]["object_versions"] = {
                "checkpoint": versions.get(layout.checkpoint_key(scope, key, rev)),
                "payload": versions.get(_payload_object(scope, w)),
            }
    steps.write_documents(settings, receipts, phase="receipts")


def _log_proofs(
    settings: Settings, log: Mapping[str, Any], head: Mapping[str, Any]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Each window revision's inclusion proof in the head this run published."""
    indexes = window_indexes(log)
    size, root = head["new"]["size"], head["new"]["root"]
    proofs = steps.log_inclusion_proofs(settings, sorted(indexes.values()), size)
    return {
        wid: log_proof(log["origin"], i, size, root, proofs[i], head["note"])
        for wid, i in indexes.items()
    }
