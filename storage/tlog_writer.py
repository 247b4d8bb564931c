"""Appending to the anchor log in the object store (`storage.tlog` has its layout and reader).

`LogWriter.append` is idempotent for a given (base size, entries): tiles are write-once
with identical bytes, Ed25519 signatures are deterministic, and the checkpoint only ever
moves forward from the head it was asked to extend. Each append also stores the RFC 6962
consistency proof from the head it extended, at ``log/<topic>/consistency/<old>-<new>``.
Pure tree code: `tasks.tlog`; design: docs/design.md ("The anchor log").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage import log_cache
from storage.objectstore import ObjectChanged, ObjectNotFound, ObjectStore
from storage.store_base import put_all_once
from storage.tlog import (
    CONSISTENCY_SCHEMA,
    LogCorrupted,
    LogForked,
    LogReader,
    StoreTiles,
    checkpoint_key,
    consistency_key,
    log_identity,
    log_prefix,
)
from tasks.canonical import canonical_json
from tasks.merkle import verify_consistency
from tasks.tlog.checkpoint import LogCheckpoint, open_checkpoint, sign_checkpoint
from tasks.tlog.note import Signer
from tasks.tlog.tiles import (
    TILE_WIDTH,
    MemoryTiles,
    MissingTile,
    TileEdge,
    TreeView,
    append_entries,
    partial_tiles,
)


class _Layered:
    """New tiles in memory first, then the store (the writer's view while appending)."""

    def __init__(self, memory: MemoryTiles, store: StoreTiles) -> None:
        self.memory, self.store = memory, store

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        try:
            return self.memory.tile(level, index, width)
        except MissingTile:
            return self.store.tile(level, index, width)


def consistency_document(
    origin: str, old: LogCheckpoint | None, new: LogCheckpoint, proof: Sequence[bytes]
) -> dict[str, Any]:
    """`streamnotary.log_consistency/v1`: RFC 6962 §2.1.2 proof from `old` to `new`."""
    return {
        "schema": CONSISTENCY_SCHEMA,
        "origin": origin,
        "old": None if old is None else {"size": old.size, "root": old.root.hex()},
        "new": {"size": new.size, "root": new.root.hex()},
        "proof": [h.hex() for h in proof],
    }


@dataclass(frozen=True)
class AppendResult:
    old: LogCheckpoint | None
    new: LogCheckpoint
    note: bytes
    created: bool  # False when a resumed run found this append already done


class LogWriter:
    """Append to one topic's anchor log and publish the signed checkpoint."""

    def __init__(self, store: ObjectStore, topic: str, signer: Signer, origin: str) -> None:
        self.store = store
        self.topic = topic
        self.origin = origin
        self.signer = signer.named(origin)
        self.reader = LogReader(store, topic, self.signer.verifier(), origin)

    def head(self) -> LogCheckpoint | None:
        return self._tagged_head()[0]

    def _tagged_head(self) -> tuple[LogCheckpoint | None, str | None]:
        """The verified head and the entity tag a compare-and-swap publish must present."""
        try:
            tagged = self.store.get_tagged(checkpoint_key(self.topic))
        except ObjectNotFound:
            return None, None
        head, _ = open_checkpoint(tagged.data, self.signer.verifier(), self.origin)
        return head, tagged.etag

    def _edge(self, size: int) -> TileEdge:
        """The partial tiles and bundle of the tree of `size`, read from the store."""
        if size == 0:
            return TileEdge.empty()
        tiles = StoreTiles(self.store, self.topic)
        levels = {lvl: tiles.tile(lvl, idx, w) for lvl, idx, w in partial_tiles(size)}
        width = size % TILE_WIDTH
        bundle = tiles.bundle(size // TILE_WIDTH, width) if width else []
        return TileEdge(size, levels, tuple(bundle))

    def append(
        self,
        base_size: int,
        entries: Sequence[bytes],
        before_publish: Callable[[], None] | None = None,
        window_ids: Sequence[str | None] | None = None,
    ) -> AppendResult:
        """Append `entries` to the log of exactly `base_size` entries (see module docstring).

        Resuming: if the stored head already is `base_size + len(entries)` and has the root
        these entries give, the append was done before a crash and nothing is rewritten.
        `LogForked` if the stored head is anything else. `window_ids`: the window each
        entry names (None: none), remembered for a catch-up's late-window lookup
        (`storage.log_cache`) once the entries are in the log.
        """
        current, etag = self._tagged_head()
        current_size = 0 if current is None else current.size
        new_size = base_size + len(entries)
        if current_size not in (base_size, new_size):
            raise LogForked(
                f"log {self.origin} is at size {current_size}; this run appends at {base_size}"
            )
        edge = self._edge(base_size)
        if current is not None and current_size == base_size:
            try:
                edge.check(current.root)
            except ValueError as exc:
                raise LogCorrupted(f"log {self.origin}: {exc}") from exc
        result = append_entries(edge, entries)
        new = LogCheckpoint(self.origin, new_size, result.root)
        note = sign_checkpoint(new, self.signer)
        if current_size == new_size and current_size != base_size:
            if current is None or current.root != result.root:
                raise LogForked(f"log {self.origin} has another tree at size {new_size}")
            before = None
            if base_size:
                root = TreeView(MemoryTiles(edge.tiles()), base_size).root()
                before = LogCheckpoint(self.origin, base_size, root)
            self._remember_positions(base_size, window_ids)
            return AppendResult(before, new, note, created=False)
        old = current
        # the tiles and bundles in parallel: the checkpoint published below commits to
        # them, and `put_all_once` returns only when every one is stored
        prefix = log_prefix(self.topic)
        objects = [(f"{prefix}/{path}", data) for path, data in sorted(result.objects.items())]
        put_all_once(self.store, objects, lambda _key: "application/octet-stream")
        cache = log_cache.active()
        if cache is not None:  # stored write-once: the next run's reads need not fetch them
            identity = repr(self.store)
            for key, data in objects:
                cache.remember(identity, key, data)
        layered = _Layered(MemoryTiles(result.objects), StoreTiles(self.store, self.topic))
        view = TreeView(layered, new_size)
        proof = view.consistency_proof(base_size)
        if old is not None:
            verify_consistency(old.size, new.size, old.root, new.root, proof)
        doc = consistency_document(self.origin, old, new, proof)
        key = consistency_key(self.topic, base_size, new_size)
        self.store.put_once(key, canonical_json(doc), "application/json")
        if before_publish is not None:
            before_publish()  # tests: a crash between the tiles and the checkpoint
        self._publish(etag, note)
        self._remember_positions(base_size, window_ids)
        return AppendResult(old, new, note, created=True)

    def _remember_positions(self, base_size: int, window_ids: Sequence[str | None] | None) -> None:
        cache = log_cache.active()
        if cache is not None and window_ids is not None:
            cache.appended(log_identity(self.store, self.topic), base_size, window_ids)

    def _publish(self, etag: str | None, note: bytes) -> None:
        """Compare-and-swap the checkpoint: only over the head we extended (forward only)."""
        try:
            self.store.put_if(checkpoint_key(self.topic), note, etag, "text/plain; charset=utf-8")
        except ObjectChanged as exc:
            raise LogForked(f"log {self.origin} moved while this run appended") from exc
