"""The anchor-log objects a catch-up process wrote, remembered for its next runs.

A run that receives late data reads the signed log back from its newest entry bundle until
it has found every late window (`storage.checkpoint_store.newest_entries`); late data is
nearly always for a window anchored one or two runs before, so in a catch-up (one process,
one run after another: `flows.catch_up`) those bundles and hash tiles are the ones the
same process has just written. A 10M-row catch-up spent ~10 % of its wall time fetching
them back (docs/benchmarks.md, "Session 21"). While `remembering()` is active, the log
writer keeps what it stored here and the log reader takes it from here instead of the
bucket.

Why this keeps the log the only authority: every tile path names immutable bytes
(`tasks.tlog.tiles`), and only bytes this process computed *and* stored write-once are
kept, never bytes read from the bucket. A reader still authenticates every remembered
tile and entry against the signed checkpoint it has just read, exactly as bytes from the
bucket. What a remembered object does hide is a later change of the stored copy: the
writer then keeps building on the authentic log instead of stopping, and the stored copy
fails every audit and proof that reads the bucket (those never run under `remembering`).
The cache belongs to the catch-up's context (a context variable), not to the process: an
audit or proof running on another thread of the same process meanwhile reads the bucket.
Bounded by bytes, least recently used first out; pure memory, no I/O. Thread-safe: the
partition groups of one run append to their logs on threads of their own, in copies of
the catch-up's context (`flows.anchor_groups`).

Remembering the objects is not enough: a late window's earlier revision may lie further
back than the cache reaches (a station's partition is read again only every few runs), and
the lookup then fetched every bundle between it and the head (a 2M-row catch-up walked
42-66 bundles back for 1-11 late windows a run; at 10M the catch-up fetched ~15,000 log
objects back). So the cache also remembers *where* this process appended each window's
newest entry (`WindowPositions`): the lookup reads those entries' bundles only, and
walks the log only outside the span of entries this process appended, contiguously.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from threading import Lock

DEFAULT_MAX_BYTES = 16 << 20  # ~120 full entry bundles: ~4 runs of 7,700 windows' entries
DEFAULT_MAX_WINDOWS = 1 << 18  # ~34 runs of 7,700 windows; ~47 MiB at ~186 bytes a window


class WindowPositions:
    """Where this process appended each window's newest entry, per log (by its identity).

    For one log the positions cover a span [low, high) of entries that this process
    appended one append after another, each at the size where the previous one ended: no
    other writer's entry is inside the span, so a window of the span that is not here has
    no entry in it at all, and one that is here has its newest entry of the span at the
    position kept. An append at any other size (another writer appended meanwhile, or a
    different log) starts the span again. Bounded by windows: past `max_windows` the
    oldest positions are dropped and `low` moves past them, so the claim above still holds
    for the shorter span. Not thread-safe by itself (`LogObjectCache` locks).
    """

    def __init__(self, max_windows: int = DEFAULT_MAX_WINDOWS) -> None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        self.max_windows = max_windows
        self._spans: dict[str, tuple[int, int]] = {}
        self._positions: dict[str, dict[str, int]] = {}

    def appended(self, log: str, base_size: int, window_ids: Sequence[str | None]) -> None:
        """Entries were appended to `log` at `base_size`, naming these windows (None: an
        entry that names none)."""
        low, high = self._spans.get(log, (base_size, base_size))
        positions = self._positions.setdefault(log, {})
        if high != base_size:
            positions.clear()
            low = base_size
        for i, wid in enumerate(window_ids):
            if wid is not None:
                positions.pop(wid, None)  # re-inserted last: oldest position first
                positions[wid] = base_size + i
        while len(positions) > self.max_windows:
            oldest = next(iter(positions))
            low = max(low, positions.pop(oldest) + 1)
        self._spans[log] = (low, base_size + len(window_ids))

    def span(self, log: str) -> tuple[int, int] | None:
        """[low, high): the entries of `log` this process appended, None if none."""
        return self._spans.get(log)

    def position(self, log: str, window_id: str) -> int | None:
        """The newest entry of `window_id` in the span, None if it has none there."""
        return self._positions.get(log, {}).get(window_id)

    def __len__(self) -> int:
        return sum(len(p) for p in self._positions.values())


class LogObjectCache:
    """Written log objects by (store, key), at most `max_bytes` of them (LRU)."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_windows: int = DEFAULT_MAX_WINDOWS
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self.located = 0  # late windows whose newest entry was found by position
        self._objects: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._positions = WindowPositions(max_windows)
        self._lock = Lock()

    def remember(self, store: str, key: str, data: bytes) -> None:
        """Keep `data`, stored write-once at `key` of `store` (a store's identity, its repr)."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._objects.pop((store, key), None)
            if old is not None:
                self.size -= len(old)
            self._objects[(store, key)] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, dropped = self._objects.popitem(last=False)
                self.size -= len(dropped)

    def recall(self, store: str, key: str) -> bytes | None:
        """The remembered bytes of `key` in `store`, or None (then read the store)."""
        with self._lock:
            data = self._objects.get((store, key))
            if data is None:
                self.misses += 1
                return None
            self._objects.move_to_end((store, key))
            self.hits += 1
            return data

    def missed(self, count: int) -> None:
        """Count `count` objects fetched from the bucket without a `recall` (a reader's
        prefetch of what is not here), so that `misses` counts every fetch back."""
        with self._lock:
            self.misses += count

    def appended(self, log: str, base_size: int, window_ids: Sequence[str | None]) -> None:
        """Remember where an append put each window's entry (`WindowPositions.appended`)."""
        with self._lock:
            self._positions.appended(log, base_size, window_ids)

    def positions(
        self, log: str, window_ids: Iterable[str]
    ) -> tuple[tuple[int, int] | None, dict[str, int]]:
        """The span of `log` this process appended, and the newest position in it of each
        of `window_ids` that has one (a window of the span that is absent has no entry)."""
        with self._lock:
            span = self._positions.span(log)
            if span is None:
                return None, {}
            found = {}
            for wid in window_ids:
                at = self._positions.position(log, wid)
                if at is not None:
                    found[wid] = at
            return span, found

    def read_by_position(self, count: int) -> None:
        """Count `count` late windows whose newest entry a lookup read at its position."""
        with self._lock:
            self.located += count

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self._objects

    def __len__(self) -> int:
        return len(self._objects)


_active: ContextVar[LogObjectCache | None] = ContextVar("log_cache", default=None)


def active() -> LogObjectCache | None:
    """The cache of the `remembering` block this context is in, None outside one."""
    return _active.get()


@contextmanager
def remembering(
    max_bytes: int = DEFAULT_MAX_BYTES, max_windows: int = DEFAULT_MAX_WINDOWS
) -> Iterator[LogObjectCache]:
    """Remember written log objects for the block's duration (a catch-up's runs); nested
    blocks share the outer cache. Everything is dropped when the outermost block ends."""
    outer = _active.get()
    if outer is not None:
        yield outer
        return
    cache = LogObjectCache(max_bytes, max_windows)
    token = _active.set(cache)
    try:
        yield cache
    finally:
        _active.reset(token)
