"""The anchor log in the object store: C2SP tlog-tiles under ``log/<topic>/``.

    log/<topic>/checkpoint                  signed C2SP checkpoint (the only mutable object)
    log/<topic>/tile/<L>/<N>[.p/<W>]         hash tiles (write-once)
    log/<topic>/tile/entries/<N>[.p/<W>]     entry bundles (write-once)
    log/<topic>/consistency/<old>-<new>      RFC 6962 consistency proof between two heads

This module holds the layout (keys), the errors and the reader; appending is
`storage.tlog_writer.LogWriter`. `LogReader` answers everything from tiles it
authenticates against the signed checkpoint, so proofs never need every leaf.
Pure tree code: `tasks.tlog`; design: docs/design.md ("The anchor log").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from storage import log_cache
from storage.objectstore import ObjectNotFound, ObjectStore
from tasks.canonical import parse_document
from tasks.merkle import hash_leaf
from tasks.tlog.checkpoint import LogCheckpoint, open_checkpoint
from tasks.tlog.entries import parse_entry
from tasks.tlog.note import Verifier
from tasks.tlog.tiles import (
    TILE_WIDTH,
    MissingTile,
    TreeView,
    VerifiedTiles,
    decode_bundle,
    decode_tile,
    entries_path,
    tile_path,
    tile_width,
)

CONSISTENCY_SCHEMA = "streamnotary.log_consistency/v1"
PREFETCH_CONCURRENCY = 8  # parallel GETs of a prefetch (the S3 client's pool allows more)
DEFAULT_ORIGIN = "streamnotary/{topic}"


class LogError(RuntimeError):
    """Base class of anchor-log storage failures."""


class LogForked(LogError):
    """The stored log is not the one this writer extends (another head, another history)."""


class LogCorrupted(LogError):
    """Stored tiles or bundles do not match the signed checkpoint."""


def log_prefix(topic: str) -> str:
    return f"log/{topic}"


def checkpoint_key(topic: str) -> str:
    return f"{log_prefix(topic)}/checkpoint"


def head_anchor_key(topic: str, size: int) -> str:
    """Where the run that published the head of `size` records the ledger entry anchoring it
    (`streamnotary.head-anchor/1`): an auditor's locator hint (a Bitcoin-family txid), never
    trusted for content (the ledger entry is read and compared)."""
    return f"{log_prefix(topic)}/anchors/{size}.json"


def consistency_key(topic: str, old_size: int, new_size: int) -> str:
    return f"{log_prefix(topic)}/consistency/{old_size}-{new_size}"


def log_origin(template: str, topic: str) -> str:
    """The log's origin line (and key name): the configured template with ``{topic}``."""
    return (template or DEFAULT_ORIGIN).replace("{topic}", topic)


def log_identity(store: ObjectStore, topic: str) -> str:
    """One log's name in the catch-up's memory (`storage.log_cache`): store and prefix."""
    return f"{store!r}/{log_prefix(topic)}"


class StoreTiles:
    """Tiles read from the object store (a `TileSource`), falling back from a partial tile to
    the full one as tlog-tiles allows (a full tile's prefix is the partial tile)."""

    def __init__(self, store: ObjectStore, topic: str) -> None:
        self.store = store
        self.prefix = log_prefix(topic)
        self._identity = repr(store)
        self._fetched: dict[str, bytes] = {}

    def _remembered(self, path: str) -> bytes | None:
        """What this process wrote at `path`, inside `log_cache.remembering` (else None)."""
        cache = log_cache.active()
        return None if cache is None else cache.recall(self._identity, f"{self.prefix}/{path}")

    def _get(self, path: str) -> bytes:
        data = self._fetched.pop(path, None) or self._remembered(path)
        return self.store.get(f"{self.prefix}/{path}") if data is None else data

    def prefetch(self, paths: Sequence[str]) -> None:
        """Fetch these objects concurrently, each kept for its next read (then dropped).

        A log is read object by object, one round trip each; a reader that knows which
        tiles it will need next (newest bundles first, `LogReader.prefetch_entries`) pays
        one round trip for a batch. Bytes are only cached, never trusted: every read still
        decodes and authenticates them as before. Missing objects are left to that read.
        """

        def fetch(path: str) -> tuple[str, bytes | None]:
            try:
                return path, self.store.get(f"{self.prefix}/{path}")
            except ObjectNotFound:
                return path, None

        cache = log_cache.active()
        wanted = [
            p
            for p in paths
            if p not in self._fetched
            and (cache is None or (self._identity, f"{self.prefix}/{p}") not in cache)
        ]
        if not wanted:
            return
        if cache is not None:
            cache.missed(len(wanted))
        with ThreadPoolExecutor(max_workers=PREFETCH_CONCURRENCY) as pool:
            for path, data in pool.map(fetch, wanted):
                if data is not None:
                    self._fetched[path] = data

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        try:
            data = self._get(tile_path(level, index, width))
            return decode_tile(data, width)
        except ObjectNotFound:
            if width == TILE_WIDTH:
                raise MissingTile(f"no tile {tile_path(level, index)} in the log") from None
        try:
            full = self._get(tile_path(level, index))
        except ObjectNotFound:
            raise MissingTile(f"no tile {tile_path(level, index, width)} in the log") from None
        return decode_tile(full, TILE_WIDTH)[:width]

    def bundle(self, index: int, width: int) -> list[bytes]:
        try:
            data = self._get(entries_path(index, width))
            return decode_bundle(data, width)
        except ObjectNotFound:
            if width == TILE_WIDTH:
                raise MissingTile(f"no entry bundle {entries_path(index)}") from None
        try:
            full = self._get(entries_path(index))
        except ObjectNotFound:
            raise MissingTile(f"no entry bundle {entries_path(index, width)}") from None
        return decode_bundle(full, TILE_WIDTH)[:width]


class LogReader:
    """Read one topic's anchor log, authenticated against its signed checkpoint.

    With a `verifier` (the pinned log key) the checkpoint's signature and origin are
    checked; without one the checkpoint is only parsed (for tools that verify elsewhere).
    Tiles and entries are always checked against the checkpoint's root.
    """

    def __init__(
        self,
        store: ObjectStore,
        topic: str,
        verifier: Verifier | None = None,
        origin: str | None = None,
    ) -> None:
        self.store = store
        self.topic = topic
        self.verifier = verifier
        self.origin = origin
        self.tiles = StoreTiles(store, topic)
        self._head: LogCheckpoint | None = None
        self._views: dict[int, VerifiedTiles] = {}

    # -- checkpoint ---------------------------------------------------------------------

    def checkpoint_note(self) -> bytes | None:
        """The signed checkpoint bytes as stored, or None for a log that does not exist yet."""
        try:
            return self.store.get(checkpoint_key(self.topic))
        except ObjectNotFound:
            return None

    def checkpoint(self) -> LogCheckpoint | None:
        """The latest head (signature-checked when a verifier is pinned), None if no log."""
        data = self.checkpoint_note()
        if data is None:
            return None
        if self.verifier is not None:
            head, _ = open_checkpoint(data, self.verifier, self.origin)
        else:
            from tasks.tlog.note import parse_note

            head = LogCheckpoint.parse(parse_note(data).text)
        self._head = head
        return head

    def _latest(self) -> LogCheckpoint:
        head = self._head or self.checkpoint()
        if head is None:
            raise MissingTile(f"topic {self.topic!r} has no anchor log")
        return head

    def _source(self, size: int) -> VerifiedTiles:
        head = self._latest()
        if size > head.size:
            raise MissingTile(f"tree size {size} is beyond the log's head {head.size}")
        if head.size not in self._views:
            self._views[head.size] = VerifiedTiles(self.tiles, head.size, head.root)
        return self._views[head.size]

    def _view(self, size: int) -> TreeView:
        return TreeView(self._source(size), size)

    # -- reads --------------------------------------------------------------------------

    def root(self, size: int) -> bytes:
        """RFC 6962 root of the first `size` entries (any size up to the head)."""
        return self._view(size).root()

    def leaf_bytes(self, start: int, end: int) -> Iterator[bytes]:
        """Raw entries [start, end), each checked against its authenticated leaf hash."""
        head = self._latest()
        if not 0 <= start <= end <= head.size:
            raise MissingTile(f"entries [{start}, {end}) outside the log of size {head.size}")
        source = self._source(head.size)
        index = start
        while index < end:
            bundle_index = index // TILE_WIDTH
            width = tile_width(head.size, 0, bundle_index)
            bundle = self.tiles.bundle(bundle_index, width)
            hashes = source.tile(0, bundle_index, width)
            stop = min(end, (bundle_index + 1) * TILE_WIDTH)
            for i in range(index, stop):
                entry = bundle[i % TILE_WIDTH]
                if hash_leaf(entry) != hashes[i % TILE_WIDTH]:
                    raise LogCorrupted(f"entry {i} does not match its leaf hash")
                yield entry
            index = stop

    def prefetch_entries(self, start: int, end: int) -> None:
        """Fetch, concurrently, the entry bundles and level-0 hash tiles that a read of
        entries [start, end) will need (`StoreTiles.prefetch`); nothing is trusted yet."""
        start, end = max(0, start), min(end, self._latest().size)
        self._prefetch_bundles(range(start // TILE_WIDTH, -(-end // TILE_WIDTH)))

    def _prefetch_bundles(self, indexes: Iterable[int]) -> None:
        head = self._latest()
        paths = []
        for index in indexes:
            width = tile_width(head.size, 0, index)
            paths.append(entries_path(index, width))
            if width == TILE_WIDTH:  # a partial tile is read with the tree's edge
                paths.append(tile_path(0, index))
        self.tiles.prefetch(paths)

    def entries_at(self, indexes: Collection[int]) -> dict[int, bytes]:
        """The raw entries at these indexes, each checked against its authenticated leaf
        hash; their bundles are fetched concurrently, each once."""
        head = self._latest()
        if any(not 0 <= i < head.size for i in indexes):
            raise MissingTile(f"entries {sorted(indexes)} outside the log of size {head.size}")
        by_bundle: dict[int, list[int]] = {}
        for i in indexes:
            by_bundle.setdefault(i // TILE_WIDTH, []).append(i)
        self._prefetch_bundles(sorted(by_bundle))
        out: dict[int, bytes] = {}
        for wanted in by_bundle.values():
            low = min(wanted)
            read = list(self.leaf_bytes(low, max(wanted) + 1))
            out.update((i, read[i - low]) for i in wanted)
        return out

    def entries(self, start: int, end: int) -> Iterator[dict[str, Any]]:
        """Parsed `streamnotary.log_entry/v1` documents [start, end), authenticated."""
        for data in self.leaf_bytes(start, end):
            yield parse_entry(data)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._view(size).inclusion_proof(index)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self._view(new_size).consistency_proof(old_size)

    def stored_consistency(self, old_size: int, new_size: int) -> dict[str, Any] | None:
        """The consistency document the writer stored between two heads, if any."""
        try:
            data = self.store.get(consistency_key(self.topic, old_size, new_size))
            return dict(parse_document(data))
        except ObjectNotFound:
            return None

    def last_entry(self) -> dict[str, Any] | None:
        head = self._latest()
        if head.size == 0:
            return None
        return next(self.entries(head.size - 1, head.size))
