"""`streamnotary repair`: show an unfinished plan, then complete it or discard what is safe.

A write-ahead plan (state/<topic>/pending.json) is normally finished by the next run. It
cannot be when its payloads can no longer be rebuilt from Kafka (retention removed the
offsets, the topic was recreated) or when it was planned from another cursor than the
stored one (runs overlapped before the lease existed). Every later run then stops with
`PlanResumeError`; this module is the way out, and it never loses anchored data:

* `inspect` reports, per planned window revision, whether its payload, checkpoint,
  ledger entry and receipt exist, whether the batch root is anchored, and how the plan's
  cursor relates to the stored one;
* `complete` finishes the plan exactly as a run would (idempotent steps);
* `discard` is allowed only while *nothing* of the plan is anchored (no ledger entry, and
  its entries not yet in the signed anchor log): it deletes the
  plan's own unanchored objects (only those whose bytes are the plan's) and the plan, and
  leaves the cursor where it is, so the next run plans those windows again from Kafka.

Both writing actions hold the topic's lease (storage/lease.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from storage import layout
from storage.lease import read_lease
from storage.ledger.factory import open_ledger
from storage.objectstore import ObjectNotFound, ObjectStore, open_store
from streamnotary.config import Settings
from tasks.batch import Batch
from tasks.canonical import sha256_hex
from tasks.checkpoint_pack import checkpoint_ref, plan_checkpoint_packs
from tasks.pack import payload_location, plan_pack
from tasks.planner import Cursor
from tasks.revision import document_bytes, quarantine_documents
from tasks.window import WindowKey


class RepairRefused(RuntimeError):
    """The requested repair would lose anchored data or cannot be done safely."""


@dataclass
class WindowState:
    window_id: str
    revision: int
    payload_stored: bool
    checkpoint_stored: bool
    anchored: bool
    receipt_stored: bool


@dataclass
class PlanReport:
    topic: str
    lease: str | None
    plan: bool
    cursor_runs: int | None
    plan_cursor_runs: int | None = None
    cursor_status: str | None = None  # successor | already_written | conflict
    batch_root: str | None = None
    batch_anchored: bool = False
    log_appended: bool = False  # the plan's entries are in the signed anchor log
    quarantine: int = 0
    windows: list[WindowState] = field(default_factory=list)

    @property
    def anything_anchored(self) -> bool:
        return self.batch_anchored or self.log_appended or any(w.anchored for w in self.windows)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "anything_anchored": self.anything_anchored}


def _cursor(store: ObjectStore, topic: str) -> Cursor | None:
    try:
        return Cursor.from_json(json.loads(store.get(layout.cursor_key(topic))))
    except ObjectNotFound:
        return None


def load_plan(store: ObjectStore, topic: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get(layout.pending_key(topic)))  # type: ignore[no-any-return]
    except ObjectNotFound:
        return None


def cursor_status(current: Cursor | None, planned: Mapping[str, Any]) -> str:
    """How the plan's next cursor relates to the stored cursor."""
    new = Cursor.from_json(planned)
    if current is not None and current.to_json() == new.to_json():
        return "already_written"
    if new.runs == (0 if current is None else current.runs) + 1:
        return "successor"
    return "conflict"


def inspect(settings: Settings) -> PlanReport:
    """What the unfinished plan of the topic consists of, and what of it is anchored."""
    store = open_store(settings)
    topic, scope = settings.topic, settings.log_scope.name  # state keys are the scope's
    held = read_lease(store, scope)
    current = _cursor(store, scope)
    plan = load_plan(store, scope)
    report = PlanReport(
        topic=topic,
        lease=None if held is None else held.describe(),
        plan=plan is not None,
        cursor_runs=None if current is None else current.runs,
    )
    if plan is None:
        return report
    report.plan_cursor_runs = int(plan["next_cursor"]["runs"])
    report.cursor_status = cursor_status(current, plan["next_cursor"])
    report.quarantine = len(plan["quarantine"])
    if plan.get("log") is not None:
        from tasks.steps import _log_writer

        head = _log_writer(settings).head()
        report.log_appended = head is not None and head.size > int(plan["log"]["base_size"])
    batch = Batch.from_manifest(plan["batch"]) if plan["batch"] else None
    with open_ledger(settings) as ledger:
        if batch is not None:
            report.batch_root = batch.root.hex()
            report.batch_anchored = (
                ledger.lookup(layout.batch_entry_key(topic, report.batch_root)) is not None
            )
        cp_packs = _checkpoint_packs(topic, plan)
        for w in plan["windows"]:
            key, rev = WindowKey.parse(w["window_id"]), int(w["revision"])
            payload_object = payload_location(scope, key, rev, w["checkpoint"]).key
            checkpoint_object = cp_packs.get(
                (w["window_id"], rev), layout.checkpoint_key(scope, key, rev)
            )
            anchored = (
                ledger.supports_window_items
                and ledger.lookup(layout.window_entry_key(scope, key, rev)) is not None
            )
            report.windows.append(
                WindowState(
                    window_id=w["window_id"],
                    revision=rev,
                    payload_stored=store.head(payload_object) is not None,
                    checkpoint_stored=store.head(checkpoint_object) is not None,
                    anchored=anchored,
                    receipt_stored=store.head(layout.receipt_key(scope, key, rev)) is not None,
                )
            )
    return report


def _checkpoint_packs(topic: str, plan: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """(window id, revision) -> the checkpoint pack the plan's log entry puts it in."""
    out: dict[tuple[str, int], str] = {}
    for e in (plan.get("log") or {}).get("entries", []):
        if e["type"] == "window":
            ref = checkpoint_ref(topic, e)
            if ref is not None:
                out[(e["window_id"], e["revision"])] = ref.key
    return out


def _delete_if_same(store: ObjectStore, key: str, expected_sha256: str) -> bool:
    """Delete `key` only if it holds exactly the expected bytes (the plan's own object)."""
    try:
        data = store.get(key)
    except ObjectNotFound:
        return False
    if sha256_hex(data) != expected_sha256:
        raise RepairRefused(f"{store.uri(key)} is not the plan's object; left untouched")
    store.delete(key)
    return True


def _delete_pack_if_same(
    store: ObjectStore, key: str, checkpoints: list[Mapping[str, Any]]
) -> bool:
    """Delete the plan's pack only if it is exactly its planned payloads, back to back."""
    try:
        data = store.get(key)
    except ObjectNotFound:
        return False
    end = 0
    for cp in checkpoints:
        p = cp["payload"]
        if sha256_hex(data[p["pack"]["offset"] : p["pack"]["offset"] + p["size"]]) != p["sha256"]:
            raise RepairRefused(f"{store.uri(key)} is not the plan's pack; left untouched")
        end = p["pack"]["offset"] + p["size"]
    if len(data) != end:
        raise RepairRefused(f"{store.uri(key)} is not the plan's pack; left untouched")
    store.delete(key)
    return True


def discard(settings: Settings) -> list[str]:
    """Delete an unfinished plan whose parts are all unanchored; returns deleted keys."""
    report = inspect(settings)
    if not report.plan:
        return []
    if report.anything_anchored:
        raise RepairRefused(
            f"the plan of {settings.topic!r} is partly anchored (on the {settings.ledger} ledger "
            "or in the signed anchor log), and anchored data is never discarded: run "
            "`streamnotary repair --complete`"
        )
    store = open_store(settings)
    topic, scope = settings.topic, settings.log_scope.name
    plan = load_plan(store, scope)
    assert plan is not None
    deleted: list[str] = []
    checkpoints = [w["checkpoint"] for w in plan["windows"]]
    for pack_key, members in plan_pack(checkpoints).items():
        if _delete_pack_if_same(store, pack_key, [checkpoints[i] for i in members]):
            deleted.append(pack_key)
    # a checkpoint pack is deleted only if it is byte for byte the plan's
    for k, data in plan_checkpoint_packs(topic, plan["windows"], plan.get("log")).items():
        if _delete_if_same(store, k, sha256_hex(data)):
            deleted.append(k)
    in_packs = _checkpoint_packs(topic, plan)
    for w in plan["windows"]:
        key, rev = WindowKey.parse(w["window_id"]), int(w["revision"])
        cp = w["checkpoint"]
        objects = []
        if (w["window_id"], rev) not in in_packs:
            objects.append((layout.checkpoint_key(scope, key, rev), sha256_hex(document_bytes(cp))))
        if "pack" not in cp["payload"]:
            objects.insert(0, (layout.payload_key(scope, key, rev), cp["payload"]["sha256"]))
        for k, digest in objects:
            if _delete_if_same(store, k, digest):
                deleted.append(k)
    if plan["batch"]:
        root = Batch.from_manifest(plan["batch"]).root.hex()
        k = layout.batch_key(topic, root)
        if _delete_if_same(store, k, sha256_hex(document_bytes(plan["batch"]))):
            deleted.append(k)
    for k, doc in quarantine_documents(scope, plan).items():
        if _delete_if_same(store, k, sha256_hex(document_bytes(doc))):
            deleted.append(k)
    for k in (layout.pending_note_key(scope), layout.pending_key(scope)):
        if store.head(k) is not None:
            store.delete(k)
            deleted.append(k)
    return deleted


def complete(settings: Settings) -> dict[str, Any]:
    """Finish the unfinished plan as a run would; `RepairRefused` if that is unsafe."""
    from flows.plan_completion import complete_plan
    from tasks.run_summary import RunSummary

    store = open_store(settings)
    plan = load_plan(store, settings.log_scope.name)
    if plan is None:
        return {"completed": False, "reason": "no unfinished plan"}
    if cursor_status(_cursor(store, settings.log_scope.name), plan["next_cursor"]) == "conflict":
        raise RepairRefused(
            f"the plan of {settings.topic!r} was made from another cursor than the stored one "
            "(overlapping runs): completing it would roll the cursor back. If nothing of it "
            "is anchored, `streamnotary repair --discard` removes it safely."
        )
    summary = RunSummary(topic=settings.topic, ledger=settings.ledger)
    complete_plan(settings, plan, payloads=None, summary=summary)
    return {"completed": True, "new_anchors": summary.new_anchors, "log_size": summary.log_size}
