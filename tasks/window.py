"""Epoch-aligned tumbling windows, keyed by station.

Window index w = floor(t / Δ) for an event time t in seconds since the Unix epoch; the
window covers the half-open interval [wΔ, (w+1)Δ). Because the boundaries depend only
on t and Δ, every party (pipeline, auditor, a re-run) assigns a record to the same
window without coordination.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

DEFAULT_WINDOW_SECONDS = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOW_ID_RE = re.compile(r"[0-9]{5}_[0-9]{8}T[0-9]{6}Z_[1-9][0-9]{0,11}s", re.ASCII)
_START_FIELDS = ((0, 4), (4, 6), (6, 8), (9, 11), (11, 13), (13, 15))  # YYYYmmddTHHMMSSZ


class WindowSpecError(ValueError):
    """A window size that does not define a valid tumbling window."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling-window geometry: size Δ in whole seconds."""

    size_seconds: int = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if type(self.size_seconds) is not int or self.size_seconds <= 0:
            raise WindowSpecError(
                f"window size must be a positive integer, got {self.size_seconds!r}"
            )

    def index_of(self, t: datetime) -> int:
        """Window index of event time `t` (aware datetime): floor((t - epoch) / size).

        Whole seconds suffice: the size is a whole number of seconds, so a sub-second
        part never moves the floor. Integer arithmetic, because every message is asked
        (a timedelta division cost ~3 % of an anchor run).
        """
        d = t - _EPOCH
        return (d.days * 86_400 + d.seconds) // self.size_seconds

    def key_of(self, station_id: str, t: datetime) -> WindowKey:
        """The key of the window holding `t`: one shared object per window (see `_KEYS`)."""
        index = self.index_of(t)
        known = _KEYS.get((station_id, index, self.size_seconds))
        if known is None:
            if len(_KEYS) >= _KEYS_LIMIT:
                _KEYS.clear()
            known = _KEYS[station_id, index, self.size_seconds] = WindowKey(
                station_id, index, self.size_seconds
            )
        return known


# Every message is asked for its window key, and a window holds ~24 to ~300 of them:
# building a frozen dataclass per message cost more than finding the window's one. Equal
# keys are then also the same object, which dict lookups and `build_window`'s membership
# check compare first. Bounded like the record caches (cleared when full: a cleared cache
# only builds new, equal keys).
_KEYS: dict[tuple[str, int, int], WindowKey] = {}
_KEYS_LIMIT = 1 << 16


@lru_cache(maxsize=1 << 16)
def _window_id(station_id: str, index: int, size_seconds: int) -> str:
    """`WindowKey.window_id`, formatted once per window: a run asks ~10 times per window."""
    start = _EPOCH + timedelta(seconds=index * size_seconds)
    return f"{station_id}_{start:%Y%m%dT%H%M%SZ}_{size_seconds}s"


@dataclass(frozen=True, slots=True, order=True)
class WindowKey:
    """One window of one station: the unit that gets a payload, a checkpoint and an anchor."""

    station_id: str
    index: int
    size_seconds: int

    @property
    def start(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.index * self.size_seconds)

    @property
    def end(self) -> datetime:
        """Exclusive end of the interval."""
        return _EPOCH + timedelta(seconds=(self.index + 1) * self.size_seconds)

    @property
    def window_id(self) -> str:
        """Stable text id, e.g. ``00433_20190907T000000Z_86400s``; also the ledger key."""
        return _window_id(self.station_id, self.index, self.size_seconds)

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    @classmethod
    def parse(cls, window_id: str) -> WindowKey:
        """Inverse of `window_id`; raises `WindowSpecError` for anything else.

        Only the exact text `window_id` writes is accepted (ASCII digits, 5-digit station,
        aligned start, a size whose window end is representable), because ids come from
        object keys and documents that anyone with bucket access can write.
        """
        if not isinstance(window_id, str) or not _WINDOW_ID_RE.fullmatch(window_id):
            raise WindowSpecError(f"not a window id: {window_id!r:.80}")
        station, start, size = window_id.split("_")
        try:
            # the pattern fixed each field's digits; strptime cost ~1 % of a 10M run
            year, month, day, hour, minute, second = (int(start[a:b]) for a, b in _START_FIELDS)
            t = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            key = WindowSpec(int(size.removesuffix("s"))).key_of(station, t)
            key.end  # noqa: B018 -- raises OverflowError past year 9999
        except (ValueError, OverflowError) as exc:
            raise WindowSpecError(f"not a window id: {window_id!r:.80}: {exc}") from exc
        if key.start != t or key.window_id != window_id:
            raise WindowSpecError(f"window id {window_id!r} is not aligned to its size")
        return key
