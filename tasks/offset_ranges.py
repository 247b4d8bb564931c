"""Sets of Kafka offsets as disjoint spans per partition: what a late-window rebuild reads.

A run rebuilds its late windows from their whole offset ranges, as an auditor would
(docs/design.md, "Late records and revisions"). The ranges of one run's late windows
overlap heavily, and each reaches from the window's first message, read by an earlier
run, to its late one, read by this run: `union_ranges` joins them so that every offset is
read once, and `split_by_read` separates what this run already holds in memory (its own
closed read ranges) from what must be read from Kafka again. What is read again is read
in `bridge`d spans: a read restart costs about as much as reading thousands of offsets,
so spans a short gap apart are read as one and the gap's messages dropped (`covers`).
Pure: no I/O, no Prefect.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence

from tasks.message import SourceMessage
from tasks.window import WindowKey

Spans = dict[int, list[tuple[int, int]]]  # per partition: disjoint, sorted [start, end)

# Offsets a read may pass over to save a restart. A restart (assign, seek, first fetch)
# measured ~80 ms on the test broker, about 14,000 offsets at its bounded-read rate
# (benchmarks/kafka_read.py, docs/benchmarks.md); on a real cluster a restart is one fetch
# round trip, and 10,000 offsets of DWD records are about 1.5 MB: one or two fetches.
BRIDGE_GAP = 10_000


def union_ranges(windows: Iterable[Mapping[int, tuple[int, int]]]) -> Spans:
    """Per partition, the disjoint, sorted offset ranges covering every given window's
    range of that partition (overlapping or touching ranges joined).

    The late windows of one run have ranges that overlap heavily (each reaches from the
    window's first message to its late one); one pass over their union reads every offset
    once, where a read per window reads the shared offsets again for each.
    """
    by_partition: Spans = {}
    for ranges in windows:
        for p, (lo, hi) in ranges.items():
            if hi > lo:
                by_partition.setdefault(p, []).append((lo, hi))
    out: Spans = {}
    for p in sorted(by_partition):
        joined: list[tuple[int, int]] = []
        for lo, hi in sorted(by_partition[p]):
            if joined and lo <= joined[-1][1]:
                joined[-1] = (joined[-1][0], max(joined[-1][1], hi))
            else:
                joined.append((lo, hi))
        out[p] = joined
    return out


def split_by_read(
    spans: Mapping[int, Sequence[tuple[int, int]]], read: Mapping[int, tuple[int, int]]
) -> tuple[Spans, Spans]:
    """`spans` cut in two: (outside `read`, inside `read`).

    `read` is this run's closed read range per partition: every message of it is already
    in memory, so only the first part needs Kafka. A late window's range begins in an
    earlier run's read and ends at its late message, in this run's read, so both parts are
    common. Together the two parts hold exactly the offsets of `spans`, once each.
    """
    outside: Spans = {}
    inside: Spans = {}
    for p, parts in spans.items():
        rlo, rhi = read.get(p, (0, 0))
        for lo, hi in parts:
            pieces = ((lo, min(hi, rlo)), (max(lo, rlo), min(hi, rhi)), (max(lo, rhi), hi))
            for i, (a, b) in enumerate(pieces):
                if a < b:
                    (inside if i == 1 else outside).setdefault(p, []).append((a, b))
    return outside, inside


def bridge(parts: Sequence[tuple[int, int]], max_gap: int = BRIDGE_GAP) -> list[tuple[int, int]]:
    """Disjoint sorted spans of one partition joined across gaps of at most `max_gap`
    offsets: fewer, longer reads that still cover every offset of `parts`. A reader keeps
    only what `covers` the original parts.
    """
    joined: list[tuple[int, int]] = []
    for lo, hi in parts:
        if joined and lo - joined[-1][1] <= max_gap:
            joined[-1] = (joined[-1][0], max(joined[-1][1], hi))
        else:
            joined.append((lo, hi))
    return joined


def covers(parts: Sequence[tuple[int, int]], starts: Sequence[int], offset: int) -> bool:
    """Whether `offset` lies in one of the disjoint sorted `parts` (whose starts are
    `starts`, given once by the caller): a binary search, for reads of many spans."""
    i = bisect_right(starts, offset) - 1
    return i >= 0 and offset < parts[i][1]


def station_keys(
    windows: Mapping[WindowKey, Mapping[int, tuple[int, int]]],
) -> dict[int, set[bytes]]:
    """Per partition, the Kafka keys (station ids) of the windows with a range in it.

    A message is attributed to a window of station S only if its key is S (`classify`: a
    valid record's key must be its station id, a malformed one is attributed by its key),
    so a rebuild keeps exactly the messages with these keys.
    """
    keys: dict[int, set[bytes]] = {}
    for key, ranges in windows.items():
        for p in ranges:
            keys.setdefault(p, set()).add(key.station_id.encode("ascii"))
    return keys


def span_length(spans: Mapping[int, Sequence[tuple[int, int]]]) -> int:
    """How many offsets `spans` hold."""
    return sum(hi - lo for parts in spans.values() for lo, hi in parts)


def messages_in(
    messages: Iterable[SourceMessage],
    spans: Mapping[int, Sequence[tuple[int, int]]],
    keys: Mapping[int, set[bytes]],
) -> list[SourceMessage]:
    """The `messages` inside `spans` whose Kafka key is one of their partition's `keys`,
    in the order given: what a read of `spans` keeping those keys returns, where
    `messages` hold every offset of the spans."""
    starts = {p: [lo for lo, _ in parts] for p, parts in spans.items()}
    return [
        m
        for m in messages
        if m.partition in spans
        and m.key in keys.get(m.partition, ())
        and covers(spans[m.partition], starts[m.partition], m.offset)
    ]
