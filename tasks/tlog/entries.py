"""Anchor log entries (`streamnotary.log_entry/v1`): what each anchor run appends (pure).

The RFC 8785 bytes of an entry are the RFC 6962 leaf. A run appends, in this order:

* one ``window`` entry per window revision it anchors, sorted by (window id, revision):
  the checkpoint digest, the Kafka offset ranges the revision covers, and what it
  supersedes;
* one ``run`` entry: per partition the offsets it newly consumed ``[start, end)``, the
  offsets it quarantined and the unattributable ones, the windows it holds open, and the
  digest of the cursor it moved to.

A log entry must fit a C2SP entry bundle (65,535 bytes), and a run's lists need not: a
flood of malformed messages, or a thousand stations each holding a window open, lists more.
Then the lists move, in order, into ``run_part`` entries placed right before the run entry,
which says how many there are (``parts``); the run's lists are the union of its parts'
(`split_run_entry`, `merge_run_parts`). Nothing the run consumed is left unlogged, however
many messages a producer sends.

Together the run entries tile every partition from the first offset the log saw, so an
auditor can prove coverage from the log alone (docs/formats.md, "Anchor log entries").
JSON Schema: docs/schemas/log_entry.schema.json.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from tasks.canonical import CanonicalizationError, DocumentError, canonical_json, parse_document
from tasks.tlog.tiles import MAX_ENTRY_SIZE, EntryTooLarge

LOG_ENTRY_SCHEMA = "streamnotary.log_entry/v1"
ENTRY_TYPES = ("window", "run_part", "run")
LIST_MEMBERS = ("quarantined", "unattributable", "held_open")  # a run's lists, split in parts


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
    """A run's entries in log order: windows by (window id, revision), its run parts by
    number, then the run entry."""
    entries = list(entries)
    windows = sorted(
        (e for e in entries if e["type"] == "window"), key=lambda e: (e["window_id"], e["revision"])
    )
    parts = sorted((e for e in entries if e["type"] == "run_part"), key=lambda e: e["part"])
    runs = [e for e in entries if e["type"] == "run"]
    if len(runs) != 1:
        raise LogEntryError(f"a run appends exactly one run entry, not {len(runs)}")
    problem = run_parts_problem(runs[0], parts)
    if problem:
        raise LogEntryError(problem)
    return [*windows, *parts, *runs]


def _list_items(entry: Mapping[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    """Every element of a run's lists: (member, key, partition, offset or range), in order.
    The key is the partition for offset lists and the window id for held-open ranges."""
    for member in ("quarantined", "unattributable"):
        for p, offsets in entry[member].items():
            for o in offsets:
                yield member, p, p, o
    for window_id, ranges in entry["held_open"].items():
        for p, rs in ranges.items():
            for r in rs:
                yield "held_open", window_id, p, r


def _size(value: Any) -> int:
    """Bytes of `value` in canonical JSON (offsets and ranges counted without encoding)."""
    if isinstance(value, int):
        return len(str(value))
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return sum(len(str(v)) for v in value) + len(value) + 1
    return len(canonical_json(value))


def run_part_entry(*, topic: str, run: int, part: int) -> dict[str, Any]:
    """An empty continuation of run `run`'s lists (filled by `split_run_entry`)."""
    return {
        "schema": LOG_ENTRY_SCHEMA,
        "type": "run_part",
        "topic": topic,
        "run": run,
        "part": part,
        "quarantined": {},
        "unattributable": {},
        "held_open": {},
    }


def split_run_entry(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`entry` if it fits one log entry; else its ``run_part`` entries, then the run entry
    with empty lists and ``parts`` = how many.

    Greedy and deterministic (the same run always splits the same way, so a resumed run
    appends the same bytes): elements go, in the order of `_list_items`, into the current
    part until its size bound would pass `MAX_ENTRY_SIZE`. The bound counts a comma after
    every element and key, so it never under-counts; `entry_bytes` checks each part anyway.
    """
    if _size(entry) <= MAX_ENTRY_SIZE:
        return [entry]
    topic, run = entry["topic"], entry["run"]
    parts: list[dict[str, Any]] = []
    used = 0
    for member, key, p, value in _list_items(entry):
        if not parts or used + _cost(parts[-1][member], member, key, p, value) > MAX_ENTRY_SIZE:
            parts.append(run_part_entry(topic=topic, run=run, part=len(parts)))
            used = _size(parts[-1])
        target = parts[-1][member]
        used += _cost(target, member, key, p, value)
        if member == "held_open":
            target.setdefault(key, {}).setdefault(p, []).append(value)
        else:
            target.setdefault(key, []).append(value)
    head = {**entry, **{m: {} for m in LIST_MEMBERS}, "parts": len(parts)}
    return [*parts, head]


def _cost(target: Mapping[str, Any], member: str, key: str, p: str, value: Any) -> int:
    """Upper bound of the bytes that adding `value` under `key` (and partition `p` for
    held-open ranges) adds to `target`: the value and a comma, and for a key not there yet
    its quoted name, a colon, its brackets and a comma."""
    cost = _size(value) + 1
    if key not in target:
        cost += _size(key) + 4
        if member == "held_open":
            cost += _size(p) + 4
    elif member == "held_open" and p not in target[key]:
        cost += _size(p) + 4
    return cost


def run_parts_problem(run: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> str | None:
    """Why `parts` (the run_part entries right before `run`) are not exactly its parts, or
    None. A run entry without ``parts`` has none; with ``parts`` = k its lists are empty and
    parts 0..k-1 of the same topic and run precede it, in order."""
    want = run.get("parts", 0)
    if len(parts) != want or [p.get("part") for p in parts] != list(range(want)):
        got = [p.get("part") for p in parts]
        return f"run {run.get('run')} names {want} part(s); the entries before it are parts {got}"
    for p in parts:
        if p.get("run") != run.get("run") or p.get("topic") != run.get("topic"):
            return (
                f"part {p.get('part')} before run {run.get('run')} belongs to run "
                f"{p.get('run')} of {p.get('topic')!r}"
            )
    if want and any(run.get(m) for m in LIST_MEMBERS):
        return f"run {run.get('run')} has parts and lists of its own"
    return None


def merge_run_parts(run: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run entry with its parts' lists joined back (what `split_run_entry` split)."""
    out = {k: v for k, v in run.items() if k != "parts"}
    quarantined: dict[str, list[int]] = defaultdict(list)
    unattributable: dict[str, list[int]] = defaultdict(list)
    held: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for e in [*parts, run]:
        for p, offsets in e["quarantined"].items():
            quarantined[p].extend(offsets)
        for p, offsets in e["unattributable"].items():
            unattributable[p].extend(offsets)
        for w, ranges in e["held_open"].items():
            for p, rs in ranges.items():
                held[w][p].extend(rs)
    out["quarantined"] = dict(quarantined)
    out["unattributable"] = dict(unattributable)
    out["held_open"] = {w: dict(r) for w, r in held.items()}
    return out


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


_WINDOW_ID_MEMBER = b'"window_id":"'


def may_name(data: bytes, window_ids: frozenset[bytes]) -> bool:
    """Whether entry bytes may be the entry of one of `window_ids` (UTF-8): a test that never
    answers False for the canonical bytes of such an entry, without parsing them.

    A run with late windows looks their latest revisions up in the log's newest entries;
    parsing and re-serializing each entry it passes, to prove it canonical, cost ~15 % of a
    10M-row backfill's runs (issue 10). RFC 8785 escapes only ``"``, ``\\`` and controls,
    each with a backslash, and writes every other character as its UTF-8 bytes: so in the
    canonical bytes of a window entry of W, the string after ``"window_id":"`` up to the
    next ``"`` is W's UTF-8 bytes or holds a backslash. Either answers True, as does bytes
    with no window id at all (run entries, or bytes that are not canonical: the parser then
    decides). Skipped entries are still checked against their leaf hash by the reader, and
    the audit parses every entry.
    """
    at = data.find(_WINDOW_ID_MEMBER)
    if at < 0:
        return True
    while at >= 0:
        start = at + len(_WINDOW_ID_MEMBER)
        end = data.find(b'"', start)
        if end < 0:
            return True
        value = data[start:end]
        if value in window_ids or b"\\" in value:
            return True
        at = data.find(_WINDOW_ID_MEMBER, end)
    return False
