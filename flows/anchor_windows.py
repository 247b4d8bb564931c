"""anchor-windows: the scheduled main flow.

Reads the closed offset range [cursor, high watermark at run start) of every partition,
closes the windows whose time has come, and for each closed window revision writes the
payload and checkpoint, appends them to the signed anchor log, anchors the log's new head
(and one keyed entry per window on ledgers with keys), writes receipts (layout per_window
only), and only then advances the cursor. A write-ahead plan makes a killed run
resumable exactly once (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, runtime

from flows.window_build import WindowJob, plan_revisions
from storage import layout
from storage.lease import Holder, TopicLease
from storage.ledger.base import AnchorRef
from storage.logkey import log_origin
from storage.objectstore import open_store
from storage.tlog import checkpoint_key, head_anchor_key
from streamnotary.config import Settings, load_settings
from streamnotary.faults import kill_point
from tasks import stage_timing, steps
from tasks.canonical import sha256_hex
from tasks.checkpoint import Supersedes, checkpoint_digest, ranges_of
from tasks.message import Classified, classify
from tasks.pack import PackBuilder, payload_location, plan_pack
from tasks.payload import encode_payload
from tasks.planner import Cursor, PlanOptions, cap_ranges, merge_ranges, plan_run
from tasks.revision import (
    PlannedRevision,
    pending_document,
    quarantine_doc,
    receipt,
    window_entry,
)
from tasks.run_artifacts import explain_run, track_progress
from tasks.run_log import (
    head_anchor_document,
    head_entry,
    log_plan,
    log_proof,
    log_size_after,
    plan_layout,
    run_entries,
    window_indexes,
)
from tasks.run_report import held_open_by_station, log_head_summary
from tasks.stage_timing import StageClock
from tasks.window import WindowKey, WindowSpec
from tasks.window_content import build_window


class PlanResumeError(RuntimeError):
    """An unfinished plan cannot be completed (its source data is gone or differs)."""


@dataclass
class RunSummary:
    """What one run anchored, per station; the `streamnotary demo` table and `--json`."""

    topic: str
    ledger: str
    new_anchors: int = 0
    resumed_plan: bool = False
    messages_read: int = 0  # from Kafka in this run
    messages_held: int = 0  # of still-open windows, stored for the next run
    backlog: int = 0  # offsets beyond this run's capped read, left for the next runs
    unattributable: int = 0
    ledger_entries: int = 0
    log_size: int | None = None
    log_root: str | None = None
    stations: dict[str, dict[str, int]] = field(default_factory=dict)
    held_open: dict[str, dict[str, Any]] = field(default_factory=dict)  # per station
    head_ref: dict[str, Any] | None = None  # where the run's log head is anchored
    log: dict[str, Any] | None = None  # the anchor-log head of this run (`log_head_summary`)
    completed_plans: list[Mapping[str, Any]] = field(default_factory=list, repr=False)
    # Created with the summary, i.e. when the flow body starts: per-stage seconds of the run.
    clock: StageClock = field(default_factory=stage_timing.start_run, repr=False)

    def add(self, checkpoint: Mapping[str, Any]) -> None:
        station = checkpoint["window"]["station_id"]
        row = self.stations.setdefault(
            station,
            {
                "windows": 0,
                "revisions": 0,
                "records": 0,
                "missing_values": 0,
                "duplicates": 0,
                "conflicts": 0,
                "quarantined": 0,
            },
        )
        counts, aggs = checkpoint["counts"], checkpoint["aggregates"]
        row["windows"] += checkpoint["revision"] == 0
        row["revisions"] += checkpoint["revision"] > 0
        row["records"] += counts["records"]
        row["missing_values"] += (
            aggs["temperature_c"]["missing"] + aggs["relative_humidity_pct"]["missing"]
        )
        row["duplicates"] += counts["duplicates"]
        row["conflicts"] += counts["conflicts"]
        row["quarantined"] += counts["rejected"]
        self.new_anchors += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "ledger": self.ledger,
            "new_anchors": self.new_anchors,
            "resumed_plan": self.resumed_plan,
            "messages_read": self.messages_read,
            "messages_held": self.messages_held,
            "backlog": self.backlog,
            "unattributable": self.unattributable,
            "ledger_entries": self.ledger_entries,
            "log_size": self.log_size,
            "log_root": self.log_root,
            "stations": dict(sorted(self.stations.items())),
            "held_open": self.held_open,
            "head_ref": self.head_ref,
            "log": self.log,
            "timings": self.clock.report(),
        }


@flow(name="anchor-windows", log_prints=True)
def anchor_windows(
    topic: str | None = None,
    drain: bool = False,
    ledger: str | None = None,
    window_seconds: int | None = None,
    allowed_lateness_seconds: int | None = None,
    idle_timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """Anchor every window revision that is closed at the end of this run's read.

    The whole run holds the topic's lease (storage/lease.py): a second run of the same
    topic, from any deployment, backfill, CLI or host, exits with `LeaseHeld`.
    """
    settings = load_settings(
        topic=topic,
        ledger=ledger,
        window_seconds=window_seconds,
        allowed_lateness_seconds=allowed_lateness_seconds,
        idle_timeout_seconds=idle_timeout_seconds,
    )
    steps.check_write_once(settings)  # before the lease: the lease needs conditional writes
    with topic_lease(settings, "anchor-windows"):
        return anchor_run(settings, drain)


def topic_lease(settings: Settings, purpose: str) -> TopicLease:
    """The topic's lease for this run, holder id = host, pid and Prefect flow run id."""
    run_id = None
    flow_run = runtime.flow_run.get_id()
    if flow_run:
        run_id = str(flow_run)
    return TopicLease(
        open_store(settings),
        settings.topic,
        seconds=settings.lease_seconds,
        purpose=purpose,
        holder=Holder.this_process(run_id),
    )


def anchor_run(settings: Settings, drain: bool) -> dict[str, Any]:
    """One run of anchor-windows, under the topic's lease."""
    summary = RunSummary(topic=settings.topic, ledger=settings.ledger)
    track_progress(settings.topic)

    pending = steps.load_pending(settings)
    if pending is not None:
        check_resumable(settings, pending)
        get_run_logger().warning("finishing the unfinished plan of an earlier run first")
        steps.verify_plan(settings, pending)
        complete_plan(settings, pending, payloads=None, summary=summary)
        summary.resumed_plan = True

    cursor = steps.load_cursor(settings)
    log_size = steps.check_cursor_against_log(settings, cursor)
    held = steps.load_held(settings, cursor)
    ranges, summary.backlog = bounded_read(settings, cursor, held is not None)
    messages = steps.read_offset_ranges(settings, ranges)
    ends = {p: end for p, (_start, end) in ranges.items()}
    # Draining closes every open window: only once the read reached the end of the log.
    options = plan_options(settings, drain and summary.backlog == 0)
    now = datetime.now(UTC)
    plan = plan_run(cursor, [*(held or []), *messages], ends, options, now)
    held_ref = steps.write_held(settings, plan.held)
    plan = replace(plan, next_cursor=replace(plan.next_cursor, held=held_ref))
    summary.messages_read += len(messages)
    summary.messages_held = len(plan.held)
    if summary.backlog:
        print(
            f"read {len(messages)} message(s), the cap of this run (max_messages_per_run); "
            f"{summary.backlog} offset(s) left for the next runs"
        )
    summary.held_open = held_open_by_station(plan.held_open, plan.next_cursor)

    pack = run_pack(settings, plan.next_cursor.runs)
    jobs = [WindowJob(w.key, w.items, w.close_reason) for w in plan.closing]
    revisions = plan_revisions(settings, jobs, open_store(settings).uri, pack)
    rejected = [c for w in plan.closing for c in w.items if c.rejected]
    late_revisions, late_rejected = revise_late_windows(settings, plan.late, pack)
    revisions += late_revisions
    quarantine = [quarantine_doc(c) for c in [*plan.unattributable, *rejected, *late_rejected]]

    cursor_moved = (
        plan.next_cursor.partitions,
        plan.next_cursor.stations,
        plan.next_cursor.held,
    ) != (cursor.partitions, cursor.stations, cursor.held)
    if not revisions and not quarantine and not cursor_moved:
        if summary.resumed_plan:
            print(f"finished an earlier run's plan: {summary.new_anchors} revision(s) anchored")
        print(f"nothing new to anchor on {settings.topic} ({plan.messages_read} messages read)")
        return explain_run(settings, summary, cursor, plan.next_cursor)

    entries = run_entries(
        topic=settings.topic,
        revisions=revisions,
        cursor=cursor,
        next_cursor=plan.next_cursor,
        quarantined=[*rejected, *late_rejected],
        unattributable=plan.unattributable,
        held_open=plan.held_open,
        now=now,
        layout=settings.object_layout,
    )
    pending = pending_document(
        settings.topic,
        revisions,
        quarantine,
        plan.next_cursor.to_json(),
        log=log_plan(log_origin(settings), log_size, entries),
    )
    steps.sign_plan(settings, pending)
    steps.write_plan(settings, pending)
    kill_point("after_plan")
    complete_plan(
        settings,
        pending,
        payloads={pack.key: pack.data()}
        if pack is not None and len(pack)
        else {r_key(settings, r): r.payload for r in revisions},
        summary=summary,
    )
    summary.unattributable += len(plan.unattributable)
    print(
        f"anchored {summary.new_anchors} window revision(s) of {settings.topic} "
        f"on the {settings.ledger} ledger (log size {summary.log_size}, root {summary.log_root})"
    )
    return explain_run(settings, summary, cursor, plan.next_cursor)


def check_resumable(settings: Settings, pending: Mapping[str, Any]) -> None:
    """Refuse, before anchoring anything, a plan whose cursor step would fail.

    A plan made from another cursor than the stored one (runs that overlapped before the
    lease existed) would anchor and then roll the cursor back; it needs an operator.
    """
    from flows.repair import cursor_status

    current = steps.load_cursor(settings)
    if cursor_status(current, pending["next_cursor"]) == "conflict":
        raise PlanResumeError(
            f"the unfinished plan of {settings.topic!r} was made from cursor run "
            f"{pending['next_cursor']['runs'] - 1}, but the stored cursor is at run "
            f"{current.runs}; nothing was written. Inspect and resolve it with "
            "`streamnotary repair` (docs/operations.md, 'Recovering an unfinished plan')."
        )


def bounded_read(
    settings: Settings, cursor: Cursor, have_held: bool
) -> tuple[dict[int, tuple[int, int]], int]:
    """This run's offset ranges per partition, capped, and the backlog left beyond them.

    The end of each range is the high watermark at run start; the start is the cursor's
    ``read_end`` when the held-open messages are available, else its ``resume``. At most
    `max_messages_per_run` offsets are read; the rest (the backlog) is left for the next
    runs, so a run's work stays bounded however far behind the pipeline is.
    """
    ends = steps.read_end_offsets(settings)
    start = {
        p: cursor.partition(p).read_end if have_held else cursor.partition(p).resume for p in ends
    }
    capped = cap_ranges(
        {p: (min(start[p], end), end) for p, end in ends.items()}, settings.max_messages_per_run
    )
    # A re-read (no held copy) always reaches the previous read_end: the cursor never goes back.
    ranges = {
        p: (lo, max(hi, min(cursor.partition(p).read_end, ends[p])))
        for p, (lo, hi) in capped.items()
    }
    return ranges, sum(ends[p] - ranges[p][1] for p in ends)


def plan_options(settings: Settings, drain: bool) -> PlanOptions:
    return PlanOptions(
        spec=WindowSpec(settings.window_seconds),
        allowed_lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        idle_timeout=timedelta(seconds=settings.idle_timeout_seconds)
        if settings.idle_timeout_seconds
        else None,
        drain=drain,
    )


def run_pack(settings: Settings, run: int) -> PackBuilder | None:
    """The run's payload pack under layout "pack" (keyed by the run number), else None."""
    if settings.object_layout != "pack":
        return None
    return PackBuilder(layout.pack_key(settings.topic, run))


def r_key(settings: Settings, r: PlannedRevision) -> str:
    return layout.payload_key(settings.topic, r.key, r.revision)


def revise_late_windows(
    settings: Settings,
    late: Mapping[WindowKey, Sequence[Classified]],
    pack: PackBuilder | None = None,
) -> tuple[list[PlannedRevision], list[Classified]]:
    """A new revision for each closed window that received messages after it was anchored.

    The new revision's ranges cover the previous revision's ranges and the late messages,
    and its content is rebuilt from exactly those ranges, as an auditor would.
    """
    if not late:
        return [], []
    latest = steps.load_latest_revisions(settings, list(late))
    spec = WindowSpec(settings.window_seconds)
    jobs: list[WindowJob] = []
    rejected: list[Classified] = []
    for key, items in late.items():
        previous = latest.get(key)
        ranges = merge_ranges(ranges_of(previous) if previous else {}, items)
        messages = steps.read_offset_ranges(settings, ranges)
        mine = [c for c in (classify(m, spec) for m in messages) if c.window == key]
        rejected += [c for c in mine if c.rejected]
        jobs.append(
            WindowJob(
                key,
                mine,
                "late_data",
                revision=0 if previous is None else previous["revision"] + 1,
                supersedes=None
                if previous is None
                else Supersedes(previous["revision"], checkpoint_digest(previous)),
            )
        )
    return plan_revisions(settings, jobs, open_store(settings).uri, pack), rejected


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
        pkey = layout.payload_key(settings.topic, key, cp["revision"])
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
) -> None:
    """Carry out a stored plan. Every step is idempotent, so this also resumes a dead run.

    Order: payloads and documents, the log append (tiles, then the signed checkpoint), the
    ledger anchors (log head, then window entries on ledgers with keys), receipts (layout
    per_window), and the cursor last. No batch root is anchored any more: a `batch` in a
    plan of an earlier version is ignored (its windows are in the plan's log entries).
    """
    topic = pending["topic"]
    windows = pending["windows"]
    if payloads is None:
        payloads = rebuild_payloads(settings, windows)
    steps.write_payloads(settings, payloads)
    docs = {
        layout.quarantine_key(topic, q["partition"], q["offset"]): q for q in pending["quarantine"]
    }
    keys = {w["window_id"]: WindowKey.parse(w["window_id"]) for w in windows}
    for w in windows:
        docs[layout.checkpoint_key(topic, keys[w["window_id"]], w["revision"])] = w["checkpoint"]
    steps.write_documents(settings, docs, phase="checkpoints")
    kill_point("after_payloads")

    log = pending.get("log")
    if log is None:
        raise PlanResumeError(
            f"the unfinished plan of {topic!r} predates the anchor log (no `log` member); "
            "finish it with the version that wrote it or discard it with `streamnotary repair`"
        )
    head = steps.append_log(settings, log)
    kill_point("after_log")
    previous = 0 if head["old"] is None else head["old"]["size"]
    size = head["new"]["size"]
    head_ref = steps.anchor_head(settings, head_entry(topic, size, head["new"]["root"], previous))
    steps.record_head_anchor(
        settings,
        head_anchor_key(topic, size),
        head_anchor_document(topic, size, head["new"]["root"], head["note"], head_ref.to_json()),
    )
    kill_point("after_head_anchor")
    summary.ledger_entries += 1
    summary.log_size, summary.log_root = size, head["new"]["root"]
    summary.head_ref = head_ref.to_json()
    summary.log = log_head_summary(
        topic, log["origin"], head["new"], previous, head_ref.to_json(), checkpoint_key(topic)
    )

    if windows:
        indexes = window_indexes(log)
        entries = [
            window_entry(
                topic,
                keys[w["window_id"]],
                w["revision"],
                w["checkpoint"],
                indexes[(w["window_id"], w["revision"])],
                log_size_after(log),
            )
            for w in windows
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


def _payload_object(topic: str, w: Mapping[str, Any]) -> str:
    """The object holding a planned window's payload: its own, or the run's pack."""
    key = WindowKey.parse(w["window_id"])
    return payload_location(topic, key, w["revision"], w["checkpoint"]).key


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
    keys = {w["window_id"]: WindowKey.parse(w["window_id"]) for w in windows}
    proofs = _log_proofs(settings, log, head)
    receipts = {}
    for i, w in enumerate(windows):
        key = keys[w["window_id"]]
        receipts[layout.receipt_key(topic, key, w["revision"])] = receipt(
            topic,
            key,
            w["revision"],
            w["checkpoint_digest"],
            proofs[(w["window_id"], w["revision"])],
            head_ref,
            None if window_refs is None else window_refs[i],
        )
    versions = steps.object_versions(
        settings,
        [
            k
            for w in windows
            for k in (
                layout.checkpoint_key(topic, keys[w["window_id"]], w["revision"]),
                _payload_object(topic, w),
            )
        ],
    )
    if versions:  # versioned bucket: pin the versions this run wrote
        for w in windows:
            key, rev = keys[w["window_id"]], w["revision"]
            receipts[layout.receipt_key(topic, key, rev)]["object_versions"] = {
                "checkpoint": versions.get(layout.checkpoint_key(topic, key, rev)),
                "payload": versions.get(_payload_object(topic, w)),
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
