"""Prefect tasks: each does one I/O step of the pipeline and declares its retries.

Every step is idempotent (write-once objects, anchors keyed by window, cursor written
last), so a retry, or a whole re-run after a crash, repeats nothing that was done.
Caching is off: the steps are cheap to repeat and their inputs can be large.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task
from prefect.utilities.annotations import quote

from storage import layout, lease, writeonce
from storage.checkpoint_store import latest_packed_of_topic
from storage.kafka import KafkaLog
from storage.ledger.base import AnchorEntry, AnchorRef
from storage.ledger.factory import open_ledger
from storage.objectstore import (
    ObjectChanged,
    ObjectConflict,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    Tagged,
    open_store,
)
from storage.store_base import put_all_once
from storage.tlog import LogForked
from storage.tlog_writer import LogWriter
from streamnotary.config import Settings
from streamnotary.faults import kill_point
from tasks.canonical import canonical_digest, parse_document, sha256_hex
from tasks.groups import GroupConfigError
from tasks.held import HeldStateError, decode_held, encode_held
from tasks.message import SourceMessage
from tasks.offset_ranges import bridge, covers
from tasks.planner import (
    Cursor,
    CursorConflict,
    CursorError,
    HeldRef,
    check_successor,
)
from tasks.retries import IO_RETRY_COUNT, IO_RETRY_DELAYS, retry_condition
from tasks.revision import document_bytes
from tasks.stage_timing import LEDGER, LOG, OBJECTS, READ, timed
from tasks.tlog.checkpoint import LogCheckpoint
from tasks.tlog.entries import entry_bytes
from tasks.tlog.note import NoteError, open_note, sign_note
from tasks.window import WindowKey

R = TypeVar("R")


class PlanUnauthenticated(RuntimeError):
    """A stored write-ahead plan that would append to the log is not signed by the log key."""


# Transient failures (unreachable broker, S3, ledger node; timeouts; 5xx) are retried,
# permanent ones (bad data, conflicts, configuration) fail at once: tasks/retries.py.
IO_RETRIES: dict[str, Any] = {
    "retries": IO_RETRY_COUNT,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_condition,
    "cache_policy": NO_CACHE,
}


class Unwalked:
    """A task's result in a box Prefect does not walk (`unwalked`)."""

    __slots__ = ("__weakref__", "value")

    def __init__(self, value: Any) -> None:
        self.value = value


def unwalked(t: Task[..., R]) -> Callable[..., R]:
    """Call task `t` with nothing Prefect walks: arguments quoted, the result boxed.

    Prefect walks every task argument recursively (`visit_collection`) to find upstream
    futures and states, looking each element up in the run's result links, and links every
    element of a task's result to its state; for a run's messages, payloads and documents
    that is tens of calls per record (a quarter of the demo's anchor run when issue 10 was
    filed, and ~4 s of a 104,202-message backfill run for the results alone). Our steps take
    and return plain data, never futures, so nothing is lost: the arguments go in
    `prefect.utilities.annotations.quote`, and the task runs a copy of `t` whose function
    returns its value in an `Unwalked` box, opened here. `.fn` and `.task` (the original
    task) stay reachable for tests and composition.
    """
    inner = t.fn

    @functools.wraps(inner)
    def boxing(*args: Any, **kwargs: Any) -> Unwalked:
        return Unwalked(inner(*args, **kwargs))

    boxed = t.with_options()
    boxed.fn = boxing  # type: ignore[assignment]

    @functools.wraps(inner)
    def call(*args: Any, **kwargs: Any) -> R:
        result = boxed(*map(quote, args), **{k: quote(v) for k, v in kwargs.items()})
        return result.value  # type: ignore[attr-defined,no-any-return]

    call.fn = inner  # type: ignore[attr-defined]
    call.task = t  # type: ignore[attr-defined]
    return call


# In-process progress hook for the CLI: called with (phase, done, total).
ProgressHook = Callable[[str, int, int], None]
# Each hook with the thread it listens to (None: every thread). Partition groups run
# their anchor runs on threads of one process (`anchor-groups`, a grouped backfill): a
# run's own hooks must count that run's steps, not a sibling group's.
_progress_hooks: list[tuple[ProgressHook, int | None]] = []


def add_progress_hook(hook: ProgressHook, *, this_thread: bool = False) -> None:
    """Call `hook` on every step's progress; with `this_thread`, only on this thread's."""
    _progress_hooks.append((hook, threading.get_ident() if this_thread else None))


def remove_progress_hook(hook: ProgressHook) -> None:
    _progress_hooks[:] = [(h, t) for h, t in _progress_hooks if h is not hook]


def report_progress(phase: str, done: int, total: int) -> None:
    me = threading.get_ident()
    for hook, thread in list(_progress_hooks):
        if thread is None or thread == me:
            hook(phase, done, total)


@unwalked
@task(name="check-write-once", **IO_RETRIES)
def check_write_once(settings: Settings) -> str:
    """Refuse to run on a store that accepts overwrites (storage/writeonce.py)."""
    return writeonce.check_write_once(open_store(settings))


@unwalked
@task(name="load-cursor", **IO_RETRIES)
@timed(OBJECTS)
def load_cursor(settings: Settings) -> Cursor:
    """The durable position of the pipeline; an empty cursor on the first run."""
    store = open_store(settings)
    try:
        doc = parse_document(store.get(layout.cursor_key(settings.log_scope.name)))
    except ObjectNotFound:
        return Cursor.empty(settings.topic, settings.window_seconds)
    cursor = Cursor.from_json(doc)
    cursor.check_compatible(settings.topic, settings.window_seconds)
    return cursor


@unwalked
@task(name="load-pending-plan", **IO_RETRIES)
@timed(OBJECTS)
def load_pending(settings: Settings) -> dict[str, Any] | None:
    """The write-ahead plan of a run that did not finish, if any."""
    store = open_store(settings)
    try:
        return parse_document(store.get(layout.pending_key(settings.log_scope.name)))
    except ObjectNotFound:
        return None


@unwalked
@task(name="read-end-offsets", **IO_RETRIES)
@timed(READ)
def read_end_offsets(settings: Settings) -> dict[int, int]:
    """Per partition, the high watermark at run start: the exclusive end of this run's read.

    A run of a partition group reads only its group's partitions; a group naming a
    partition the topic does not have is refused (`GroupConfigError`), not skipped.
    """
    mine = settings.group_partitions
    with KafkaLog.from_settings(settings) as log:
        partitions = log.partitions()
        if mine is not None:
            missing = sorted(mine - set(partitions))
            if missing:
                raise GroupConfigError(
                    f"group {settings.group!r} names partition(s) {missing} that topic "
                    f"{settings.topic!r} does not have"
                )
            partitions = [p for p in partitions if p in mine]
        return {p: log.watermarks(p)[1] for p in partitions}


@unwalked
@task(name="read-offset-ranges", **IO_RETRIES)
@timed(READ)
def read_offset_ranges(
    settings: Settings, ranges: Mapping[int, tuple[int, int]]
) -> list[SourceMessage]:
    """Every message of the closed offset ranges, in pages with a deadline each.

    A page is at most `read_page_messages` offsets of one partition and must be read
    within `read_timeout_seconds`; a long range is many pages, so its total time grows
    with its length instead of failing one overall deadline.
    """
    out: list[SourceMessage] = []
    page = max(1, settings.read_page_messages)
    with KafkaLog.from_settings(settings) as log:
        for p, (start, end) in sorted(ranges.items()):
            for lo in range(start, end, page):
                hi = min(end, lo + page)
                out += log.read_range(p, lo, hi, timeout_s=settings.read_timeout_seconds)
    return out


@unwalked
@task(name="read-window-spans", **IO_RETRIES)
@timed(READ)
def read_spans(
    settings: Settings,
    spans: Mapping[int, Sequence[tuple[int, int]]],
    keys: Mapping[int, set[bytes]],
) -> list[SourceMessage]:
    """The messages of `spans` whose Kafka key is one of their partition's `keys`, in
    (partition, offset) order: the late windows' offsets this run has not read itself
    (`tasks.offset_ranges`), in pages as `read_offset_ranges` reads, one pass for all.
    Spans a short gap apart are read as one (`bridge`); the gaps' messages are dropped.
    """
    out: list[SourceMessage] = []
    page = max(1, settings.read_page_messages)
    with KafkaLog.from_settings(settings) as log:
        for p, parts in sorted(spans.items()):
            mine = keys.get(p, set())
            starts = [lo for lo, _ in parts]
            for lo, hi in bridge(parts):
                for chunk in log.read_chunks(
                    {p: (lo, hi)}, chunk=page, timeout_s=settings.read_timeout_seconds
                ):
                    out += [m for m in chunk if m.key in mine and covers(parts, starts, m.offset)]
    return out


@unwalked
@task(name="load-held-messages", **IO_RETRIES)
@timed(OBJECTS)
def load_held(settings: Settings, cursor: Cursor) -> list[SourceMessage] | None:
    """The stored messages of still-open windows the cursor names; None: re-read instead."""
    if cursor.held is None:
        return None
    try:
        data = open_store(settings).get(cursor.held.key)
        return decode_held(data, settings.topic, cursor.held.sha256)
    except (ObjectNotFound, HeldStateError) as exc:
        get_run_logger().warning(f"held-open messages unusable ({exc}); re-reading from Kafka")
        return None


@unwalked
@task(name="write-held-messages", **IO_RETRIES)
@timed(OBJECTS)
def write_held(settings: Settings, messages: Sequence[SourceMessage]) -> HeldRef | None:
    """Store the messages of still-open windows (write-once, named by their SHA-256)."""
    if not messages:
        return None
    data = encode_held(settings.topic, messages)
    digest = sha256_hex(data)
    key = layout.held_key(settings.log_scope.name, digest)
    open_store(settings).put_once(key, data, "application/json")
    return HeldRef(key, digest, len(messages))


_REVISION_NAME = re.compile(r"r[0-9]{4}\.json")  # stray objects in the prefix are not revisions


@unwalked
@task(name="load-latest-revisions", **IO_RETRIES)
@timed(OBJECTS)
def load_latest_revisions(
    settings: Settings, keys: Sequence[WindowKey]
) -> dict[WindowKey, dict[str, Any]]:
    """For windows that received late data: the checkpoint of their latest anchored revision.

    Found by the per-window checkpoints (layout per_window) and by the signed anchor log,
    whose window entries locate the checkpoints of layout pack in their run's checkpoint
    pack (`storage.checkpoint_store`); the higher revision wins. An unfinished plan is
    always completed before a run plans, so every stored checkpoint is anchored. Reads
    the log newest bundle first, as far back as these windows need, and lists per-window
    checkpoints once per station (`layout.shared_listings`): only runs with late data
    call this.
    """
    store = open_store(settings)
    prefixes = {layout.window_checkpoints_prefix(settings.log_scope.name, k): k for k in keys}
    stored: dict[WindowKey, list[str]] = {}
    for listing in layout.shared_listings(prefixes):
        for name in store.list(listing):
            directory, _, leaf = name.rpartition("/")
            key = prefixes.get(directory + "/")
            if key is not None and _REVISION_NAME.fullmatch(leaf):
                stored.setdefault(key, []).append(name)
    found: dict[WindowKey, dict[str, Any]] = {}
    for key, checkpoints in stored.items():
        found[key] = parse_document(store.get(max(checkpoints, key=layout.revision_of)))
    wanted = {k.window_id: k for k in keys}
    for wid, cp in latest_packed_of_topic(settings, wanted).items():
        key = wanted[wid]
        if key not in found or cp["revision"] > found[key]["revision"]:
            found[key] = cp
    return found


@unwalked
@task(name="write-plan", **IO_RETRIES)
@timed(OBJECTS)
def write_plan(settings: Settings, plan: bytes) -> None:
    """Store the write-ahead plan (`document_bytes` of it) before any other write of the run.

    Write-once: if another run of the same topic stored a different plan meanwhile (runs
    overlapping despite the deployment's concurrency limit, e.g. a backfill), this fails
    loudly with `ObjectConflict` instead of letting two plans interleave.
    """
    lease.require(settings.log_scope.name)
    open_store(settings).put_once(
        layout.pending_key(settings.log_scope.name), plan, "application/json"
    )


def _put_all(
    store: ObjectStore,
    objects: Sequence[tuple[str, bytes]],
    content_type: str | Callable[[str], str],
    phase: str,
) -> int:
    """Write-once puts of many objects in parallel (`put_all_once`), progress reported as
    `phase`; returns how many were new."""
    type_of = content_type if callable(content_type) else lambda _key: content_type
    return put_all_once(
        store, objects, type_of, lambda done, total: report_progress(phase, done, total)
    )


def _content_type(key: str) -> str:
    if key.endswith(".checkpoints"):  # a checkpoint pack: JSON Lines of RFC 8785 documents
        return "application/jsonl"
    return "application/vnd.apache.parquet"


@unwalked
@task(name="write-payloads", **IO_RETRIES)
@timed(OBJECTS)
def write_payloads(settings: Settings, payloads: Mapping[str, bytes]) -> int:
    """Write-once Parquet payloads and packs (payload and checkpoint packs); returns how
    many were newly created."""
    return _put_all(open_store(settings), sorted(payloads.items()), _content_type, "payloads")


@unwalked
@task(name="write-documents", **IO_RETRIES)
@timed(OBJECTS)
def write_documents(
    settings: Settings, docs: Mapping[str, dict[str, Any]], phase: str = "documents"
) -> int:
    """Write-once JSON documents (checkpoints, receipts, batch manifests, quarantine)."""
    objects = [(key, document_bytes(doc)) for key, doc in sorted(docs.items())]
    return _put_all(open_store(settings), objects, "application/json", phase)


@unwalked
@task(name="object-versions", **IO_RETRIES)
@timed(OBJECTS)
def object_versions(settings: Settings, keys: Sequence[str]) -> dict[str, str]:
    """The S3 version id of each write-once object, where the bucket keeps versions.

    The *first* version is the one the pipeline wrote (write-once: anything later is an
    overwrite), so receipts pin it and the audit reads exactly that version.
    """
    store = open_store(settings)
    if not isinstance(store, S3ObjectStore) or not store.versioning_enabled():
        return {}
    out: dict[str, str] = {}
    for key in keys:
        version = store.first_version(key)
        if version is not None:
            out[key] = version
    return out


@unwalked
@task(name="anchor-windows", **IO_RETRIES)
@timed(LEDGER)
def anchor_window_entries(
    settings: Settings, entries: Sequence[AnchorEntry]
) -> list[AnchorRef] | None:
    """One keyed entry per window revision, on ledgers that have keyed items; else None."""
    with open_ledger(settings) as ledger:
        if not ledger.supports_window_items:
            return None
        refs: list[AnchorRef] = []
        chunk = max(1, settings.ledger_publish_chunk)  # MultiChain: one publishmulti each
        for start in range(0, len(entries), chunk):
            refs += ledger.anchor_many(entries[start : start + chunk])
            report_progress("anchors", len(refs), len(entries))
            if start == 0:
                kill_point("mid_window_anchors")
        return refs


@unwalked
@task(name="advance-cursor", **IO_RETRIES)
@timed(OBJECTS)
def advance_cursor(settings: Settings, cursor: dict[str, Any]) -> None:
    """Persist the next cursor, then drop the finished plan. Always the last write.

    Compare-and-swap: the stored cursor must be the one this run planned from (its
    direct predecessor, `check_successor`), and it is replaced with ``If-Match`` on the
    tag just read, so an overlapping writer can never roll it back (`CursorConflict`).
    A cursor that is already stored is not written again.
    """
    lease.require(settings.log_scope.name)
    store = open_store(settings)
    key = layout.cursor_key(settings.log_scope.name)
    new = Cursor.from_json(cursor)
    try:
        tagged: Tagged | None = store.get_tagged(key)
    except ObjectNotFound:
        tagged = None
    current = None if tagged is None else Cursor.from_json(parse_document(tagged.data))
    if check_successor(current, new):
        try:
            store.put_if(
                key,
                document_bytes(cursor),
                None if tagged is None else tagged.etag,
                "application/json",
            )
        except ObjectChanged as exc:
            raise CursorConflict(
                f"cursor of {settings.log_scope.name!r} changed while writing"
            ) from exc
    store.delete(layout.pending_key(settings.log_scope.name))
    if current is not None and current.held is not None and current.held != new.held:
        store.delete(current.held.key)  # superseded: the new cursor names its own copy


# -- the anchor log (issue 8) ------------------------------------------------------------


def _log_writer(settings: Settings) -> LogWriter:
    from storage.logkey import load_signer, log_origin

    return LogWriter(
        open_store(settings),
        settings.log_scope.name,
        load_signer(settings),
        log_origin(settings),
    )


@unwalked
@task(name="check-cursor-against-log", **IO_RETRIES)
@timed(LOG)
def check_cursor_against_log(settings: Settings, cursor: Cursor) -> int:
    """Authenticate the cursor by the signed log; returns the log's size (the append base).

    Every run that moves the cursor ends with a run entry naming the cursor's digest, so a
    cursor that differs from the last run entry's was edited, rolled back or deleted in the
    bucket: refuse it (`CursorError`) rather than skip or re-anchor offsets.
    """
    writer = _log_writer(settings)
    head = writer.head()
    if head is None or head.size == 0:
        return 0
    last = writer.reader.last_entry()
    if last is None or last["type"] != "run":
        raise CursorError(f"the anchor log of {settings.topic} does not end with a run entry")
    digest = canonical_digest(cursor.to_json())
    if digest != last["cursor_digest"]:
        raise CursorError(
            f"state cursor of {settings.topic} (sha256 {digest[:16]}…) is not the cursor the "
            f"anchor log's last run (run {last['run']}) moved to "
            f"({last['cursor_digest'][:16]}…): edited, rolled back or deleted; refusing to run"
        )
    return head.size


@unwalked
@task(name="append-log", **IO_RETRIES)
@timed(LOG)
def append_log(settings: Settings, log: Mapping[str, Any]) -> dict[str, Any]:
    """Append the plan's entries to the anchor log and publish the signed checkpoint.

    Idempotent (`storage.tlog_writer.LogWriter.append`): a resumed run finds its own append.
    """
    writer = _log_writer(settings)
    if writer.origin != log["origin"]:
        raise LogForked(f"plan appends to {log['origin']!r}, this key signs {writer.origin!r}")
    entries = [entry_bytes(e) for e in log["entries"]]
    result = writer.append(
        log["base_size"],
        entries,
        before_publish=lambda: kill_point("mid_log_append"),
        window_ids=[e.get("window_id") for e in log["entries"]],
    )
    return {
        "old": None
        if result.old is None
        else {"size": result.old.size, "root": result.old.root.hex()},
        "new": {"size": result.new.size, "root": result.new.root.hex()},
        "note": result.note.decode(),
    }


def _head_json(head: LogCheckpoint) -> dict[str, Any]:
    return {"size": head.size, "root": head.root.hex()}


@unwalked
@task(name="anchor-head", **IO_RETRIES)
@timed(LEDGER)
def anchor_head(settings: Settings, entry: AnchorEntry) -> AnchorRef:
    """Anchor the run's new log head (idempotent by key `head/<topic>/<size>`)."""
    with open_ledger(settings) as ledger:
        return ledger.anchor(entry)


@unwalked
@task(name="record-head-anchor", **IO_RETRIES)
@timed(LOG)
def record_head_anchor(settings: Settings, key: str, doc: dict[str, Any]) -> str:
    """Write the run's `streamnotary.head-anchor/1` beside the log (write-once).

    A resumed run whose ledger now reports another locator for the same entry (an EVM
    reorg moved it to another block) keeps the first document: it is only a locator hint,
    the auditor reads and compares the ledger entry itself.
    """
    try:
        return open_store(settings).put_once(key, document_bytes(doc), "application/json")
    except ObjectConflict as exc:
        get_run_logger().warning(f"head anchor record kept as first written: {exc}")
        return "existing"


@unwalked
@task(name="log-inclusion-proofs", **IO_RETRIES)
@timed(LOG)
def log_inclusion_proofs(
    settings: Settings, indexes: Sequence[int], size: int
) -> dict[int, list[bytes]]:
    """Inclusion proofs of the given entries in the tree of `size`, from the stored tiles."""
    reader = _log_writer(settings).reader
    return {i: reader.inclusion_proof(i, size) for i in indexes}


def _plan_text(origin: str, plan: bytes) -> str:
    """What the log key signs of a plan: its origin and the SHA-256 of its stored bytes."""
    return f"streamnotary write-ahead plan\n{origin}\n{sha256_hex(plan)}\n"


@unwalked
@task(name="sign-plan", **IO_RETRIES)
@timed(LOG)
def sign_plan(settings: Settings, plan: bytes) -> None:
    """Sign the plan (`document_bytes` of it) before storing it: a resumed run signs log
    entries only from a plan the log key vouched for, not from one a bucket writer put in
    `pending.json`. The caller serializes the plan once for both steps (it holds every
    checkpoint and log entry of the run)."""
    writer = _log_writer(settings)
    note = sign_note(_plan_text(writer.origin, plan), [writer.signer])
    open_store(settings).put(layout.pending_note_key(settings.log_scope.name), note, "text/plain")


@unwalked
@task(name="verify-plan", **IO_RETRIES)
@timed(LOG)
def verify_plan(settings: Settings, pending: Mapping[str, Any]) -> None:
    """`PlanUnauthenticated` unless the stored plan carries the log key's signature."""
    if pending.get("log") is None:
        return  # a plan from before the anchor log appends nothing it could make us sign
    writer = _log_writer(settings)
    try:
        data = open_store(settings).get(layout.pending_note_key(settings.log_scope.name))
        note = open_note(data, [writer.signer.verifier()])
    except (ObjectNotFound, NoteError) as exc:
        raise PlanUnauthenticated(
            f"the unfinished plan of {settings.topic} is not signed by the log key: {exc}"
        ) from exc
    if note.text != _plan_text(writer.origin, document_bytes(dict(pending))):
        raise PlanUnauthenticated(
            f"the unfinished plan of {settings.topic} is not the plan the log key signed"
        )
