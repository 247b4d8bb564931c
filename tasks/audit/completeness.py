"""(e) completeness: re-reading the offset ranges from Kafka reproduces the window.

The window is rebuilt from the re-read messages with the pipeline's own
`tasks.window_content.build_window`; differing records are named by partition and offset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, CheckResult
from tasks.audit.evidence import KafkaView, RevisionInputs
from tasks.checkpoint import ranges_of
from tasks.message import Classified
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowKey
from tasks.window_content import build_window


def _in_ranges(c: Classified, ranges: dict[int, tuple[int, int]]) -> bool:
    r = ranges.get(c.message.partition)
    return r is not None and r[0] <= c.message.offset < r[1]


def check_completeness(
    key: WindowKey,
    inp: RevisionInputs,
    view: KafkaView,
    *,
    anchored_records: Sequence[Observation] | None,
    latest: bool,
) -> CheckResult:
    """Re-read the checkpoint's offset ranges and rebuild the window with `build_window`.

    `anchored_records` are the payload's records when the canonical check proved them to
    be the anchored ones; they let the check name missing and changed records. For the
    latest revision, messages attributed to the window outside its ranges (late data not
    anchored yet) are reported too.
    """
    res = CheckResult("completeness")
    cp = inp.checkpoint
    if cp is None:
        res.add(NOT_CHECKABLE, "checkpoint_missing", "no checkpoint: offset ranges unknown")
        return res
    ranges = ranges_of(cp)
    unreadable = False
    for p, (lo, hi) in sorted(ranges.items()):
        scan = view.scans.get(p)
        if scan is None:
            res.add(NOT_CHECKABLE, "partition_not_read", f"partition {p} was not read", partition=p)
            unreadable = True
        elif scan.error is not None:
            res.add(
                NOT_CHECKABLE,
                "range_unavailable",
                f"partition {p} [{lo}, {hi}): {scan.error}",
                partition=p,
                offset=lo,
            )
            unreadable = True
        elif lo < scan.start:
            res.add(
                NOT_CHECKABLE,
                "retention_removed",
                f"partition {p} offsets [{lo}, {min(hi, scan.start)}) are gone from Kafka "
                f"(low watermark {scan.low}): this range cannot be re-read",
                partition=p,
                offset=lo,
            )
            unreadable = True
        elif hi > scan.end:
            res.add(
                NOT_CHECKABLE,
                "beyond_high_watermark",
                f"partition {p} ends at {scan.end} but the range reaches {hi} "
                "(topic truncated or recreated)",
                partition=p,
                offset=scan.end,
            )
            unreadable = True
    mine = view.by_window.get(key, [])
    if not unreadable:
        items = [c for c in mine if _in_ranges(c, ranges)]
        content = build_window(key, items)
        _compare_content(res, cp, content, items, anchored_records)
    if latest:
        unread = [c for c in mine if c.message.offset >= _log_end(view, c.message.partition)]
        _late_messages(res, unread, ranges, cp, anchored_records)
    return res


def _log_end(view: KafkaView, partition: int) -> int:
    """Offsets below this were read by a logged run: coverage accounts for them."""
    return view.log_extent.get(partition, (0, 0))[1]


def _compare_content(
    res: CheckResult,
    cp: dict[str, Any],
    content: Any,
    items: Sequence[Classified],
    anchored: Sequence[Observation] | None,
) -> None:
    want_root = cp["merkle"]["root"]
    got_counts = content.counts()
    same = (
        content.root.hex() == want_root
        and len(content.leaves) == cp["merkle"]["size"]
        and got_counts == cp["counts"]
    )
    if content.ranges != ranges_of(cp):
        res.add(
            FAIL,
            "range_bounds_changed",
            f"messages of the window span {content.ranges}, checkpoint ranges are {ranges_of(cp)}",
        )
    if content.aggregates != cp["aggregates"]:
        res.add(
            FAIL, "aggregates_differ", "aggregates rebuilt from Kafka differ from the checkpoint's"
        )
    if same:
        return
    for name, value in got_counts.items():
        if value != cp["counts"][name]:
            res.add(
                FAIL,
                "count_mismatch",
                f"{name}: Kafka gives {value}, checkpoint says {cp['counts'][name]}",
            )
    if content.root.hex() != want_root:
        res.add(
            FAIL,
            "merkle_root_mismatch",
            f"Kafka records hash to {content.root.hex()}, checkpoint says {want_root}",
        )
    if anchored is None:
        res.add(
            INFO, "records_not_named", "payload not verified: differing records cannot be named"
        )
        return
    positions: dict[tuple[str, Any], list[tuple[int, int, bytes]]] = defaultdict(list)
    for c in items:
        if c.record is not None:
            positions[c.record.key].append(
                (c.message.partition, c.message.offset, canonical_bytes(c.record))
            )
    kafka_winner = {r.key: canonical_bytes(r) for r in content.records}
    anchored_bytes = {r.key: canonical_bytes(r) for r in anchored}
    for ident, data in sorted(anchored_bytes.items()):
        if ident not in kafka_winner:
            res.add(
                FAIL,
                "record_missing",
                f"anchored record {data.decode()} is not in the offset ranges",
            )
    for ident, data in sorted(kafka_winner.items()):
        where = [(p, o) for p, o, b in positions[ident] if b == data]
        p, o = where[0] if where else (None, None)
        if ident not in anchored_bytes:
            res.add(
                FAIL,
                "record_extra",
                f"record {data.decode()} is in Kafka but not anchored",
                partition=p,
                offset=o,
            )
        elif anchored_bytes[ident] != data:
            res.add(
                FAIL,
                "record_changed",
                f"Kafka has {data.decode()}, anchored {anchored_bytes[ident].decode()}",
                partition=p,
                offset=o,
            )
    for c in items:
        if c.record is None:
            res.add(
                INFO,
                "rejected_message",
                f"rejected ({c.reason}): {c.detail}",
                partition=c.message.partition,
                offset=c.message.offset,
            )


def _late_messages(
    res: CheckResult,
    mine: Sequence[Classified],
    ranges: dict[int, tuple[int, int]],
    cp: dict[str, Any],
    anchored: Sequence[Observation] | None,
) -> None:
    outside = [c for c in mine if not _in_ranges(c, ranges)]
    if not outside:
        return
    anchored_leaves = {canonical_bytes(r) for r in anchored} if anchored is not None else None
    for c in sorted(outside, key=lambda c: (c.message.partition, c.message.offset)):
        p, o = c.message.partition, c.message.offset
        if (
            c.record is not None
            and anchored_leaves is not None
            and canonical_bytes(c.record) in anchored_leaves
        ):
            res.add(
                INFO,
                "late_duplicate",
                "late message repeats an anchored record exactly",
                partition=p,
                offset=o,
            )
        elif c.record is None:
            res.add(
                FAIL,
                "late_unanchored",
                f"rejected message ({c.reason}) attributed to this window is "
                "outside every anchored range (late data not yet anchored)",
                partition=p,
                offset=o,
            )
        else:
            res.add(
                FAIL,
                "late_unanchored",
                f"record {canonical_bytes(c.record).decode()} attributed to "
                "this window is outside every anchored range (late data not yet anchored)",
                partition=p,
                offset=o,
            )
