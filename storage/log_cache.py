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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from threading import Lock

DEFAULT_MAX_BYTES = 16 << 20  # ~120 full entry bundles: ~4 runs of 7,700 windows' entries


class LogObjectCache:
    """Written log objects by (store, key), at most `max_bytes` of them (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._objects: OrderedDict[tuple[str, str], bytes] = OrderedDict()
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

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self._objects

    def __len__(self) -> int:
        return len(self._objects)


_active: ContextVar[LogObjectCache | None] = ContextVar("log_cache", default=None)


def active() -> LogObjectCache | None:
    """The cache of the `remembering` block this context is in, None outside one."""
    return _active.get()


@contextmanager
def remembering(max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[LogObjectCache]:
    """Remember written log objects for the block's duration (a catch-up's runs); nested
    blocks share the outer cache. Everything is dropped when the outermost block ends."""
    outer = _active.get()
    if outer is not None:
        yield outer
        return
    cache = LogObjectCache(max_bytes)
    token = _active.set(cache)
    try:
        yield cache
    finally:
        _active.reset(token)
