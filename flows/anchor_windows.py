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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, runtime

from flows import heartbeat
from flows.plain_flow import plain_flow
from flows.plan_completion import PlanResumeError, complete_plan
from flows.window_build import WindowJob, plan_revisions
from storage import layout
from storage.lease import Holder, TopicLease
from storage.logkey import log_origin
from storage.objectstore import open_store
from streamnotary import process_memory
from streamnotary.config import Settings, load_settings
from streamnotary.faults import kill_point
from tasks import steps
from tasks.checkpoint import Supersedes, checkpoint_digest, ranges_of
from tasks.gc_pause import cyclic_gc_paused
from tasks.message import Classified, SourceMessage, classify
from tasks.offset_ranges import (
    messages_in,
    span_length,
    split_by_read,
    station_keys,
    union_ranges,
)
from tasks.pack import PackBuilder
from tasks.planner import Cursor, PlanOptions, RunPlan, cap_ranges, merge_ranges, plan_run
from tasks.revision import (
    PlannedRevision,
    pending_document,
    plan_bytes,
    quarantine_doc,
)
from tasks.run_artifacts import explain_run, track_progress
from tasks.run_log import log_plan, run_entries
from tasks.run_report import held_open_by_station
from tasks.run_summary import RunSummary
from tasks.window import WindowKey, WindowSpec


@plain_flow(name="anchor-windows", log_prints=True)
def anchor_windows(
    topic: str | None = None,
    drain: bool = False,
    ledger: str | None = None,
    window_seconds: int | None = None,
    allowed_lateness_seconds: int | None = None,
    idle_timeout_seconds: int | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """Anchor every window revision that is closed at the end of this run's read.

    The whole run holds the topic's lease (storage/lease.py): a second run of the same
    topic, from any deployment, backfill, CLI or host, exits with `LeaseHeld`. With
    `group` (a name of setting `partition_groups`, e.g. ``p0_1``) the run reads and
    anchors only that group's partitions, under the group's own lease, cursor and log;
    runs of different groups proceed in parallel (`anchor-groups` starts them all).
    """
    with heartbeat.beating():  # in a catch-up, from its one shared thread: flows/heartbeat.py
        settings = load_settings(
            topic=topic,
            group=group,
            ledger=ledger,
            window_seconds=window_seconds,
            allowed_lateness_seconds=allowed_lateness_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
        )
        if settings.partition_groups and not settings.group:
            # A topic split into groups has no topic-wide writer: run every group instead.
            from flows.anchor_groups import run_groups

            return {"groups": run_groups(settings.topic, drain=drain, ledger=ledger)}
        settings.group_partitions  # noqa: B018 - an unknown group fails here, before any write
        steps.check_write_once(settings)  # before the lease: the lease needs conditional writes
        # a run makes several acyclic objects per message read: see tasks/gc_pause.py
        with topic_lease(settings, "anchor-windows"), cyclic_gc_paused():
            return anchor_run(settings, drain)


def topic_lease(settings: Settings, purpose: str) -> TopicLease:
    """The topic's lease for this run, holder id = host, pid and Prefect flow run id."""
    run_id = None
    flow_run = runtime.flow_run.get_id()
    if flow_run:
        run_id = str(flow_run)
    return TopicLease(
        open_store(settings),
        settings.log_scope.name,
        seconds=settings.lease_seconds,
        purpose=purpose,
        holder=Holder.this_process(run_id),
    )


def anchor_run(settings: Settings, drain: bool) -> dict[str, Any]:
    """One run of anchor-windows, under the topic's lease."""
    summary = RunSummary(topic=settings.topic, ledger=settings.ledger)
    # before the run allocates: freed large blocks must not stay resident (its docstring)
    threshold = process_memory.fix_mmap_threshold()
    summary.memory.update(process_memory.at_start(), mmap_threshold_bytes=threshold)
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
    work = build_run(settings, cursor, drain, summary)
    plan, revisions, now = work.plan, work.revisions, work.now
    quarantine = [quarantine_doc(c) for c in [*plan.unattributable, *work.quarantined]]

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
        quarantined=work.quarantined,
        unattributable=plan.unattributable,
        held_open=plan.held_open,
        now=now,
        layout=settings.object_layout,
        checkpoint_pack=layout.checkpoint_pack_key(settings.log_scope.name, plan.next_cursor.runs)
        if settings.object_layout == "pack"
        else None,
    )
    pending = pending_document(
        settings.topic,
        revisions,
        quarantine,
        plan.next_cursor.to_json(),
        log=log_plan(log_origin(settings), log_size, entries),
    )
    serialized = [r.checkpoint_bytes for r in revisions]
    stored = plan_bytes(pending, serialized)
    steps.sign_plan(settings, stored)
    steps.write_plan(settings, stored)
    kill_point("after_plan")
    payloads = run_payloads(settings, work.pack, revisions)
    # From here on the run needs only the plan, the checkpoints' bytes and the payloads:
    # the revisions (each payload a second time) and the stored plan are let go.
    del work, revisions, stored
    complete_plan(
        settings, pending, payloads=payloads, summary=summary, checkpoint_bytes=serialized
    )
    summary.unattributable += len(plan.unattributable)
    print(
        f"anchored {summary.new_anchors} window revision(s) of {settings.topic} "
        f"on the {settings.ledger} ledger (log size {summary.log_size}, root {summary.log_root})"
    )
    return explain_run(settings, summary, cursor, plan.next_cursor)


@dataclass(frozen=True)
class RunWork:
    """What a run anchors, built from its read: no longer the messages it was built from.

    A run's messages, their classifications, records and leaves are most of the Python
    memory it holds (docs/benchmarks.md, "Session 24"); none of them is needed to write and
    anchor once the revisions are built, so `build_run` returns only this, and they are
    freed before the writes. (The process's peak is set earlier, while the Kafka consumer
    is open: "Session 25".)
    """

    plan: RunPlan  # its closing and late windows and its held messages emptied
    revisions: list[PlannedRevision]
    quarantined: list[Classified]  # the rejected messages of the closing and late windows
    pack: PackBuilder | None
    now: datetime  # the run's clock: after the read, when the plan was made


def build_run(settings: Settings, cursor: Cursor, drain: bool, summary: RunSummary) -> RunWork:
    """Read this run's bounded offset ranges, plan it, and build its window revisions."""
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
    late_revisions, late_rejected = revise_late_windows(
        settings, plan.late, pack, summary, read=ranges, read_messages=messages
    )
    return RunWork(
        replace(plan, closing=[], late={}, held=[]),
        revisions + late_revisions,
        [*rejected, *late_rejected],
        pack,
        now,
    )


def run_payloads(
    settings: Settings, pack: PackBuilder | None, revisions: Sequence[PlannedRevision]
) -> dict[str, bytes]:
    """Object key -> bytes of the run's payloads: its pack (layout pack), else one per window."""
    if pack is not None and len(pack):
        return {pack.key: pack.data()}
    return {r_key(settings, r): r.payload for r in revisions}


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
    runs, so a run's work stays bounded however far behind the pipeline is. With more
    partitions than the cap has pages for, each run reads whole pages of some of them, in
    turn (`cap_ranges`).
    """
    ends = steps.read_end_offsets(settings)
    start = {
        p: cursor.partition(p).read_end if have_held else cursor.partition(p).resume for p in ends
    }
    capped = cap_ranges(
        {p: (min(start[p], end), end) for p, end in ends.items()},
        settings.max_messages_per_run,
        min_share=settings.read_page_messages,
        turn=cursor.runs,
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
    return PackBuilder(layout.pack_key(settings.log_scope.name, run))


def r_key(settings: Settings, r: PlannedRevision) -> str:
    return layout.payload_key(settings.log_scope.name, r.key, r.revision)


def revise_late_windows(
    settings: Settings,
    late: Mapping[WindowKey, Sequence[Classified]],
    pack: PackBuilder | None,
    summary: RunSummary,
    *,
    read: Mapping[int, tuple[int, int]],
    read_messages: Sequence[SourceMessage],
) -> tuple[list[PlannedRevision], list[Classified]]:
    """A new revision for each closed window that received messages after it was anchored.

    The new revision's ranges cover the previous revision's ranges and the late messages,
    and its content is rebuilt from exactly those ranges, as an auditor would: the union
    of the ranges in one pass, the offsets inside this run's own closed `read` taken from
    its `read_messages` (every message of `read`), only the rest read from Kafka again.
    """
    if not late:
        return [], []
    latest = steps.load_latest_revisions(settings, list(late))
    spec = WindowSpec(settings.window_seconds)
    ranges = {
        key: merge_ranges(ranges_of(latest[key]) if key in latest else {}, items)
        for key, items in late.items()
    }
    keys = station_keys(ranges)
    again, have = split_by_read(union_ranges(ranges.values()), read)
    summary.offsets_reread += span_length(again)
    summary.offsets_reused += span_length(have)
    rebuilt = [*steps.read_spans(settings, again, keys), *messages_in(read_messages, have, keys)]
    rebuilt.sort(key=lambda m: (m.partition, m.offset))
    # every late window's messages in one pass (classified once)
    members: dict[WindowKey, list[Classified]] = {key: [] for key in late}
    for message in rebuilt:
        c = classify(message, spec)
        if c.window in members:
            span = ranges[c.window].get(c.message.partition)
            if span is not None and span[0] <= c.message.offset < span[1]:
                members[c.window].append(c)
    jobs: list[WindowJob] = []
    rejected: list[Classified] = []
    for key in late:
        previous = latest.get(key)
        mine = members[key]
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
