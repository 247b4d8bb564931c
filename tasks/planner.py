"""Decide, for one run, which windows close and which messages are late (pure).

Input: the durable cursor of the previous run and the messages read in this run.
Output: the windows to anchor now (with their messages and close reason), the windows
that received late messages (they get a new revision), the unattributable messages, and
the next cursor. See docs/design.md, "When a window closes" and "One run".

The cursor (`streamnotary.cursor/2`) is the only mutable state of the pipeline:

* per partition, ``resume`` (first offset still needed next run: the first offset of a
  still-open window, else ``read_end``) and ``read_end`` (offsets below it were read);
* per station, the event-time ``watermark``, ``closed_until`` (every window ending at or
  before it is closed) and ``progress_at`` (wall-clock time the watermark last advanced,
  for the idle timeout);
* ``held``: the stored copy of the messages of still-open windows (`HeldRef`). With it a
  run reads Kafka from ``read_end`` instead of ``resume``, so a station that reports once
  and then falls silent no longer makes every later run re-read everything after its
  open window (docs/design.md, "Bounded work per run"). Without it (missing, altered,
  or a cursor/1), the run re-reads from ``resume``: the held copy is a cache, never the
  source of truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks.message import Classified, SourceMessage, classify
from tasks.stage_timing import DECODE, stage
from tasks.window import WindowKey, WindowSpec

CURSOR_SCHEMA = "streamnotary.cursor/2"
_CURSOR_SCHEMAS = ("streamnotary.cursor/1", CURSOR_SCHEMA)  # /1: no held messages
_TS = "%Y-%m-%dT%H:%M:%SZ"


class CursorError(ValueError):
    """A stored cursor cannot be used with the current configuration."""


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.strftime(_TS)


def _parse_ts(s: str | None) -> datetime | None:
    return None if s is None else datetime.strptime(s, _TS).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PartitionCursor:
    resume: int = 0
    read_end: int = 0


@dataclass(frozen=True, slots=True)
class HeldRef:
    """Where the messages of still-open windows are stored, and their digest."""

    key: str
    sha256: str
    messages: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "messages": self.messages}


@dataclass(frozen=True, slots=True)
class StationCursor:
    watermark: datetime | None = None
    closed_until: datetime | None = None
    progress_at: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    topic: str
    window_seconds: int
    partitions: dict[int, PartitionCursor] = field(default_factory=dict)
    stations: dict[str, StationCursor] = field(default_factory=dict)
    unattributable: int = 0
    runs: int = 0
    held: HeldRef | None = None

    def partition(self, p: int) -> PartitionCursor:
        return self.partitions.get(p, PartitionCursor())

    def station(self, s: str) -> StationCursor:
        return self.stations.get(s, StationCursor())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CURSOR_SCHEMA,
            "topic": self.topic,
            "window_seconds": self.window_seconds,
            "partitions": {
                str(p): {"resume": c.resume, "read_end": c.read_end}
                for p, c in sorted(self.partitions.items())
            },
            "stations": {
                s: {
                    "watermark": _ts(c.watermark),
                    "closed_until": _ts(c.closed_until),
                    "progress_at": _ts(c.progress_at),
                }
                for s, c in sorted(self.stations.items())
            },
            "unattributable": self.unattributable,
            "runs": self.runs,
            "held": None if self.held is None else self.held.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Cursor:
        if doc.get("schema") not in _CURSOR_SCHEMAS:
            raise CursorError(f"not a {CURSOR_SCHEMA} document: {doc.get('schema')!r}")
        held = doc.get("held")
        return cls(
            topic=doc["topic"],
            window_seconds=int(doc["window_seconds"]),
            partitions={
                int(p): PartitionCursor(int(v["resume"]), int(v["read_end"]))
                for p, v in doc["partitions"].items()
            },
            stations={
                s: StationCursor(
                    _parse_ts(v["watermark"]),
                    _parse_ts(v["closed_until"]),
                    _parse_ts(v["progress_at"]),
                )
                for s, v in doc["stations"].items()
            },
            unattributable=int(doc.get("unattributable", 0)),
            runs=int(doc.get("runs", 0)),
            held=None
            if not held
            else HeldRef(str(held["key"]), str(held["sha256"]), int(held["messages"])),
        )

    @classmethod
    def empty(cls, topic: str, window_seconds: int) -> Cursor:
        return cls(topic=topic, window_seconds=window_seconds)

    def check_compatible(self, topic: str, window_seconds: int) -> None:
        """Refuse to continue a cursor written for another topic or window size."""
        if self.topic != topic:
            raise CursorError(f"cursor belongs to topic {self.topic!r}, not {topic!r}")
        if self.window_seconds != window_seconds:
            raise CursorError(
                f"windows of this topic were cut with size {self.window_seconds}s; "
                f"changing it to {window_seconds}s would re-window anchored data"
            )


class CursorConflict(CursorError):
    """The stored cursor is not the one this run started from (another writer moved it)."""


def check_successor(current: Cursor | None, new: Cursor) -> bool:
    """Whether `new` may replace `current`; False if it is already stored (nothing to do).

    A cursor is replaced only by its direct successor (``runs`` one higher) that reads no
    partition less far: anything else means another run wrote the cursor meanwhile, and
    writing ours would roll its progress back. Raises `CursorConflict`.
    """
    if current is not None and current.to_json() == new.to_json():
        return False
    base_runs = 0 if current is None else current.runs
    if new.runs != base_runs + 1:
        raise CursorConflict(
            f"cursor of {new.topic!r} is at run {base_runs}, this run planned from run "
            f"{new.runs - 1}: another run moved it; not overwriting"
        )
    if current is not None:
        for p, c in current.partitions.items():
            if new.partition(p).read_end < c.read_end:
                raise CursorConflict(
                    f"cursor of {new.topic!r} partition {p}: read_end would go back from "
                    f"{c.read_end} to {new.partition(p).read_end}; not overwriting"
                )
    return True


@dataclass(frozen=True)
class ClosingWindow:
    """A window whose first revision is anchored in this run."""

    key: WindowKey
    items: list[Classified]
    close_reason: str


@dataclass(frozen=True)
class RunPlan:
    closing: list[ClosingWindow]
    late: dict[WindowKey, list[Classified]]
    unattributable: list[Classified]
    next_cursor: Cursor
    messages_read: int
    messages_new: int
    # windows with messages in this run's read that stay open (not closed, not anchored)
    held_open: dict[WindowKey, list[Classified]] = field(default_factory=dict)
    held: list[SourceMessage] = field(default_factory=list)  # messages of still-open windows


@dataclass(frozen=True)
class PlanOptions:
    spec: WindowSpec
    allowed_lateness: timedelta = timedelta(hours=1)
    idle_timeout: timedelta | None = None
    drain: bool = False


def plan_run(
    cursor: Cursor,
    messages: Iterable[SourceMessage],
    read_ends: Mapping[int, int],
    options: PlanOptions,
    now: datetime,
) -> RunPlan:
    """Classify the messages read in this run and decide what closes.

    `messages` are everything read from `[cursor.resume, read_ends[p])` per partition.
    Messages below the previous `read_end` were seen by an earlier run: those of windows
    that were already closed are skipped, those of still-open windows are taken again
    (they were never anchored).
    """
    spec = options.spec
    open_items: dict[WindowKey, list[Classified]] = defaultdict(list)
    late: dict[WindowKey, list[Classified]] = defaultdict(list)
    unattributable: list[Classified] = []
    watermarks = {s: c.watermark for s, c in cursor.stations.items()}
    advanced: set[str] = set()
    read = new = 0
    with stage(DECODE):
        classified = [classify(msg, spec) for msg in messages]
    # looked up once per message: plain dicts, not the cursor's accessor methods
    read_end = {p: c.read_end for p, c in cursor.partitions.items()}
    closed = {s: c.closed_until for s, c in cursor.stations.items() if c.closed_until is not None}
    for c in classified:
        msg = c.message
        read += 1
        seen_before = msg.offset < read_end.get(msg.partition, 0)
        new += not seen_before
        if c.window is None:
            if not seen_before:
                unattributable.append(c)
            continue
        station = c.window.station_id
        if c.record is not None:
            wm = watermarks.get(station)
            if wm is None or c.record.observed_at > wm:
                watermarks[station] = c.record.observed_at
                advanced.add(station)
        closed_until = closed.get(station)
        if closed_until is not None and c.window.end <= closed_until:
            if not seen_before:
                late[c.window].append(c)
            continue
        open_items[c.window].append(c)

    stations = dict(cursor.stations)
    closing: list[ClosingWindow] = []
    by_station: dict[str, list[WindowKey]] = defaultdict(list)
    for key in open_items:
        by_station[key.station_id].append(key)
    for station in set(by_station) | set(watermarks) | set(cursor.stations):
        prev = cursor.station(station)
        wm = watermarks.get(station)
        progress_at = now if station in advanced else prev.progress_at
        candidates = [wm - options.allowed_lateness] if wm is not None else []
        if prev.closed_until is not None:
            candidates.append(prev.closed_until)
        closed_until = max(candidates) if candidates else None
        keys = sorted(by_station.get(station, []))
        reason = "watermark"
        if keys and options.drain:
            reason = "drain"
            closed_until = max([k.end for k in keys] + ([closed_until] if closed_until else []))
        elif (
            keys
            and options.idle_timeout is not None
            and progress_at is not None
            and now - progress_at >= options.idle_timeout
        ):
            reason = "idle_timeout"
            closed_until = max([k.end for k in keys] + ([closed_until] if closed_until else []))
        for key in keys:
            if closed_until is not None and key.end <= closed_until:
                # a window the watermark alone would close keeps reason "watermark"
                natural = wm is not None and key.end <= wm - options.allowed_lateness
                closing.append(
                    ClosingWindow(key, open_items[key], "watermark" if natural else reason)
                )
        stations[station] = StationCursor(wm, closed_until, progress_at)

    closing_keys = {w.key for w in closing}  # a set: a list scan was O(windows²)
    still_open = [k for k in open_items if k not in closing_keys]
    resume: dict[int, int] = {}
    for key in still_open:
        for c in open_items[key]:
            p = c.message.partition
            resume[p] = min(resume.get(p, c.message.offset), c.message.offset)
    partitions = {
        p: PartitionCursor(resume.get(p, end), end)
        for p, end in {**{p: c.read_end for p, c in cursor.partitions.items()}, **read_ends}.items()
    }
    next_cursor = Cursor(
        topic=cursor.topic,
        window_seconds=cursor.window_seconds,
        partitions=partitions,
        stations=stations,
        unattributable=cursor.unattributable + len(unattributable),
        runs=cursor.runs + 1,
    )
    closing.sort(key=lambda w: w.key)
    held = sorted(
        (c.message for key in still_open for c in open_items[key]),
        key=lambda m: (m.partition, m.offset),
    )
    return RunPlan(
        closing=closing,
        late=dict(sorted(late.items())),
        unattributable=unattributable,
        next_cursor=next_cursor,
        messages_read=read,
        messages_new=new,
        held_open={k: open_items[k] for k in sorted(still_open)},
        held=held,
    )


def merge_ranges(
    ranges: Mapping[int, tuple[int, int]], items: Iterable[Classified]
) -> dict[int, tuple[int, int]]:
    """Extend per-partition offset ranges so that they also cover `items`."""
    merged = dict(ranges)
    for c in items:
        p, o = c.message.partition, c.message.offset
        lo, hi = merged.get(p, (o, o + 1))
        merged[p] = (min(lo, o), max(hi, o + 1))
    return dict(sorted(merged.items()))


def cap_ranges(
    ranges: Mapping[int, tuple[int, int]], cap: int, *, min_share: int = 1, turn: int = 0
) -> dict[int, tuple[int, int]]:
    """Shorten per-partition ranges ``[start, end)`` to at most `cap` offsets in total.

    Bounded work per run: a backlog longer than one run can read is consumed run by run.
    The cap is shared evenly by the partitions that have a backlog, and what a short
    partition does not need goes to the others. `cap <= 0` means no cap.

    Whole shares: where an even split would give each partition fewer than `min_share`
    offsets, only ``cap // min_share`` partitions are read this run, each a share of at
    least `min_share`, taken in turn: run `turn` starts ``turn * k`` places further in the
    sorted list of partitions with a backlog (`turn` = the cursor's run number, so the
    choice is a function of the cursor and a re-run makes the same one). Every partition
    with a backlog is read at least once every ``ceil(n / k)`` runs while that list stays
    the same. Why: each partition a run reads costs a fetch restart (assign, a fetch round
    trip, a prefetch the run throws away past its range), so many thin slices of many
    partitions cost more than a few thick ones; windows close by each station's own
    watermark (`plan_run`) and a station's messages share one partition (its key), so
    partitions need not advance together. A producer that spreads one station over several
    partitions can see more of its rows arrive late: they become revisions, never losses.
    """
    out = {p: (s, e) for p, (s, e) in ranges.items()}
    want = {p: e - s for p, (s, e) in ranges.items() if e > s}
    if cap <= 0 or sum(want.values()) <= cap:
        return out
    page = max(1, min_share)
    order = sorted(want)
    first_batch = max(1, min(len(order), cap // page))
    first = (turn * first_batch) % len(order)
    queue = order[first:] + order[:first]
    grant = dict.fromkeys(want, 0)
    left = cap
    while left > 0 and queue:
        k = max(1, min(len(queue), left // page))
        batch, queue = queue[:k], queue[k:]
        # fill the batch evenly; what a short partition leaves goes to the others
        short = {p: want[p] for p in batch}
        while left > 0 and short:
            share = max(1, left // len(short))
            for p in sorted(short):
                take = min(share, short[p], left)
                grant[p] += take
                short[p] -= take
                left -= take
            short = {p: w for p, w in short.items() if w > 0}
    for p, g in grant.items():
        start = ranges[p][0]
        out[p] = (start, start + g)
    return out
