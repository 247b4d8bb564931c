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

from storage.checkpoint_store import latest_entries, newest_entries
from storage.objectstore import LocalObjectStore
from storage.tlog import LogReader, LogWriter
from tasks.tlog.entries import entry_bytes, window_entry
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


def entry(window: int, revision: int) -> dict[str, Any]:
    return window_entry(
        topic=SCOPE,
        window_id=f"00433_2019{window // 28 + 1:02d}{window % 28 + 1:02d}T000000Z_86400s",
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


def test_newest_first_equals_the_whole_log_and_reads_only_the_tail(tmp_path: Path) -> None:
    store, reader, entries = written_log(tmp_path)
    size = len(entries)
    head = reader.checkpoint()
    assert head is not None and head.size == size
    everything = latest_entries(entries)
    # the windows of the newest entries: found in the last bundle alone
    tail = {e["window_id"] for e in entries[-20:]}
    store.bundles_read = 0
    assert newest_entries(reader, size, tail) == {w: everything[w] for w in tail}
    assert store.bundles_read == 1
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
