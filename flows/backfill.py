"""backfill: recompute the windows of historical DWD archives, produce what is new, anchor it.

Data engineers backfill years of history with it. Resumable after a kill at any point:

1. Every source is read and its windows recomputed (tasks/backfill_plan.py). A window
   already anchored with the same root is *skipped*; one anchored with another root is a
   *conflict*: reported (summary, log, table artifact) and never produced again, so a
   backfill never revises an anchored window. Only records of new windows are produced.
   A window that differs is judged after the anchoring (step 4), not before: a backfill
   killed while anchoring left windows at an earlier revision whose later records are
   already in the topic, and the resumed backfill's own runs anchor them.
2. A source is produced at most once: its `ingest/` manifest marks it done; a start
   marker (`streamnotary.ingest-start/1`, written before its first message) lets a
   resumed backfill find what a killed producer already delivered and produce only the
   rest, so the topic's offsets are those of an undisturbed run.
3. anchor-windows runs with ``drain=True`` until no backlog is left; each run resumes a
   killed predecessor's write-ahead plan (flows/anchor_windows.py). With partition
   groups, every group drains at the same time on its own thread (`anchor_scopes`).
4. Every window that differed in step 1 is compared with its anchored revision again: the
   same root now is *skipped*, another root a *conflict*.

Progress (records/s, windows/s, ETA) goes to the run log, a Prefect progress artifact and
the CLI (`line_hooks`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.anchor_groups import run_each
from flows.anchor_windows import topic_lease
from flows.backfill_sources import (
    Tally,
    TopicRange,
    anchored_index,
    classify_spill,
    dwd_rows,
    file_sha256,
    iso_ms,
    resolve_topic_range,
    settle_deferred,
    topic_rows,
)
from flows.catch_up import anchor_until_caught_up
from flows.ingest_dwd import (
    INGEST_SCHEMA,
    MANIFEST_WRITERS,
    ingested_sources,
    manifest_key,
    source_path,
)
from storage import lease
from storage.backfill_spill import Message, Spill
from storage.checkpoint_store import logged_entries
from storage.kafka import KafkaLog, shared_producers
from storage.objectstore import ObjectNotFound, ObjectStore, open_store
from storage.sources import FetchLimits
from streamnotary.config import Settings, load_settings
from streamnotary.faults import kill_point
from streamnotary.masking import mask_text
from streamnotary.paths import check_source
from tasks import steps
from tasks.backfill_plan import CONFLICT, NEW, SKIPPED, Rate, ResumeMatcher
from tasks.canonical import parse_document
from tasks.groups import groups_of
from tasks.revision import document_bytes

INGEST_START_SCHEMA = "streamnotary.ingest-start/1"
PROGRESS_INTERVAL_S = 2.0

# Called with each progress line (the CLI prints them on stderr).
line_hooks: list[Callable[[str], None]] = []


def start_marker_key(topic: str, sha256: str) -> str:
    return f"ingest/{topic}/{sha256}.started.json"


class Progress:
    """Backfill progress: one Prefect progress artifact, log lines, CLI hooks."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.artifact: UUID | None = None
        self.last = 0.0
        self.records = Rate(time.monotonic())
        self.windows = Rate(time.monotonic())
        self.phase = "reading"
        # windows anchored so far by each scope (topic or partition group): groups anchor
        # on threads at once, each adding its own count
        self.anchored: dict[str | None, int] = {}
        self.lock = threading.Lock()

    def count_anchored(self, scope: str | None, windows: int) -> None:
        """Scope `scope` has anchored `windows` windows of this backfill so far."""
        with self.lock:
            self.anchored[scope] = windows
            self.windows.done = min(self.windows.total, sum(self.anchored.values()))
            self.update()

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        line = (
            f"backfill {self.phase}: {self.records.line(now, 'records')}; "
            f"{self.windows.line(now, 'windows')}"
        )
        parts = [self.records, self.windows]
        percent = 100.0 * sum(p.done for p in parts) / max(1, sum(p.total for p in parts))
        if self.artifact is None:
            self.artifact = create_progress_artifact(percent, description=line)
        else:
            update_progress_artifact(self.artifact, percent, description=line)
        get_run_logger().info(line)
        for hook in list(line_hooks):
            hook(line)


def produce_source(
    settings: Settings,
    store: ObjectStore,
    log: KafkaLog,
    spill: Spill,
    source: int,
    sha: str,
    name: str,
    progress: Progress,
) -> int:
    """Produce the source's kept records exactly once across kills (module docstring, 2).

    The records come from the spill in file order; after a kill, what the topic holds since
    the start marker is read in pages and matched per key (`ResumeMatcher`), so neither
    side is held in memory whole.
    """
    marker_key = start_marker_key(settings.topic, sha)
    total = spill.kept_summary(source)[0]
    try:
        marker = parse_document(store.get(marker_key))
    except ObjectNotFound:
        marker = None
    if marker is None:
        starts = {str(p): log.watermarks(p)[1] for p in log.partitions()}
        doc = {
            "schema": INGEST_START_SCHEMA,
            "topic": settings.topic,
            "sha256": sha,
            "file": name,
            "high_watermarks": starts,
        }
        store.put_once(marker_key, document_bytes(doc), "application/json")
        todo: Iterable[Message] = spill.produce(source)
        done = 0
    else:
        since = {int(p): int(s) for p, s in marker["high_watermarks"].items()}
        matcher = ResumeMatcher({k: spill.produce(source, k) for k in spill.kept_keys(source)})
        pages = log.read_chunks(
            {p: (s, log.watermarks(p)[1]) for p, s in since.items()},
            chunk=settings.read_page_messages,
            timeout_s=settings.read_timeout_seconds,
        )
        for page in pages:
            matcher.feed(page)
        todo = matcher.remainder(spill.produce(source))
        done = matcher.delivered
    progress.records.done += done
    half = done + max(1, (total - done) // 2)
    passed = False

    def on_progress(n: int) -> None:
        nonlocal done, passed
        done += n
        progress.records.done += n
        progress.update()
        if done >= half and not passed:
            passed = True
            kill_point("mid_ingest")

    log.produce(todo, on_progress=on_progress)
    return total


@flow(name="backfill", log_prints=True)
def backfill(
    sources: Sequence[str],
    topic: str | None = None,
    lenient: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    from_topic: str | None = None,
    offsets: str | None = None,
) -> dict[str, Any]:
    """Backfill `sources` (only observations with `since` <= observed_at < `until`) and,
    with `from_topic`, a range of that topic (`offsets` "P:START-END,...", else the time
    range); the topic's lease (with `partition_groups`, every group's too) is held from
    reading the sources to the last produce, then the groups are drained at the same time,
    each under its own lease."""
    settings = load_settings(topic=topic)
    roots = [str(r) for r in settings.ingest_root_paths]
    for source in sources:
        check_source(source, roots, settings.ingest_url_prefixes)
    store = open_store(settings)
    progress = Progress(settings.topic)
    started = time.perf_counter()
    steps.check_write_once(settings)  # the lease needs conditional writes
    with (
        tempfile.TemporaryDirectory(prefix="streamnotary-backfill-") as workdir,
        ingest_leases(settings),
    ):
        spill = Spill(Path(workdir) / "spill.sqlite3")
        try:
            results, tally, ranged = ingest_phase(
                settings, store, spill, workdir, progress, sources, lenient, since, until,
                from_topic, offsets,
            )  # fmt: skip
        finally:
            spill.close()
    # 3. anchor until no backlog is left
    progress.phase = "anchoring"
    progress.windows.started = time.monotonic()
    scopes = [g.name for g in groups_of(settings.partition_groups)] or [None]
    by_scope = anchor_scopes(settings.topic, progress, scopes)
    progress.update(force=True)
    runs = [r for g in scopes for r in by_scope[g]]
    # 4. windows that differed from an earlier revision: judged now that it is all anchored
    settle_deferred(store, anchored_index(store, settings.topic, logged_entries(settings)), tally)
    report_conflicts(settings.topic, tally)
    anchored = {
        **runs[-1],
        "new_anchors": sum(r["new_anchors"] for r in runs),
        "messages_read": sum(r["messages_read"] for r in runs),
        "runs": len(runs),
    }
    if scopes != [None]:  # the last run of each group; backlog: what all groups left
        anchored["groups"] = {str(g): by_scope[g][-1] for g in scopes}
        anchored["backlog"] = sum(by_scope[g][-1]["backlog"] for g in scopes)
    windows_summary: dict[str, Any] = {
        "recomputed": tally.recomputed,
        "new": tally.counts[NEW],
        "skipped": tally.counts[SKIPPED],
        "conflicts": tally.counts[CONFLICT],
        "conflicting": tally.conflicts,
    }
    if ranged is not None:
        windows_summary["topic_source"] = {
            "source": ranged.label,
            "messages_read": ranged.read,
            "unusable": ranged.unusable,
            "records_outside_range": ranged.partial,
            "windows_partly_read": tally.partial,
        }
    seconds = time.perf_counter() - started
    print(
        f"backfill: {tally.recomputed:,} windows recomputed, {tally.counts[NEW]:,} new, "
        f"{tally.counts[SKIPPED]:,} skipped (anchored, identical), "
        f"{tally.counts[CONFLICT]:,} conflict(s) (anchored, different: not re-anchored); "
        f"{anchored['new_anchors']:,} revisions anchored in {seconds:.1f} s"
    )
    return {"ingested": results, "anchored": anchored, "windows": windows_summary}


def ingest_phase(
    settings: Settings,
    store: ObjectStore,
    spill: Spill,
    workdir: str,
    progress: Progress,
    sources: Sequence[str],
    lenient: bool,
    since: datetime | None,
    until: datetime | None,
    from_topic: str | None,
    offsets: str | None,
) -> tuple[dict[str, Any], Tally, TopicRange | None]:
    """Steps 1 and 2 (module docstring), under the lease, with the spill on local disk."""
    # 1. stream every source into the spill, then classify its windows batch by batch
    loaded: list[tuple[str, str, str, list[dict[str, str]]]] = []
    for i, source in enumerate(sources):
        path = source_path(source, workdir, FetchLimits.from_settings(settings))
        sha = file_sha256(path)
        rejected: list[dict[str, str]] = []
        spill.add(i, dwd_rows(path, settings, lenient, rejected, since, until))
        loaded.append((source, path.name, sha, rejected))
    ranged: TopicRange | None = None
    if from_topic:
        ranged = resolve_topic_range(settings, from_topic, offsets, since, until)
        spill.add(len(loaded), topic_rows(settings, ranged, since, until))
        if from_topic != settings.topic:  # its new windows are produced into the topic
            loaded.append((ranged.label, ranged.label, ranged.sha256, []))
    own = ranged.ranges if ranged is not None and offsets and from_topic == settings.topic else None
    index = anchored_index(store, settings.topic, logged_entries(settings))
    tally = classify_spill(store, spill, index, own)
    # 2. produce the records of new windows, source by source, exactly once
    progress.phase = "producing"
    results: dict[str, Any] = {}
    todo: list[tuple[int, str, str, str, list[dict[str, str]]]] = []
    ingested = ingested_sources(settings)
    for i, (source, name, sha, rejected) in enumerate(loaded):
        if sha in ingested:
            results[source] = {"records": 0, "skipped": True, "sha256": sha}
        else:
            todo.append((i, source, name, sha, rejected))
    progress.records.total = sum(spill.kept_summary(i)[0] for i, *_ in todo)
    progress.windows.total = tally.counts[NEW]
    progress.update(force=True)
    # one producer and one topic check for every source; a source's manifest is written
    # beside the next source's produce (its absence after a kill only costs a re-check)
    with (
        shared_producers(),
        KafkaLog.from_settings(settings) as log,
        ThreadPoolExecutor(MANIFEST_WRITERS) as writers,
    ):
        log.ensure_topic(settings.partitions)
        written: list[Future[Any]] = []
        for i, source, name, sha, rejected in todo:
            lease.require(settings.topic)
            produced = produce_source(settings, store, log, spill, i, sha, name, progress)
            doc = manifest(settings, source, name, sha, spill, i, rejected)
            key, data = manifest_key(settings.topic, sha), document_bytes(doc)
            written.append(writers.submit(store.put_once, key, data, "application/json"))
            results[source] = {"records": produced, "skipped": False, "sha256": sha}
        for future in written:
            future.result()
    progress.update(force=True)
    return results, tally, ranged


@contextlib.contextmanager
def ingest_leases(settings: Settings) -> Iterator[None]:
    """The leases the ingest phase holds: the topic's and, with `partition_groups`, every
    group's (in name order).

    The topic's lease excludes another backfill; a group's anchor run takes only its
    group's lease, so without holding each of them an anchor run of a group could anchor,
    between classification and produce, windows this backfill has judged new. A busy
    group makes the backfill fail with `LeaseHeld` before anything is produced.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(topic_lease(settings, "backfill-ingest"))
        for g in sorted(groups_of(settings.partition_groups), key=lambda g: g.name):
            scoped = replace(settings, group=g.name)
            stack.enter_context(topic_lease(scoped, "backfill-ingest"))
        yield


def anchor_scopes(
    topic: str, progress: Progress, scopes: Sequence[str | None]
) -> dict[str | None, list[dict[str, Any]]]:
    """`anchor_all` of every scope: the topic, or each partition group on its own thread
    at the same time (as `anchor-groups` does), so one group's reads, object writes and
    ledger anchors overlap another's work. A failing group does not stop the others; the
    backfill fails once all have finished (`GroupRunsFailed`), and re-running it resumes.
    """
    if len(scopes) == 1:
        return {scopes[0]: anchor_all(topic, progress, scopes[0])}
    jobs = {str(g): functools.partial(anchor_all, topic, progress, g) for g in scopes}
    return dict(run_each(jobs))


def anchor_all(topic: str, progress: Progress, group: str | None = None) -> list[dict[str, Any]]:
    """anchor-windows (drain) of the topic, or of one partition group under that group's
    lease, until the backlog is gone or stops shrinking."""
    base = 0

    def hook(phase: str, done: int, total: int) -> None:
        if phase == "anchors":
            progress.count_anchored(group, base + done)

    def counted(run: dict[str, Any]) -> None:
        nonlocal base
        base += run["new_anchors"]

    steps.add_progress_hook(hook, this_thread=True)
    try:
        runs = anchor_until_caught_up(topic=topic, drain=True, group=group, after_run=counted)
    finally:
        steps.remove_progress_hook(hook)
    progress.count_anchored(group, base)
    return runs


def conflict_artifact_key(topic: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]", "-", f"backfill-conflicts-{topic}".lower())


def report_conflicts(topic: str, verdicts: Tally) -> None:
    """Name every conflict in the run log and a table artifact (keyed by topic)."""
    if not verdicts.conflicts:
        return
    logger = get_run_logger()
    for c in verdicts.conflicts:
        logger.warning(
            "conflict: window %s is anchored (r%d, root %s) but recomputes to root %s; "
            "not re-anchored",
            c["window_id"],
            c["anchored_revision"],
            c["anchored_root"],
            c["recomputed_root"],
        )
    create_table_artifact(
        table=[dict(c) for c in verdicts.conflicts],
        key=conflict_artifact_key(topic),
        description=f"windows of {topic} whose recomputed content differs from the anchored one",
    )


def manifest(
    settings: Settings,
    source: str,
    name: str,
    sha: str,
    spill: Spill,
    index: int,
    rejected: list[dict[str, str]],
) -> dict[str, Any]:
    """The `streamnotary.ingest/1` manifest of a produced source (`records`: produced)."""
    records, stations, first, last = spill.kept_summary(index)
    return {
        "schema": INGEST_SCHEMA,
        "source": mask_text(source),
        "file": name,
        "sha256": sha,
        "topic": settings.topic,
        "records": records,
        "stations": stations,
        "first_observed_at": iso_ms(first),
        "last_observed_at": iso_ms(last),
        "rejected_lines": rejected,
    }
