"""The backfill's scratch space: its sources' records in a SQLite file on local disk.

Why: a backfill recomputes every window its sources touch, and a window's records may
come from several sources (a station's ``_hist`` and ``_akt`` archives). Holding all
observations in memory until every source is read made the backfill's peak RSS grow with
the history's length (~0.5 KiB per observation: a decade of 500 hourly stations would not
fit). Instead each source is streamed once into this spill; windows are then read back one
station-window at a time (ordered by station and window start), and each source's records
are read back in file order for producing. Memory stays bounded by SQLite's page cache and
one batch of windows, whatever the history's length; the disk holds ~0.3 KiB per record.

The file lives in the backfill's temporary directory and is deleted with it; it is never
shared, so it has no schema (it does not cross a boundary).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

Message = tuple[bytes, bytes, int]  # (key, value, timestamp ms) as produced

CACHE_KIB = 16 * 1024  # SQLite page cache: the spill's share of the backfill's memory
INSERT_BATCH = 1_000  # rows per executemany: ~0.6 KiB each in memory

_SCHEMA = """
CREATE TABLE obs (
    source INTEGER NOT NULL, seq INTEGER NOT NULL, station TEXT NOT NULL,
    wstart INTEGER NOT NULL, window_id TEXT NOT NULL,
    key BLOB NOT NULL, value BLOB NOT NULL, ts INTEGER NOT NULL
);
CREATE TABLE verdict (window_id TEXT PRIMARY KEY, verdict TEXT NOT NULL) WITHOUT ROWID;
"""


class Spill:
    """Records of a backfill's sources, by source (file order) and by window."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")  # scratch data: a crash discards it
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.execute("PRAGMA temp_store=FILE")  # sorts spill to disk, not to memory
        self.db.executescript(_SCHEMA)
        self._indexed = False

    def add(
        self, source: int, rows: Iterable[tuple[str, int, str, Message]]
    ) -> tuple[int, int, int]:
        """Append a source's (station, window start, window id, message) rows in order.

        Returns (records, first ts, last ts); ts are -1 when the source had no records.
        """
        count, first, last = 0, -1, -1
        batch: list[tuple[object, ...]] = []
        self.db.execute("BEGIN")
        for station, wstart, window_id, (key, value, ts) in rows:
            batch.append((source, count, station, wstart, window_id, key, value, ts))
            count += 1
            first = ts if first < 0 else min(first, ts)
            last = max(last, ts)
            if len(batch) >= INSERT_BATCH:
                self.db.executemany("INSERT INTO obs VALUES (?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        self.db.executemany("INSERT INTO obs VALUES (?,?,?,?,?,?,?,?)", batch)
        self.db.execute("COMMIT")
        return count, first, last

    def _index(self) -> None:
        if not self._indexed:
            self.db.execute("CREATE INDEX obs_window ON obs (station, wstart, source, seq)")
            self.db.execute("CREATE INDEX obs_source ON obs (source, seq)")
            self._indexed = True

    def windows(self) -> Iterator[tuple[str, list[bytes]]]:
        """(window id, record values in input order) per window, by station and start."""
        self._index()
        rows = self.db.execute(
            "SELECT window_id, value FROM obs ORDER BY station, wstart, source, seq"
        )
        current: str | None = None
        values: list[bytes] = []
        for window_id, value in rows:
            if window_id != current:
                if current is not None:
                    yield current, values
                current, values = window_id, []
            values.append(value)
        if current is not None:
            yield current, values

    def set_verdicts(self, verdicts: Iterable[tuple[str, str]]) -> None:
        """Record (window id, verdict) pairs; `produce` keeps the windows marked `new`."""
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO verdict VALUES (?, ?)", verdicts)
        self.db.execute("COMMIT")

    def _kept(self, what: str, source: int, extra: str = "", args: tuple[object, ...] = ()) -> str:
        return (
            f"SELECT {what} FROM obs o JOIN verdict v ON v.window_id = o.window_id "
            f"WHERE o.source = {int(source)} AND v.verdict = 'new' {extra}"
        )

    def produce(self, source: int, key: bytes | None = None) -> Iterator[Message]:
        """The source's records of new windows (all keys, or one), in file order."""
        self._index()
        if key is None:
            sql = self._kept("o.key, o.value, o.ts", source, "ORDER BY o.seq")
            rows = self.db.execute(sql)
        else:
            sql = self._kept("o.key, o.value, o.ts", source, "AND o.key = ? ORDER BY o.seq")
            rows = self.db.execute(sql, (key,))
        for k, v, ts in rows:
            yield bytes(k), bytes(v), int(ts)

    def kept_summary(self, source: int) -> tuple[int, list[str], int, int]:
        """(records, stations, first ts, last ts) of the source's records of new windows."""
        count, first, last = self.db.execute(
            self._kept("count(*), min(o.ts), max(o.ts)", source)
        ).fetchone()
        stations = [s for (s,) in self.db.execute(self._kept("DISTINCT o.station", source))]
        return (
            int(count),
            sorted(stations),
            -1 if first is None else first,
            (-1 if last is None else last),
        )

    def kept_keys(self, source: int) -> set[bytes]:
        return {bytes(k) for (k,) in self.db.execute(self._kept("DISTINCT o.key", source))}

    def close(self) -> None:
        self.db.close()
