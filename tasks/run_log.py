"""What one anchor run appends to its topic's anchor log, and anchors of it (pure).

From the run's plan this builds the log entries (`tasks.tlog.entries`): one window entry
per anchored revision, sorted by (window id, revision), then the run entry recording what
the run consumed (after its run_part entries when its lists outgrow one log entry). They
go into the write-ahead plan, with the log size they extend, so a resumed run appends
exactly the same bytes. After the append, the run anchors the new head (`head_entry`)
and, in the per_window layout, each receipt carries its window entry's inclusion proof
(`log_proof`); in the pack layout nobody stores it, the tiles serve it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from storage import layout
from storage.ledger.base import AnchorEntry
from tasks.canonical import canonical_digest
from tasks.checkpoint_pack import SEPARATOR, locator
from tasks.message import Classified
from tasks.planner import Cursor
from tasks.revision import PlannedRevision
from tasks.tlog.entries import entry_bytes, entry_order, run_entry, split_run_entry, window_entry
from tasks.window import WindowKey

_TS = "%Y-%m-%dT%H:%M:%SZ"


def _offsets(items: Iterable[Classified]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for c in items:
        out[c.message.partition].append(c.message.offset)
    return dict(out)


def _runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as maximal [start, end) runs of consecutive offsets."""
    out: list[tuple[int, int]] = []
    for o in sorted(set(offsets)):
        if out and out[-1][1] == o:
            out[-1] = (out[-1][0], o + 1)
        else:
            out.append((o, o + 1))
    return out


def run_entries(
    *,
    topic: str,
    revisions: Sequence[PlannedRevision],
    cursor: Cursor,
    next_cursor: Cursor,
    quarantined: Iterable[Classified],
    unattributable: Iterable[Classified],
    held_open: Mapping[WindowKey, Sequence[Classified]],
    now: datetime,
    layout: str = "per_window",
    checkpoint_pack: str | None = None,
) -> list[dict[str, Any]]:
    """The run's log entries, in log order (docs/formats.md, "Anchor log entries").

    With `checkpoint_pack` (layout pack) the revisions' checkpoints go into that one
    object, in the order of `revisions` (the plan's), and each window entry locates its
    checkpoint there (`tasks.checkpoint_pack`).
    """
    at = now.strftime(_TS)
    run = next_cursor.runs
    where: list[dict[str, Any] | None] = [None] * len(revisions)
    if checkpoint_pack is not None:
        where = [locator(checkpoint_pack, o, n) for o, n in pack_spans(revisions)]
    entries = [
        window_entry(
            topic=topic,
            window_id=r.window_id,
            revision=r.revision,
            checkpoint_digest=r.digest,
            ranges={p: [rng] for p, rng in r.ranges.items()},
            supersedes=None
            if r.checkpoint["supersedes"] is None
            else (
                r.checkpoint["supersedes"]["revision"],
                r.checkpoint["supersedes"]["checkpoint_digest"],
            ),
            closed_at=at,
            run=run,
            checkpoint=loc,
        )
        for r, loc in zip(revisions, where, strict=True)
    ]
    read = {
        p: (cursor.partition(p).read_end, c.read_end)
        for p, c in next_cursor.partitions.items()
        if c.read_end > cursor.partition(p).read_end
    }
    held = {
        key.window_id: {p: _runs(o) for p, o in _offsets(items).items()}
        for key, items in held_open.items()
        if items
    }
    entries += split_run_entry(
        run_entry(
            topic=topic,
            run=run,
            read=read,
            quarantined=_offsets(quarantined),
            unattributable=_offsets(unattributable),
            held_open=held,
            cursor_digest=canonical_digest(next_cursor.to_json()),
            anchored_at=at,
            layout=layout,
        )
    )  # its lists in run_part entries before it when they outgrow one log entry
    ordered = entry_order(entries)
    for e in ordered:
        entry_bytes(e)  # EntryTooLarge now, before the plan is stored
    return ordered


def pack_spans(revisions: Sequence[PlannedRevision]) -> list[tuple[int, int]]:
    """(offset, length) of each revision's checkpoint in the run's pack, in this order:
    the spans `build_pack` gives, from the bytes each revision serialized once."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for r in revisions:
        spans.append((offset, len(r.checkpoint_bytes)))
        offset += len(r.checkpoint_bytes) + len(SEPARATOR)
    return spans


def log_plan(origin: str, base_size: int, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The `log` member of the write-ahead plan: append `entries` at exactly `base_size`."""
    return {"origin": origin, "base_size": base_size, "entries": list(entries)}


def log_size_after(log: Mapping[str, Any]) -> int:
    """The tree size once the plan's entries are appended: the head the run anchors."""
    return int(log["base_size"]) + len(log["entries"])


def plan_layout(log: Mapping[str, Any]) -> str:
    """The object layout the plan was made with: its run entry names it (absent: per_window)."""
    run = next(e for e in log["entries"] if e["type"] == "run")
    return str(run.get("layout", "per_window"))


def window_indexes(log: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """(window id, revision) -> index of its window entry in the log."""
    return {
        (e["window_id"], e["revision"]): log["base_size"] + i
        for i, e in enumerate(log["entries"])
        if e["type"] == "window"
    }


def head_entry(topic: str, size: int, root_hex: str, previous_size: int) -> AnchorEntry:
    """The ledger entry of a run: the new log head, and the size of the previous anchored
    head (0: none). Small enough for a Bitcoin OP_RETURN; the origin is the trust policy's."""
    return AnchorEntry(
        key=layout.head_entry_key(topic, size),
        kind="head",
        body={
            "kind": "head",
            "topic": topic,
            "size": size,
            "root": root_hex,
            "previous_size": previous_size,
        },
        index_keys=(topic,),
    )


def log_proof(
    origin: str, index: int, size: int, root_hex: str, proof: Sequence[bytes], note: str
) -> dict[str, Any]:
    """The `log` member of a receipt: the window entry's inclusion proof in the signed head."""
    return {
        "origin": origin,
        "index": index,
        "size": size,
        "root": root_hex,
        "proof": [h.hex() for h in proof],
        "checkpoint": note,
    }


def head_anchor_document(
    topic: str, size: int, root: str, note: str, ref: Mapping[str, Any]
) -> dict[str, Any]:
    """`streamnotary.head-anchor/1`: where the head of `size` is anchored, with its signed note.

    Layout pack writes no receipts, and receipts were where an auditor found a head's
    ledger locator (a Bitcoin-family txid, read with `getrawtransaction`, no wallet) and the
    signed checkpoints of older heads. This small document per run keeps both beside the
    log. Confirmations are left out: they change, and the document is written once.
    """
    return {
        "schema": "streamnotary.head-anchor/1",
        "topic": topic,
        "size": size,
        "root": root,
        "checkpoint": note,
        "ledger": {k: ref[k] for k in ("backend", "key", "digest", "locator")},
    }
