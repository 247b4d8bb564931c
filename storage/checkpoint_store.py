"""Anchored checkpoints read back in either layout: per-window objects or checkpoint packs.

Layout per_window (and every run before checkpoint packs) stores each checkpoint at
``checkpoints/<topic>/...``, found by listing. Layout pack stores a run's checkpoints in
one object that only the signed anchor log locates (`tasks.checkpoint_pack`): the log,
not a listing, says which revisions exist and where their bytes are. The readers that
need "the latest anchored checkpoint of a window" (late revisions, backfill skip, proofs)
take the newer of both, and every packed checkpoint is checked against its logged digest.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from storage import log_cache
from storage.store_base import ObjectStore
from storage.tlog import LogForked, LogReader, log_identity
from tasks.checkpoint_pack import CheckpointRef, checkpoint_ref, decode, extract
from tasks.tlog.entries import may_name, parse_entry
from tasks.tlog.tiles import TILE_WIDTH

if TYPE_CHECKING:
    from streamnotary.config import Settings
    from tasks.tlog.checkpoint import LogCheckpoint


PREFETCH_BUNDLES = 8  # entry bundles (256 entries each) a newest-first read fetches at once


class PackReader:
    """Checkpoints out of checkpoint packs, each pack read once (a run's windows share it)."""

    def __init__(self, store: ObjectStore, topic: str) -> None:
        self.store = store
        self.topic = topic
        self._packs: dict[str, bytes] = {}

    def pack(self, key: str) -> bytes:
        """The pack object's bytes (`ObjectNotFound` if it is gone)."""
        if key not in self._packs:
            self._packs[key] = self.store.get(key)
        return self._packs[key]

    def checkpoint(self, ref: CheckpointRef) -> dict[str, Any]:
        """The checkpoint `ref` locates, checked (`CheckpointPackError`, `ObjectNotFound`)."""
        return extract(self.pack(ref.key), ref)

    def of_entry(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """The checkpoint a window log entry locates in a pack; None: a per-window object."""
        ref = checkpoint_ref(self.topic, entry)
        return None if ref is None else self.checkpoint(ref)


def latest_entries(
    entries: Iterable[Mapping[str, Any]], wanted: Container[str] | None = None
) -> dict[str, Mapping[str, Any]]:
    """Window id -> the window entry of its highest logged revision (of `wanted` windows)."""
    out: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        if e.get("type") != "window":
            continue
        wid = e["window_id"]
        if wanted is not None and wid not in wanted:
            continue
        if wid not in out or e["revision"] > out[wid]["revision"]:
            out[wid] = e
    return out


def latest_packed(
    store: ObjectStore,
    topic: str,
    entries: Iterable[Mapping[str, Any]],
    wanted: Container[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Window id -> checkpoint of its latest logged revision, for windows whose latest
    revision is packed (the others are per-window objects, found by listing). Raises
    `CheckpointPackError` / `ObjectNotFound` when a logged checkpoint cannot be read."""
    reader = PackReader(store, topic)
    out: dict[str, dict[str, Any]] = {}
    for wid, e in latest_entries(entries, wanted).items():
        cp = reader.of_entry(e)
        if cp is not None:
            out[wid] = cp
    return out


def read_ref(store: ObjectStore, ref: CheckpointRef) -> dict[str, Any]:
    """One packed checkpoint by a ranged read (memory: one checkpoint), checked."""
    return decode(store.get_range(ref.key, ref.offset, ref.length), ref)


def logged_entries(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every entry of the signed anchor logs the settings write to, verified with the
    operator's log key: the run's scope (the topic, or its group `group`), and without a
    group also every configured partition group's log (a backfill covers the topic).
    Streams: bundle by bundle; none while a log does not exist yet."""
    for reader, head in _logs(settings):
        yield from reader.entries(0, head.size)


def _logs(settings: Settings) -> Iterator[tuple[LogReader, LogCheckpoint]]:
    """(reader, verified head) of each non-empty log `logged_entries` reads."""
    from storage.logkey import load_signer, log_origin
    from storage.objectstore import open_store
    from storage.tlog import LogReader
    from tasks.groups import LogScope, group_name

    scopes = [settings.log_scope]
    if not settings.group:
        scopes += [LogScope(settings.topic, group_name(g)) for g in settings.partition_groups]
    signer = load_signer(settings)  # the writer's own key, made on first use as it does
    store = open_store(settings)
    for scope in scopes:
        origin = log_origin(settings, scope.name)
        reader = LogReader(store, scope.name, signer.named(origin).verifier(), origin)
        head = reader.checkpoint()
        if head is not None and head.size:
            yield reader, head


def newest_entries(
    reader: LogReader, size: int, wanted: Collection[str]
) -> dict[str, Mapping[str, Any]]:
    """`latest_entries` of the first `size` entries of one log, read newest first.

    The log is append-only and a window's revision r+1 is planned only after r is in it,
    so the newest entry of a window is its highest revision: once every wanted window has
    been seen, older entries cannot change the answer and are not read. Late data is
    nearly always for a window anchored a few runs before, so a run with late windows reads
    the log's tail instead of the whole log, whose size grows with the history (a 10M-row
    backfill spent ~60 % of its later runs re-reading it). In a catch-up, the entries this
    process appended are not walked at all: it remembers where each window's newest entry
    went (`storage.log_cache.WindowPositions`) and reads those entries only; the log is
    walked after that span (another writer's entries) and before it (for windows the span
    does not name). A wanted window that was never anchored still costs a walk back to
    the first entry outside the span. Every entry read is hash-checked against the signed
    checkpoint; an entry at a remembered position that names another window means the log
    is not the one this process appended to (`LogForked`).
    """
    found: dict[str, Mapping[str, Any]] = {}
    left = set(wanted)
    cache = log_cache.active()
    span, located = (
        (None, {})
        if cache is None
        else cache.positions(log_identity(reader.store, reader.topic), left)
    )
    if span is None or span[1] > size:  # nothing appended here, or a shorter log than ours
        _walk(reader, 0, size, left, found)
        return found
    low, high = span
    _walk(reader, high, size, left, found)  # appended after this process's entries
    located = {wid: at for wid, at in located.items() if wid in left}
    assert cache is not None  # a span comes from the cache
    cache.read_by_position(len(located))
    for at, data in reader.entries_at(set(located.values())).items():
        entry = parse_entry(data)
        wid = entry.get("window_id")
        if located.get(wid) != at:
            raise LogForked(f"log entry {at} is not the one this process appended there")
        found[wid] = entry
    left.difference_update(located)
    _walk(reader, 0, low, left, found)  # windows with no entry in the span
    return found


def _walk(
    reader: LogReader,
    low: int,
    end: int,
    left: set[str],
    found: dict[str, Mapping[str, Any]],
) -> None:
    """Read entries [low, end) newest bundle first into `found` until `left` (the windows
    not found yet, updated) is empty. Only the entries that may name a wanted window are
    parsed (`may_name`); every entry passed is still hash-checked. The bundles are fetched
    `PREFETCH_BUNDLES` at a time, concurrently: at most that many minus one are fetched
    and not needed."""
    names = frozenset(w.encode() for w in left)
    prefetched = end  # entries from here on are fetched, PREFETCH_BUNDLES bundles at a time
    while end > low and left:
        start = max(low, (end - 1) // TILE_WIDTH * TILE_WIDTH)  # the bundle of entry end - 1
        if start < prefetched:
            prefetched = max(low, start - (PREFETCH_BUNDLES - 1) * TILE_WIDTH)
            reader.prefetch_entries(prefetched, end)
        named = (parse_entry(d) for d in reader.leaf_bytes(start, end) if may_name(d, names))
        for wid, e in latest_entries(named, left).items():
            if wid not in found or e["revision"] > found[wid]["revision"]:
                found[wid] = e
        left.difference_update(found)
        end = start


def latest_packed_of_topic(
    settings: Settings, wanted: Collection[str] | None = None
) -> dict[str, dict[str, Any]]:
    """`latest_packed` over the signed anchor logs the settings write to (as
    `logged_entries`); {} without a log. With `wanted`, each log is read newest bundle first
    and only as far back as the wanted windows need (`newest_entries`)."""
    from storage.objectstore import open_store

    if wanted is None:
        return latest_packed(open_store(settings), settings.topic, logged_entries(settings))
    newest: dict[str, Mapping[str, Any]] = {}
    for reader, head in _logs(settings):
        for wid, e in newest_entries(reader, head.size, wanted).items():
            if wid not in newest or e["revision"] > newest[wid]["revision"]:
                newest[wid] = e
    return latest_packed(open_store(settings), settings.topic, newest.values())
