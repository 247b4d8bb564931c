"""C2SP tlog-tiles (c2sp.org/tlog-tiles): the log's Merkle tree as static tiles, and proofs.

A tile at level L, index N holds up to 256 consecutive hashes: at level 0 the leaf hashes,
at level L the roots of full tiles of level L-1, i.e. MTH(D[(N*256+i)*256**L : ...]).
Full tiles are 256 hashes (8,192 bytes) at ``tile/<L>/<N>``; the rightmost tile of a level
is partial, ``tile/<L>/<N>.p/<W>`` with W = floor(size / 256**L) mod 256. Entries are
stored in bundles of up to 256 at ``tile/entries/<N>[.p/<W>]``, each entry prefixed by
its big-endian uint16 length. N is written in 3-digit groups, all but the last prefixed
by ``x`` (1234067 -> ``x001/x234/067``).

Every tile path names immutable bytes (a partial tile of width W never changes; a wider
one gets a new name), so the writer stores them write-once. `TreeView` computes any
RFC 6962 subtree root, tree root, inclusion or consistency proof from O(log n) tiles,
which is why proofs never need every leaf in memory. Failures raise `TileError` subclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tasks.merkle import (
    HASH_SIZE,
    consistency_path,
    empty_root,
    hash_children,
    inclusion_path,
    root_from_leaf_hashes,
)

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_SIZE = 0xFFFF  # uint16 length prefix


class TileError(ValueError):
    """Base class of every tile failure."""


class MalformedTile(TileError):
    """Tile bytes are not a whole number of hashes or have the wrong width."""


class MalformedBundle(TileError):
    """Entry-bundle bytes do not parse as uint16-length-prefixed entries."""


class EntryTooLarge(TileError):
    """A log entry is longer than the 65,535 bytes a bundle's uint16 prefix can state."""


class MissingTile(TileError):
    """A tile a computation needs is not available (or is narrower than the tree needs)."""


class EdgeMismatch(TileError):
    """The stored partial tiles do not hash to the root of the checkpoint they belong to."""


def encode_index(n: int) -> str:
    """tlog-tiles: zero-padded 3-digit path elements, all but the last prefixed by ``x``."""
    if n < 0:
        raise TileError(f"tile index {n} is negative")
    groups = []
    while True:
        groups.append(n % 1000)
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*(f"x{g:03d}" for g in groups[:-1]), f"{groups[-1]:03d}"])


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise TileError(f"tile width {width} outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` relative to the log prefix."""
    if not 0 <= level <= 63:
        raise TileError(f"tile level {level} outside 0..63")
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """``tile/entries/<N>[.p/<W>]`` relative to the log prefix."""
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


def tile_width(size: int, level: int, index: int) -> int:
    """Width of tile (level, index) in a tree of `size` leaves: 256, partial, or 0 (absent)."""
    span = TILE_WIDTH**level
    if index < size // (span * TILE_WIDTH):
        return TILE_WIDTH
    if index == size // (span * TILE_WIDTH):
        return (size // span) % TILE_WIDTH
    return 0


def partial_tiles(size: int) -> list[tuple[int, int, int]]:
    """(level, index, width) of every partial tile of a tree of `size` (tlog-tiles example:
    size 70,000 -> level 0 width 112, level 1 width 17, level 2 width 1)."""
    out = []
    level = 0
    while TILE_WIDTH**level <= size:
        width = (size // TILE_WIDTH**level) % TILE_WIDTH
        if width:
            out.append((level, size // TILE_WIDTH ** (level + 1), width))
        level += 1
    return out


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise MalformedTile("a tile holds 1 to 256 hashes of 32 bytes")
    return b"".join(hashes)


def decode_tile(data: bytes, width: int) -> list[bytes]:
    """The hashes of a tile; `MalformedTile` unless it is exactly `width` hashes."""
    if len(data) != width * HASH_SIZE:
        raise MalformedTile(
            f"tile of width {width} must be {width * HASH_SIZE} bytes, not {len(data)}"
        )
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Entry bundle: each entry as big-endian uint16 length || bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise EntryTooLarge(f"log entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    entries = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise MalformedBundle("truncated length prefix")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise MalformedBundle("entry runs past the end of the bundle")
        entries.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    if width is not None and len(entries) != width:
        raise MalformedBundle(f"bundle holds {len(entries)} entries, expected {width}")
    return entries


class TileSource(Protocol):
    """Where a `TreeView` gets tiles: the object store, or tiles held in memory."""

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        """The hashes of tile (level, index) of the given width; `MissingTile` if absent."""
        ...


@dataclass
class MemoryTiles:
    """Tiles held in memory by path (the writer's new tiles and the partial edge)."""

    tiles: dict[str, bytes] = field(default_factory=dict)

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        path = tile_path(level, index, width)
        if path not in self.tiles:
            raise MissingTile(f"tile {path} is not in memory")
        return decode_tile(self.tiles[path], width)


class TreeView:
    """RFC 6962 hashes and proofs of the tree of `size` leaves, computed from its tiles."""

    def __init__(self, source: TileSource, size: int) -> None:
        self.source = source
        self.size = size
        self._cache: dict[tuple[int, int], list[bytes]] = {}

    def _tile(self, level: int, index: int) -> list[bytes]:
        key = (level, index)
        if key not in self._cache:
            width = tile_width(self.size, level, index)
            if width == 0:
                raise MissingTile(f"tile {level}/{index} is outside a tree of size {self.size}")
            self._cache[key] = self.source.tile(level, index, width)
        return self._cache[key]

    def complete_subtree(self, height: int, index: int) -> bytes:
        """MTH(D[index * 2**height : (index + 1) * 2**height]) from one tile."""
        level, rest = divmod(height, TILE_HEIGHT)
        first = index << rest
        tile = self._tile(level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        hashes = tile[offset : offset + (1 << rest)]
        if len(hashes) != 1 << rest:
            raise MissingTile(f"subtree {height}/{index} runs past tile {level}/{first // 256}")
        return root_from_leaf_hashes(hashes)

    def range_root(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the aligned ranges RFC 6962 proofs ask for."""
        if not 0 <= lo < hi <= self.size:
            raise MissingTile(f"range [{lo}, {hi}) is outside a tree of size {self.size}")
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.complete_subtree(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        if lo % k:
            raise MissingTile(f"range [{lo}, {hi}) is not aligned to a subtree")
        return hash_children(self.range_root(lo, lo + k), self.range_root(lo + k, hi))

    def root(self) -> bytes:
        return self.range_root(0, self.size) if self.size else empty_root()

    def inclusion_proof(self, index: int) -> list[bytes]:
        return inclusion_path(self.range_root, index, self.size)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        return consistency_path(self.range_root, old_size, self.size)


@dataclass(frozen=True)
class TileEdge:
    """The rightmost partial tile of every level, and the partial entry bundle, at `size`.

    That is all a writer needs to append: every other tile is full and never changes.
    """

    size: int
    levels: Mapping[int, Sequence[bytes]]
    bundle: Sequence[bytes]

    @classmethod
    def empty(cls) -> TileEdge:
        return cls(0, {}, ())

    def tiles(self) -> dict[str, bytes]:
        return {
            tile_path(level, index, width): encode_tile(self.levels[level])
            for level, index, width in partial_tiles(self.size)
        }

    def check(self, root: bytes) -> None:
        """`EdgeMismatch` unless these partial tiles hash to `root` (the checkpoint's)."""
        for level, _index, width in partial_tiles(self.size):
            if len(self.levels.get(level, ())) != width:
                raise EdgeMismatch(f"partial tile at level {level} is not {width} wide")
        if len(self.bundle) != self.size % TILE_WIDTH:
            raise EdgeMismatch("partial entry bundle has the wrong number of entries")
        try:
            computed = TreeView(MemoryTiles(self.tiles()), self.size).root()
        except MissingTile as exc:
            raise EdgeMismatch(f"partial tiles are incomplete: {exc}") from exc
        if computed != root:
            raise EdgeMismatch(f"partial tiles give root {computed.hex()}, checkpoint {root.hex()}")


@dataclass(frozen=True)
class Append:
    """The result of appending entries: the new edge and every tile/bundle to write."""

    edge: TileEdge
    objects: dict[str, bytes]
    root: bytes


def append_entries(edge: TileEdge, entries: Iterable[bytes]) -> Append:
    """Append `entries` (raw entry bytes) to the tree whose edge is `edge`.

    Returns every full and new partial tile and bundle (paths relative to the log prefix)
    and the new root. Deterministic: the same edge and entries give the same bytes.
    """
    from tasks.merkle import leaf_hashes

    entries = list(entries)
    objects: dict[str, bytes] = {}
    bundle = list(edge.bundle)
    index = edge.size // TILE_WIDTH
    for entry in entries:
        bundle.append(entry)
        if len(bundle) == TILE_WIDTH:
            objects[entries_path(index)] = encode_bundle(bundle)
            bundle, index = [], index + 1
    if bundle and entries:
        objects[entries_path(index, len(bundle))] = encode_bundle(bundle)

    new_size = edge.size + len(entries)
    levels: dict[int, list[bytes]] = {}
    incoming = leaf_hashes(entries)
    level = 0
    while TILE_WIDTH**level <= new_size:
        current = list(edge.levels.get(level, ()))
        index = (edge.size // TILE_WIDTH**level) // TILE_WIDTH
        completed = []
        for h in incoming:
            current.append(h)
            if len(current) == TILE_WIDTH:
                objects[tile_path(level, index)] = encode_tile(current)
                completed.append(root_from_leaf_hashes(current))
                current, index = [], index + 1
        if current and incoming:
            objects[tile_path(level, index, len(current))] = encode_tile(current)
        if current:
            levels[level] = current
        incoming = completed
        level += 1
    new_edge = TileEdge(new_size, levels, tuple(bundle))
    root = TreeView(MemoryTiles({**edge.tiles(), **objects}), new_size).root()
    return Append(new_edge, objects, root)


class TileMismatch(TileError):
    """A stored tile does not hash to what its parent tile (or the checkpoint root) says."""


class VerifiedTiles:
    """A `TileSource` that only returns tiles authenticated against a checkpoint's root.

    The partial tiles of the tree are checked together against the root (every one of their
    hashes enters it); a full tile is checked against its hash in the tile one level up,
    itself checked the same way. A bucket writer who edits any tile is therefore caught,
    as golang.org/x/mod/sumdb/tlog's TileHashReader does.
    """

    def __init__(self, source: TileSource, size: int, root: bytes) -> None:
        self.source = source
        self.size = size
        self.root = root
        self._verified: dict[tuple[int, int, int], list[bytes]] = {}
        self._edge_checked = False

    def _check_edge(self) -> None:
        if self._edge_checked:
            return
        levels = {lvl: self.source.tile(lvl, idx, w) for lvl, idx, w in partial_tiles(self.size)}
        computed = TreeView(_Fixed(levels, self.size), self.size).root()
        if computed != self.root:
            raise TileMismatch(
                f"partial tiles give root {computed.hex()}, the checkpoint says {self.root.hex()}"
            )
        for (lvl, idx, w), hashes in zip(partial_tiles(self.size), levels.values(), strict=True):
            self._verified[(lvl, idx, w)] = hashes
        self._edge_checked = True

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        """The tile as a tree of `width` hashes sees it: a prefix of the head's tile."""
        full_width = tile_width(self.size, level, index)
        if not 0 < width <= full_width:
            raise MissingTile(f"tile {level}/{index} of width {width} is not in this tree")
        return self._head_tile(level, index, full_width)[:width]

    def _head_tile(self, level: int, index: int, width: int) -> list[bytes]:
        key = (level, index, width)
        if key in self._verified:
            return self._verified[key]
        if width < TILE_WIDTH:
            self._check_edge()
            if key not in self._verified:
                raise MissingTile(f"tile {tile_path(level, index, width)} is not in this tree")
            return self._verified[key]
        hashes = self.source.tile(level, index, width)
        parent_index, slot = divmod(index, TILE_WIDTH)
        parent_width = tile_width(self.size, level + 1, parent_index)
        parent = self._head_tile(level + 1, parent_index, parent_width)
        if root_from_leaf_hashes(hashes) != parent[slot]:
            raise TileMismatch(f"tile {tile_path(level, index)} does not match its parent tile")
        self._verified[key] = hashes
        return hashes


class _Fixed:
    """The partial tiles of one tree, as a `TileSource` (used to check them against a root)."""

    def __init__(self, levels: Mapping[int, list[bytes]], size: int) -> None:
        self.levels = levels
        self.size = size

    def tile(self, level: int, index: int, width: int) -> list[bytes]:
        if level not in self.levels or len(self.levels[level]) != width:
            raise MissingTile(f"tile {level}/{index} is not a partial tile of size {self.size}")
        return self.levels[level]
