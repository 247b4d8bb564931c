"""A backfill's sources, streamed into its spill, and the verdict on every window they touch.

Two kinds of source (flows/backfill.py):

* DWD files and archives (paths, zips, URLs): read row by row, kept when `since` <=
  observed_at < `until`, spilled as the messages ingest would produce.
* a range of a Kafka topic (`--from-topic T` with `--offsets P:START-END,...` or a time
  range): read in pages of `read_page_messages` offsets, each under the read deadline,
  and classified exactly as anchor-windows does (tasks/message.py); messages it would
  quarantine are counted and left out. With a time range the read starts at the first
  offset at or after `since` (ListOffsets by time) and ends at the high watermark at the
  start of the backfill (late messages of a window may sit anywhere after its first), and
  only windows wholly inside the range count, so no window is recomputed from a part of
  its records.

`classify_spill` then reads the spill back window by window (never more than one batch
of windows in memory), compares each with its anchored latest revision and records the
verdict in the spill, which producing reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.backfill_spill import Message, Spill
from storage.checkpoint_store import read_ref
from storage.kafka import KafkaLog
from storage.layout import is_group_name
from storage.objectstore import ObjectStore
from streamnotary.config import Settings, load_settings
from tasks.backfill_plan import CONFLICT, NEW, SKIPPED, in_range, window_root
from tasks.canonical import parse_document
from tasks.checkpoint_pack import CheckpointRef, checkpoint_ref
from tasks.dwd import DwdFormatError, read_observations
from tasks.message import classify
from tasks.record import Observation, canonical_bytes, decode_record
from tasks.window import WindowSpec

PARTIAL = "partial"
# Anchored with another root *for now*: judged again once the backlog is anchored
# (`settle_deferred`), since the topic may still hold the window's later records.
DEFERRED = "deferred"
SpillRow = tuple[str, int, str, Message]
FETCH_CONCURRENCY = 16  # parallel checkpoint GETs when comparing with anchored windows
CLASSIFY_BATCH = 128  # windows per batch: their checkpoints are fetched together


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def dwd_rows(
    path: Path,
    settings: Settings,
    lenient: bool,
    rejected: list[dict[str, str]],
    since: datetime | None,
    until: datetime | None,
) -> Iterator[SpillRow]:
    """The file's observations in range as spill rows; skipped lines go to `rejected`."""
    spec = WindowSpec(settings.window_seconds)

    def quarantine(error: DwdFormatError) -> None:
        rejected.append(error.to_json())

    rows = read_observations(
        path, lenient=lenient, quarantine=quarantine, limits=settings.dwd_limits
    )
    for o in rows:
        if in_range(o, since, until):
            yield spill_row(spec, o)


def spill_row(spec: WindowSpec, o: Observation) -> SpillRow:
    key = spec.key_of(o.station_id, o.observed_at)
    message = (o.station_id.encode(), canonical_bytes(o), int(o.observed_at.timestamp() * 1000))
    return o.station_id, key.index, key.window_id, message


def parse_offsets(text: str) -> dict[int, tuple[int, int]]:
    """``P:START-END,...`` (half-open offset ranges per partition) as a dict."""
    out: dict[int, tuple[int, int]] = {}
    for part in text.split(","):
        try:
            p, span = part.strip().split(":")
            start, end = span.split("-")
            partition, lo, hi = int(p), int(start), int(end)
        except ValueError:
            raise ValueError(f"offset range {part!r} is not P:START-END") from None
        if partition < 0 or lo < 0 or hi < lo or partition in out:
            raise ValueError(f"offset range {part!r} is empty, negative or repeated")
        out[partition] = (lo, hi)
    if not out:
        raise ValueError("no offset ranges given")
    return out


@dataclass
class TopicRange:
    """A resolved topic range source: the ranges read and what they held."""

    topic: str
    ranges: dict[int, tuple[int, int]]
    read: int = 0
    unusable: int = 0  # messages anchor-windows would quarantine: not recomputed
    partial: int = 0  # records of windows reaching outside a time range: not recomputed

    @property
    def label(self) -> str:
        spans = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(self.ranges.items()))
        return f"kafka:{self.topic}/{spans}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.label.encode()).hexdigest()


def resolve_topic_range(
    settings: Settings,
    topic: str,
    offsets: str | None,
    since: datetime | None,
    until: datetime | None,
) -> TopicRange:
    """The offset ranges to read: given, or from `since` to the current high watermarks."""
    with KafkaLog.from_settings(load_settings(topic=topic)) as log:
        if offsets:
            return TopicRange(topic, parse_offsets(offsets))
        highs = {p: log.watermarks(p)[1] for p in log.partitions()}
        if since is None:
            starts = {p: log.watermarks(p)[0] for p in highs}
        else:
            starts = log.offsets_for_time(int(since.timestamp() * 1000))
        return TopicRange(topic, {p: (min(starts[p], h), h) for p, h in highs.items()})


def topic_rows(
    settings: Settings, source: TopicRange, since: datetime | None, until: datetime | None
) -> Iterator[SpillRow]:
    """The range's records as spill rows, classified as anchor-windows classifies them."""
    spec = WindowSpec(settings.window_seconds)
    with KafkaLog.from_settings(load_settings(topic=source.topic)) as log:
        pages = log.read_chunks(
            source.ranges,
            chunk=settings.read_page_messages,
            timeout_s=settings.read_timeout_seconds,
        )
        for page in pages:
            for msg in page:
                source.read += 1
                c = classify(msg, spec)
                if c.record is None or c.window is None or msg.key is None:
                    source.unusable += 1
                    continue
                w = c.window
                inside = (since is None or w.start >= since) and (until is None or w.end <= until)
                if not inside:
                    source.partial += 1
                    continue
                ts = msg.timestamp_ms if msg.timestamp_ms is not None else -1
                yield c.record.station_id, w.index, w.window_id, (msg.key, msg.value or b"", ts)


@dataclass
class Tally:
    """Verdict counts of a backfill's windows and the roots behind every conflict."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((NEW, SKIPPED, CONFLICT), 0)
    )
    conflicts: list[dict[str, object]] = field(default_factory=list)
    partial: int = 0  # windows only partly inside a topic source's offset ranges
    deferred: list[dict[str, object]] = field(default_factory=list)

    @property
    def recomputed(self) -> int:
        return sum(self.counts.values())


Located = str | CheckpointRef  # a per-window checkpoint's key, or its place in a pack


def anchored_index(
    store: ObjectStore, topic: str, entries: Iterable[Mapping[str, Any]] = ()
) -> dict[str, tuple[int, Located]]:
    """window id -> (latest revision, where its checkpoint is) of every anchored window.

    One listing of the per-window checkpoints (the topic's, and with partition groups each
    group's, `storage.layout`), and the window entries of the signed log
    (`entries`, `storage.checkpoint_store.logged_entries`): in layout pack only the log
    locates a checkpoint, inside its run's checkpoint pack. ~100-200 bytes per anchored
    window (not per record) stay in memory.
    """
    latest: dict[str, tuple[int, Located]] = {}
    prefix = f"checkpoints/{topic}/"
    for key in store.list(prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) == 4 and is_group_name(parts[0]):  # a partition group's window
            parts = parts[1:]
        if len(parts) != 3 or not parts[2].startswith("r"):
            continue
        window_id = f"{parts[0]}_{parts[1]}"
        revision = int(parts[2][1:5])
        if revision >= latest.get(window_id, (-1, ""))[0]:
            latest[window_id] = (revision, key)
    for e in entries:
        if e.get("type") != "window":
            continue
        ref = checkpoint_ref(topic, e)
        if ref is not None and e["revision"] >= latest.get(e["window_id"], (-1, ""))[0]:
            latest[e["window_id"]] = (e["revision"], ref)
    return latest


Ranges = dict[int, tuple[int, int]]


def anchored_roots(
    store: ObjectStore, index: Mapping[str, tuple[int, Located]], wanted: Iterable[str]
) -> dict[str, tuple[int, str, Ranges]]:
    """window id -> (latest revision, Merkle root, offset ranges) for the wanted windows
    that have one. A packed checkpoint is read by range and checked against its logged
    digest (`CheckpointPackError` otherwise)."""
    todo = [(w, index[w]) for w in wanted if w in index]

    def fetch(item: tuple[str, tuple[int, Located]]) -> tuple[str, tuple[int, str, Ranges]]:
        window_id, (revision, key) = item
        doc = (
            read_ref(store, key)
            if isinstance(key, CheckpointRef)
            else parse_document(store.get(key))
        )
        ranges = {
            int(r["partition"]): (int(r["start"]), int(r["end"])) for r in doc["source"]["ranges"]
        }
        return window_id, (revision, str(doc["merkle"]["root"]), ranges)

    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY) as pool:
        return dict(pool.map(fetch, todo))


def within(inner: Ranges, outer: Ranges) -> bool:
    """Every non-empty range of `inner` lies inside `outer`'s range of its partition."""
    for p, (lo, hi) in inner.items():
        if hi > lo and not (p in outer and outer[p][0] <= lo and hi <= outer[p][1]):
            return False
    return True


def classify_spill(
    store: ObjectStore,
    spill: Spill,
    index: Mapping[str, tuple[int, Located]],
    read: Ranges | None = None,
) -> Tally:
    """Every spilled window's verdict against its anchored revision, batch by batch.

    `read`: the offset ranges of the topic itself that were spilled (a topic source that
    is the backfill's own topic, by offsets); an anchored window whose ranges reach outside
    them was read only in part, so it is counted as `partial`, not compared.
    """
    tally = Tally()
    batch: list[tuple[str, list[bytes]]] = []

    def flush() -> None:
        known = anchored_roots(store, index, [w for w, _ in batch])
        verdicts: list[tuple[str, str]] = []
        for window_id, values in batch:
            verdict = NEW
            if window_id in known:
                revision, root, ranges = known[window_id]
                if read is not None and not within(ranges, read):
                    tally.partial += 1
                    verdicts.append((window_id, PARTIAL))
                    continue
                recomputed = window_root([decode_record(v) for v in values])
                if recomputed != root:
                    # Not produced; a conflict only if it still differs once the topic's
                    # backlog is anchored: a backfill killed while anchoring left windows
                    # at an earlier revision whose later records are already in the topic.
                    tally.deferred.append(
                        {
                            "window_id": window_id,
                            "anchored_revision": revision,
                            "anchored_root": root,
                            "recomputed_root": recomputed,
                            "records": len(values),
                        }
                    )
                    verdicts.append((window_id, DEFERRED))
                    continue
                verdict = SKIPPED
            tally.counts[verdict] += 1
            verdicts.append((window_id, verdict))
        spill.set_verdicts(verdicts)
        batch.clear()

    for window_id, values in spill.windows():
        # only an anchored window is compared: a new one needs no records here
        batch.append((window_id, values if window_id in index else []))
        if len(batch) >= CLASSIFY_BATCH:
            flush()
    if batch:
        flush()
    tally.conflicts.sort(key=lambda c: str(c["window_id"]))
    return tally


def settle_deferred(
    store: ObjectStore, index: Mapping[str, tuple[int, Located]], tally: Tally
) -> None:
    """Judge the deferred windows against their anchored revision after the backlog was
    anchored (`index`: the anchored windows now): the same root is *skipped*, another one
    a *conflict*."""
    if not tally.deferred:
        return
    known = anchored_roots(store, index, [str(d["window_id"]) for d in tally.deferred])
    for d in tally.deferred:
        revision, root, _ = known[str(d["window_id"])]
        if root == d["recomputed_root"]:
            tally.counts[SKIPPED] += 1
            continue
        tally.counts[CONFLICT] += 1
        tally.conflicts.append({**d, "anchored_revision": revision, "anchored_root": root})
    tally.deferred.clear()
    tally.conflicts.sort(key=lambda c: str(c["window_id"]))


def iso_ms(ts: int) -> str | None:
    """A spill timestamp (ms) as the manifests' UTC time; None for "no records" (-1)."""
    if ts < 0:
        return None
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
