"""Anchor log entries (`streamnotary.log_entry/v1`): what each anchor run appends (pure).

The RFC 8785 bytes of an entry are the RFC 6962 leaf. A run appends, in this order:

* one ``window`` entry per window revision it anchors, sorted by (window id, revision):
  the checkpoint digest, the Kafka offset ranges the revision covers, and what it
  supersedes;
* one ``run`` entry: per partition the offsets it newly consumed ``[start, end)``, the
  offsets it quarantined and the unattributable ones, the windows it holds open, and the
  digest of the cursor it moved to.

Together the run entries tile every partition from the first offset the log saw, so an
auditor can prove coverage from the log alone (docs/formats.md, "Anchor log entries").
JSON Schema: docs/schemas/log_entry.schema.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tasks.canonical import CanonicalizationError, DocumentError, canonical_json, parse_document
from tasks.tlog.tiles import MAX_ENTRY_SIZE, EntryTooLarge

LOG_ENTRY_SCHEMA = "streamnotary.log_entry/v1"
ENTRY_TYPES = ("window", "run")


class LogEntryError(ValueError):
    """A log entry cannot be built or does not parse as `streamnotary.log_entry/v1`."""


Range = tuple[int, int]


def _ranges(ranges: Mapping[int, Sequence[Range]]) -> dict[str, list[list[int]]]:
    return {str(p): [[s, e] for s, e in sorted(rs)] for p, rs in sorted(ranges.items())}


def window_entry(
    *,
    topic: str,
    window_id: str,
    revision: int,
    checkpoint_digest: str,
    ranges: Mapping[int, Sequence[Range]],
    supersedes: tuple[int, str] | None,
    closed_at: str,
    run: int,
    checkpoint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The entry of one window revision (what its checkpoint covers and replaces).

    `checkpoint` (layout pack) locates the checkpoint inside its run's checkpoint pack
    (`tasks.checkpoint_pack.locator`); absent, it is the per-window object.
    """
    entry = {
        "schema": LOG_ENTRY_SCHEMA,
        "type": "window",
        "topic": topic,
        "window_id": window_id,
        "revision": revision,
        "checkpoint_digest": checkpoint_digest,
        "ranges": _ranges(ranges),
        "supersedes": None
        if supersedes is None
        else {"revision": supersedes[0], "checkpoint_digest": supersedes[1]},
        "closed_at": closed_at,
        "run": run,
    }
    if checkpoint is not None:
        entry["checkpoint"] = dict(checkpoint)
    return entry


def run_entry(
    *,
    topic: str,
    run: int,
    read: Mapping[int, Range],
    quarantined: Mapping[int, Iterable[int]],
    unattributable: Mapping[int, Iterable[int]],
    held_open: Mapping[str, Mapping[int, Sequence[Range]]],
    cursor_digest: str,
    anchored_at: str,
    layout: str = "per_window",
) -> dict[str, Any]:
    """The entry that closes a run: everything it consumed and where it left the cursor.

    `layout` is the run's object layout; "pack" (no receipts) is recorded in the entry so
    the auditor knows, from the signed log rather than the bucket, that no receipt is due.
    """
    entry = {
        "schema": LOG_ENTRY_SCHEMA,
        "type": "run",
        "topic": topic,
        "run": run,
        "read": {str(p): [s, e] for p, (s, e) in sorted(read.items())},
        "quarantined": {str(p): sorted(o) for p, o in sorted(quarantined.items()) if o},
        "unattributable": {str(p): sorted(o) for p, o in sorted(unattributable.items()) if o},
        "held_open": {w: _ranges(r) for w, r in sorted(held_open.items())},
        "cursor_digest": cursor_digest,
        "anchored_at": anchored_at,
    }
    if layout != "per_window":
        entry["layout"] = layout
    return entry


def entry_order(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's entries in log order: windows by (window id, revision), then the run entry."""
    entries = list(entries)
    windows = sorted(
        (e for e in entries if e["type"] == "window"), key=lambda e: (e["window_id"], e["revision"])
    )
    runs = [e for e in entries if e["type"] == "run"]
    if len(runs) != 1:
        raise LogEntryError(f"a run appends exactly one run entry, not {len(runs)}")
    return [*windows, *runs]


def entry_bytes(entry: dict[str, Any]) -> bytes:
    """The leaf bytes: RFC 8785 canonical JSON, at most 65,535 bytes (entry-bundle limit)."""
    try:
        data = canonical_json(entry)
    except CanonicalizationError as exc:
        raise LogEntryError(f"log entry is not canonical JSON: {exc}") from exc
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryTooLarge(
            f"{entry.get('type')} entry of {len(data)} bytes exceeds the {MAX_ENTRY_SIZE}-byte "
            "entry-bundle limit"
        )
    return data


def parse_entry(data: bytes) -> dict[str, Any]:
    """Decode leaf bytes; `LogEntryError` unless they are the canonical bytes of an entry."""
    try:
        doc = parse_document(data)
    except DocumentError as exc:
        raise LogEntryError(f"log entry is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != LOG_ENTRY_SCHEMA:
        raise LogEntryError(f"not a {LOG_ENTRY_SCHEMA} document")
    if doc.get("type") not in ENTRY_TYPES:
        raise LogEntryError(f"unknown log entry type {doc.get('type')!r}")
    try:
        canonical = canonical_json(doc)
    except CanonicalizationError as exc:
        raise LogEntryError(f"log entry is not canonical JSON: {exc}") from exc
    if canonical != data:
        raise LogEntryError("log entry bytes are not RFC 8785 canonical")
    return doc
