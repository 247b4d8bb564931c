"""backfill: recompute the windows of historical DWD archives, produce what is new, anchor it.

Data engineers backfill years of history with it. Resumable after a kill at any point:

1. Every source is read and its windows recomputed (tasks/backfill_plan.py). A window
   already anchored with the same root is *skipped*; one anchored with another root is a
   *conflict*: reported (summary, log, table artifact) and never produced again, so a
   backfill never revises an anchored window. Only records of new windows are produced.
2. A source is produced at most once: its `ingest/` manifest marks it done; a start
   marker (`streamnotary.ingest-start/1`, written before its first message) lets a
   resumed backfill find what a killed producer already delivered and produce only the
   rest, so the topic's offsets are those of an undisturbed run.
3. anchor-windows runs with ``drain=True`` until no backlog is left; each run resumes a
   killed predecessor's write-ahead plan (flows/anchor_windows.py).

Progress (records/s, windows/s, ETA) goes to the run log, a Prefect progress artifact and
the CLI (`line_hooks`).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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

from flows.anchor_windows import anchor_windows
from flows.ingest_dwd import INGEST_SCHEMA, already_ingested, fetch_source, write_manifest
from storage.kafka import KafkaLog
from storage.objectstore import ObjectNotFound, ObjectStore, open_store
from storage.sources import FetchLimits
from streamnotary.config import Settings, load_settings
from streamnotary.faults import kill_point
from streamnotary.masking import mask_text
from streamnotary.paths import check_source
from tasks import steps
from tasks.backfill_plan import (
    CONFLICT,
    NEW,
    SKIPPED,
    Classification,
    Message,
    Rate,
    classify,
    group_windows,
    in_range,
    resume_remainder,
)
from tasks.canonical import parse_document
from tasks.dwd import DwdFormatError, read_observations
from tasks.record import Observation, canonical_bytes
from tasks.revision import document_bytes
from tasks.window import WindowSpec

INGEST_START_SCHEMA = "streamnotary.ingest-start/1"
FETCH_CONCURRENCY = 16  # parallel checkpoint GETs when comparing with anchored windows
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


def read_source(
    path: Path, settings: Settings, lenient: bool
) -> tuple[list[Observation], list[dict[str, str]]]:
    """The file's observations and, when lenient, the rows it skipped (for the manifest)."""
    rejected: list[dict[str, str]] = []

    def quarantine(error: DwdFormatError) -> None:
        rejected.append(
            {
                "file": str(error.file),
                "line_number": str(error.line_number),
                "reason": error.reason,
                "detail": error.detail,
                "raw": error.raw,
            }
        )

    rows = read_observations(
        path, lenient=lenient, quarantine=quarantine, limits=settings.dwd_limits
    )
    return list(rows), rejected


def anchored_index(store: ObjectStore, topic: str) -> dict[str, tuple[int, str]]:
    """window id -> (latest revision, checkpoint key) of every checkpoint of the topic."""
    latest: dict[str, tuple[int, str]] = {}
    prefix = f"checkpoints/{topic}/"
    for key in store.list(prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) != 3 or not parts[2].startswith("r"):
            continue
        window_id = f"{parts[0]}_{parts[1]}"
        revision = int(parts[2][1:5])
        if revision >= latest.get(window_id, (-1, ""))[0]:
            latest[window_id] = (revision, key)
    return latest


def anchored_roots(
    store: ObjectStore, index: Mapping[str, tuple[int, str]], wanted: Iterable[str]
) -> dict[str, tuple[int, str]]:
    """window id -> (latest revision, Merkle root) for the wanted windows that have one."""
    todo = [(w, index[w]) for w in wanted if w in index]

    def fetch(item: tuple[str, tuple[int, str]]) -> tuple[str, tuple[int, str]]:
        window_id, (revision, key) = item
        doc = parse_document(store.get(key))
        return window_id, (revision, str(doc["merkle"]["root"]))

    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY) as pool:
        return dict(pool.map(fetch, todo))


def messages_of(observations: Iterable[Observation]) -> list[Message]:
    return [
        (o.station_id.encode(), canonical_bytes(o), int(o.observed_at.timestamp() * 1000))
        for o in observations
    ]


def produce_source(
    settings: Settings, sha: str, name: str, messages: list[Message], progress: Progress
) -> int:
    """Produce `messages` exactly once across kills (see module docstring, step 2)."""
    store = open_store(settings)
    marker_key = start_marker_key(settings.topic, sha)
    with KafkaLog.from_settings(settings) as log:
        log.ensure_topic(settings.partitions)
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
            todo = messages
        else:
            since = {int(p): int(s) for p, s in marker["high_watermarks"].items()}
            present = log.read_ranges(
                {p: (s, log.watermarks(p)[1]) for p, s in since.items()},
                timeout_s=settings.read_timeout_seconds * 4,
            )
            todo = resume_remainder(messages, present)
        done = len(messages) - len(todo)
        progress.records.done += done
        half = done + max(1, len(todo) // 2)
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
    return len(messages)


@flow(name="backfill", log_prints=True)
def backfill(
    sources: Sequence[str],
    topic: str | None = None,
    lenient: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Backfill `sources` (only observations with `since` <= observed_at < `until`)."""
    settings = load_settings(topic=topic)
    roots = [str(r) for r in settings.ingest_root_paths]
    for source in sources:
        check_source(source, roots, settings.ingest_url_prefixes)
    store = open_store(settings)
    spec = WindowSpec(settings.window_seconds)
    progress = Progress(settings.topic)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="streamnotary-backfill-") as workdir:
        # 1. read every source, recompute its windows
        loaded: list[tuple[str, Path, str, list[Observation]]] = []
        rejected: dict[str, list[dict[str, str]]] = {}
        for source in sources:
            path = fetch_source(source, workdir, FetchLimits.from_settings(settings))
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            rows, rejected[sha] = read_source(path, settings, lenient)
            loaded.append((source, path, sha, [o for o in rows if in_range(o, since, until)]))
        windows = group_windows(spec, (o for *_, rows in loaded for o in rows))
        index = anchored_index(store, settings.topic)
        known = anchored_roots(store, index, (k.window_id for k in windows))
        verdicts = classify(windows, known)
        report_conflicts(settings.topic, verdicts)
        new_windows = verdicts.count(NEW)
        # 2. produce the records of new windows, source by source, exactly once
        progress.phase = "producing"
        todo: list[tuple[str, Path, str, list[Observation]]] = []
        for source, path, sha, rows in loaded:
            if already_ingested(settings, sha) is not None:
                results[source] = {"records": 0, "skipped": True, "sha256": sha}
                continue
            keep = [o for o in rows if verdicts.produce(spec.key_of(o.station_id, o.observed_at))]
            todo.append((source, path, sha, keep))
        progress.records.total = sum(len(rows) for *_, rows in todo)
        progress.windows.total = new_windows
        progress.update(force=True)
        for source, path, sha, keep in todo:
            produced = produce_source(settings, sha, path.name, messages_of(keep), progress)
            write_manifest(
                settings, sha, manifest(settings, source, path, sha, keep, rejected[sha])
            )
            results[source] = {"records": produced, "skipped": False, "sha256": sha}
        progress.update(force=True)
    # 3. anchor until no backlog is left
    progress.phase = "anchoring"
    progress.windows.started = time.monotonic()
    runs = anchor_all(settings.topic, progress)
    progress.update(force=True)
    anchored = {
        **runs[-1],
        "new_anchors": sum(r["new_anchors"] for r in runs),
        "messages_read": sum(r["messages_read"] for r in runs),
        "runs": len(runs),
    }
    windows_summary = {
        "recomputed": len(windows),
        "new": new_windows,
        "skipped": verdicts.count(SKIPPED),
        "conflicts": verdicts.count(CONFLICT),
        "conflicting": verdicts.conflicts,
    }
    seconds = time.perf_counter() - started
    print(
        f"backfill: {len(windows):,} windows recomputed, {new_windows:,} new, "
        f"{windows_summary['skipped']:,} skipped (anchored, identical), "
        f"{windows_summary['conflicts']:,} conflict(s) (anchored, different: not re-anchored); "
        f"{anchored['new_anchors']:,} revisions anchored in {seconds:.1f} s"
    )
    return {"ingested": results, "anchored": anchored, "windows": windows_summary}


def anchor_all(topic: str, progress: Progress) -> list[dict[str, Any]]:
    """anchor-windows (drain) until the backlog is gone or stops shrinking."""
    base = 0

    def hook(phase: str, done: int, total: int) -> None:
        if phase == "anchors":
            progress.windows.done = min(progress.windows.total, base + done)
            progress.update()

    steps.add_progress_hook(hook)
    try:
        runs = [anchor_windows(topic=topic, drain=True)]
        base = runs[-1]["new_anchors"]
        # Stop when the backlog stops shrinking (producers outpace the cap): the schedule goes on.
        while 0 < runs[-1]["backlog"] < (runs[-2]["backlog"] if len(runs) > 1 else float("inf")):
            runs.append(anchor_windows(topic=topic, drain=True))
            base += runs[-1]["new_anchors"]
    finally:
        steps.remove_progress_hook(hook)
    progress.windows.done = min(progress.windows.total, base)
    return runs


def conflict_artifact_key(topic: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]", "-", f"backfill-conflicts-{topic}".lower())


def report_conflicts(topic: str, verdicts: Classification) -> None:
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
    path: Path,
    sha: str,
    rows: Sequence[Observation],
    rejected: list[dict[str, str]],
) -> dict[str, Any]:
    """The `streamnotary.ingest/1` manifest of a produced source (`records`: produced)."""
    first = min((o.observed_at for o in rows), default=None)
    last = max((o.observed_at for o in rows), default=None)
    return {
        "schema": INGEST_SCHEMA,
        "source": mask_text(source),
        "file": path.name,
        "sha256": sha,
        "topic": settings.topic,
        "records": len(rows),
        "stations": sorted({o.station_id for o in rows}),
        "first_observed_at": None if first is None else first.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_observed_at": None if last is None else last.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rejected_lines": rejected,
    }
