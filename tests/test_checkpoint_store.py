"""The latest logged revision of a window, read newest bundle first (storage/checkpoint_store.py).

A run with late data needs the latest anchored revision of each late window. Reading the
whole signed log for it made every such run cost more the longer the history (issue 10:
~60 % of a late 10M-row backfill run). `newest_entries` reads the log's entry bundles from
the newest and stops once every wanted window is seen: on a real log in a local bucket it
must give exactly what a whole-log read gives, and read only the bundles it needs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import checkpoint_store
from storage.checkpoint_store import latest_entries, newest_entries
from storage.objectstore import LocalObjectStore
from storage.tlog import LogReader
from storage.tlog_writer import LogWriter
from tasks.tlog.entries import entry_bytes, may_name, run_entry, window_entry
from tasks.tlog.note import Signer
from tasks.tlog.tiles import TILE_WIDTH

SCOPE = "dwd.newest"
ORIGIN = "streamnotary/dwd.newest"


class CountingStore(LocalObjectStore):
    """A local bucket that counts the entry bundles read (``…/tile/entries/…``)."""

    bundles_read = 0

    def get(self, key: str) -> bytes:
        if "/tile/entries/" in key:
            self.bundles_read += 1
        return super().get(key)


def window_id(window: int) -> str:
    """A station-day window id per number: 336 days per station from station 00433 on."""
    station, day = divmod(window, 336)
    return f"{433 + station:05d}_2019{day // 28 + 1:02d}{day % 28 + 1:02d}T000000Z_86400s"


def entry(window: int, revision: int, topic: str = SCOPE) -> dict[str, Any]:
    return window_entry(
        topic=topic,
        window_id=window_id(window),
        revision=revision,
        checkpoint_digest=f"{window:032x}{revision:032x}",
        ranges={0: [(window * 10, window * 10 + 5)]},
        supersedes=None if revision == 0 else (revision - 1, "0" * 64),
        closed_at="2026-12-02T00:00:00Z",
        run=1,
    )


def written_log(tmp_path: Path) -> tuple[CountingStore, LogReader, list[dict[str, Any]]]:
    """A log of 3.5 bundles: 300 windows at revision 0, then late revisions of some."""
    rng = random.Random(8)
    entries = [entry(w, 0) for w in range(300)]
    revision = dict.fromkeys(range(300), 0)
    for _ in range(TILE_WIDTH * 3 + TILE_WIDTH // 2 - len(entries)):
        w = rng.randrange(300)
        revision[w] += 1
        entries.append(entry(w, revision[w]))
    store = CountingStore(tmp_path / "bucket")
    signer = Signer.generate("operator")
    writer = LogWriter(store, SCOPE, signer, ORIGIN)
    writer.append(0, [entry_bytes(e) for e in entries])
    reader = LogReader(store, SCOPE, signer.named(ORIGIN).verifier(), ORIGIN)
    return store, reader, entries


def test_newest_first_equals_the_whole_log_and_reads_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, reader, entries = written_log(tmp_path)
    size = len(entries)
    head = reader.checkpoint()
    assert head is not None and head.size == size
    everything = latest_entries(entries)
    # the windows of the newest entries: found in the last bundle alone, which is all that
    # is read when bundles are fetched one at a time ...
    tail = {e["window_id"] for e in entries[-20:]}
    monkeypatch.setattr(checkpoint_store, "PREFETCH_BUNDLES", 1)
    store.bundles_read = 0
    assert newest_entries(reader, size, tail) == {w: everything[w] for w in tail}
    assert store.bundles_read == 1
    # ... and a window last logged in the bundle before: two, fetched in one batch
    last = {e["window_id"]: i for i, e in enumerate(entries)}
    older = {w for w, i in last.items() if i // TILE_WIDTH == (size - 1) // TILE_WIDTH - 1}
    assert older
    monkeypatch.setattr(checkpoint_store, "PREFETCH_BUNDLES", 2)
    reader = LogReader(store, SCOPE, reader.verifier, ORIGIN)
    store.bundles_read = 0
    assert newest_entries(reader, size, older) == {w: everything[w] for w in older}
    assert store.bundles_read == 2
    monkeypatch.undo()
    # any mix, with windows never logged: the same answer as the whole log
    rng = random.Random(9)
    ids = sorted(everything)
    for _ in range(20):
        wanted = set(rng.sample(ids, rng.randrange(1, 40)))
        wanted |= {"00433_20300101T000000Z_86400s"} if rng.random() < 0.3 else set()
        assert newest_entries(reader, size, wanted) == {
            w: everything[w] for w in wanted if w in everything
        }
    # a window that was never logged costs the whole log, no more
    store.bundles_read = 0
    assert newest_entries(reader, size, {"00433_20300101T000000Z_86400s"}) == {}
    assert store.bundles_read == -(-size // TILE_WIDTH)


# Window ids as a third-party producer can make them: any text, quotes, backslashes,
# controls and astral characters included (the station id comes from the message).
window_ids = st.text(min_size=1, max_size=24)


@settings(max_examples=300, deadline=None)
@given(wid=window_ids, others=st.lists(window_ids, max_size=4), revision=st.integers(0, 99))
def test_may_name_never_skips_an_entry_of_a_wanted_window(
    wid: str, others: list[str], revision: int
) -> None:
    e = window_entry(
        topic=SCOPE,
        window_id=wid,
        revision=revision,
        checkpoint_digest="ab" * 32,
        ranges={0: [(0, 5)]},
        supersedes=None if revision == 0 else (revision - 1, "0" * 64),
        closed_at="2026-12-02T00:00:00Z",
        run=1,
    )
    data = entry_bytes(e)
    names = frozenset(w.encode("utf-8", "surrogatepass") for w in others)
    assert may_name(data, names | {wid.encode("utf-8", "surrogatepass")})
    if wid not in others and not any(c in wid for c in '"\\') and wid.isprintable():
        # a plain id that is not wanted is skipped without parsing
        assert not may_name(data, names)


def test_may_name_parses_what_it_cannot_read_plainly() -> None:
    run = entry_bytes(
        run_entry(
            topic=SCOPE,
            run=3,
            read={0: (0, 10)},
            quarantined={},
            unattributable={},
            held_open={},
            cursor_digest="cd" * 32,
            anchored_at="2026-12-02T00:00:00Z",
        )
    )
    assert may_name(run, frozenset({b"00433_20190101T000000Z_86400s"}))  # no window id
    assert may_name(b'{"window_id": "x"}', frozenset())  # not canonical: the parser decides
    assert may_name(b'{"window_id":"unterminated', frozenset())
