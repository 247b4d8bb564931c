"""What a backfill must produce, skip or report (pure): windows recomputed from its sources.

A backfill recomputes every window its sources touch (deduplicated records, Merkle root:
exactly what anchor-windows would compute from them) and compares each with the window's
anchored latest revision:

* not anchored yet -> its records are produced to Kafka (and anchored by the runs after);
* anchored with the same root -> *skipped* (counted; nothing is produced again);
* anchored with another root -> a *conflict*: named and counted, its records are NOT
  produced, so the anchored window is never revised over by a backfill.

`resume_remainder` makes producing a source exact across a kill: the messages a killed
producer already delivered are found in the topic and only the rest is produced, so the
topic (and every offset range a checkpoint names) is the same as after an undisturbed run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tasks.dedup import deduplicate
from tasks.merkle import merkle_root
from tasks.message import SourceMessage
from tasks.record import Observation
from tasks.window import WindowKey, WindowSpec

NEW, SKIPPED, CONFLICT = "new", "skipped", "conflict"

Message = tuple[bytes, bytes, int]  # (key, value, timestamp ms) as produced


def in_range(obs: Observation, since: datetime | None, until: datetime | None) -> bool:
    """The backfill's time range: `since` <= observed_at < `until` (either side open)."""
    return (since is None or obs.observed_at >= since) and (
        until is None or obs.observed_at < until
    )


def group_windows(
    spec: WindowSpec, observations: Iterable[Observation]
) -> dict[WindowKey, list[Observation]]:
    """The observations of each window, in input order."""
    out: dict[WindowKey, list[Observation]] = defaultdict(list)
    for obs in observations:
        out[spec.key_of(obs.station_id, obs.observed_at)].append(obs)
    return dict(out)


def window_root(records: Sequence[Observation]) -> str:
    """The Merkle root (hex) anchor-windows computes for a window holding these records."""
    return merkle_root(deduplicate(records).leaves).hex()


@dataclass
class Classification:
    """Each recomputed window's verdict, and the roots behind every conflict."""

    verdicts: dict[WindowKey, str] = field(default_factory=dict)
    conflicts: list[dict[str, object]] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(v == verdict for v in self.verdicts.values())

    def produce(self, key: WindowKey) -> bool:
        return self.verdicts.get(key) == NEW


def classify(
    windows: Mapping[WindowKey, Sequence[Observation]],
    anchored: Mapping[str, tuple[int, str]],
) -> Classification:
    """Compare recomputed windows with `anchored` (window id -> (latest revision, root))."""
    result = Classification()
    for key in sorted(windows):
        known = anchored.get(key.window_id)
        if known is None:
            result.verdicts[key] = NEW
            continue
        revision, root = known
        recomputed = window_root(windows[key])
        if recomputed == root:
            result.verdicts[key] = SKIPPED
            continue
        result.verdicts[key] = CONFLICT
        result.conflicts.append(
            {
                "window_id": key.window_id,
                "anchored_revision": revision,
                "anchored_root": root,
                "recomputed_root": recomputed,
                "records": len(windows[key]),
            }
        )
    return result


def resume_remainder(
    expected: Sequence[Message], present: Iterable[SourceMessage]
) -> list[Message]:
    """The messages of `expected` still to produce, given what the topic holds after a kill.

    `present` are the topic's messages since the source's start marker, in (partition,
    offset) order. A partition receives one key's messages in produce order, and the
    idempotent producer delivers a gap-free prefix of them, so per key the delivered
    messages are a prefix of `expected` (other producers' messages may be interleaved and
    are passed over). What remains keeps the original order, so producing it leaves every
    partition exactly as one undisturbed produce would.
    """
    per_key: dict[bytes, list[Message]] = defaultdict(list)
    for m in expected:
        per_key[m[0]].append(m)
    matcher = ResumeMatcher({k: iter(v) for k, v in per_key.items()})
    matcher.feed(present)
    return list(matcher.remainder(expected))


class ResumeMatcher:
    """`resume_remainder` in bounded memory: fed the topic in chunks, the source per key.

    `expected` maps each key of the source to an iterator over its messages in produce
    order (the backfill reads them from its spill, one cursor per key); `feed` may be
    called once per chunk of the topic read since the start marker.
    """

    def __init__(self, expected: Mapping[bytes, Iterator[Message]]) -> None:
        self.expected = dict(expected)
        self.next: dict[bytes, Message | None] = {k: next(it, None) for k, it in expected.items()}
        self.matched: dict[bytes, int] = dict.fromkeys(expected, 0)

    def feed(self, present: Iterable[SourceMessage]) -> None:
        for m in present:
            if m.key is None or m.key not in self.next:
                continue
            want = self.next[m.key]
            if want is not None and m.value == want[1] and m.timestamp_ms == want[2]:
                self.matched[m.key] += 1
                self.next[m.key] = next(self.expected[m.key], None)

    @property
    def delivered(self) -> int:
        return sum(self.matched.values())

    def remainder(self, expected: Iterable[Message]) -> Iterator[Message]:
        """`expected` (in produce order) without each key's delivered prefix."""
        skip = dict(self.matched)
        for msg in expected:
            if skip.get(msg[0], 0) > 0:
                skip[msg[0]] -= 1
                continue
            yield msg


@dataclass
class Rate:
    """Rate and ETA of a phase from its start time and progress (for progress lines)."""

    started: float
    done: int = 0
    total: int = 0

    def line(self, now: float, unit: str) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:,.0f} s" if rate > 0 else "?"
        return f"{self.done:,}/{self.total:,} {unit} ({rate:,.1f} {unit}/s, ETA {eta})"
