"""Build a window revision's content from the messages attributed to it.

This is the pure function at the heart of the audit story: the pipeline calls it on the
messages it read, and an auditor calls it on the messages it re-reads from the
checkpoint's offset ranges. Same messages in, same records, counts, root and aggregates
out, whatever the order in which they were read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.aggregates import window_aggregates
from tasks.dedup import deduplicate
from tasks.merkle import merkle_root
from tasks.message import Classified
from tasks.record import Observation
from tasks.stage_timing import WINDOW, timed
from tasks.window import WindowKey


class WindowContentError(ValueError):
    """Messages handed to `build_window` do not belong to the window."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A quarantined message: where it was and why it was rejected."""

    partition: int
    offset: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class WindowContent:
    key: WindowKey
    ranges: dict[int, tuple[int, int]]
    messages: int
    records: list[Observation]
    leaves: list[bytes]
    duplicates: int
    conflicts: int
    rejections: list[Rejection] = field(default_factory=list)
    root: bytes = b""
    aggregates: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def counts(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "records": len(self.records),
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": self.rejected,
        }


def offset_ranges(positions: Sequence[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Per partition, the smallest half-open offset range [first, last + 1) covering
    `positions`, which are distinct `(partition, offset)` pairs in ascending order.

    Sorted input makes it two dict builds at C speed (the last offset of a partition is
    its largest, the first its smallest): this runs once per window (issue 10).
    """
    first = dict(reversed(positions))
    return {p: (first[p], last + 1) for p, last in dict(positions).items()}


@timed(WINDOW)
def build_window(key: WindowKey, items: Iterable[Classified]) -> WindowContent:
    """Deduplicate, order, hash and aggregate the messages of one window.

    Each (partition, offset) counts once even if it is handed in twice (re-reads).
    """
    unique: dict[tuple[int, int], Classified] = {}
    for c in items:
        if c.window is not key and c.window != key:
            raise WindowContentError(
                f"message {c.message.partition}:{c.message.offset} belongs to "
                f"{c.window.window_id if c.window else 'no window'}, not {key.window_id}"
            )
        unique.setdefault((c.message.partition, c.message.offset), c)
    positions = sorted(unique)
    ordered = [unique[k] for k in positions]
    valid = [c.record for c in ordered if c.record is not None]
    rejections = [
        Rejection(c.message.partition, c.message.offset, c.reason or "rejected", c.detail or "")
        for c in ordered
        if c.record is None
    ]
    dedup = deduplicate(valid)
    return WindowContent(
        key=key,
        ranges=offset_ranges(positions),
        messages=len(ordered),
        records=dedup.records,
        leaves=dedup.leaves,
        duplicates=dedup.duplicates,
        conflicts=dedup.conflicts,
        rejections=rejections,
        root=merkle_root(dedup.leaves),
        aggregates=window_aggregates(dedup.records),
    )
