"""The hash-chained SQLite ledger: idempotent anchors, confirmations, tamper evidence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    LedgerCorrupted,
)
from storage.ledger.factory import open_ledger
from storage.ledger.local import GENESIS_HASH, LocalLedger, entry_hash
from streamnotary.config import Settings
from tasks.canonical import canonical_digest


def _entry(i: int, kind: str = "window", **extra: object) -> AnchorEntry:
    body = {"schema": "test", "n": i, "root": f"{i:064x}", **extra}
    return AnchorEntry(key=f"{kind}/dwd/{i}", kind=kind, body=body)  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[LocalLedger]:
    led = LocalLedger(tmp_path / "ledger.sqlite3", required_confirmations=2)
    yield led
    led.close()


def _fill(ledger: LocalLedger, n: int) -> list[AnchorRef]:
    return [ledger.anchor(_entry(i)) for i in range(n)]


def test_anchor_is_chained_and_readable(ledger: LocalLedger) -> None:
    refs = _fill(ledger, 3)
    assert [r.locator["seq"] for r in refs] == [1, 2, 3]
    rows = ledger._db.execute("SELECT seq, prev_hash, entry_hash FROM entries").fetchall()
    assert rows[0][1] == GENESIS_HASH
    assert rows[1][1] == rows[0][2] and rows[2][1] == rows[1][2]
    entry = _entry(1)
    assert rows[1][2] == entry_hash(2, entry.key, "window", entry.digest, rows[0][2])
    assert ledger.read(refs[1]) == entry.body
    assert refs[1].digest == canonical_digest(entry.body)
    assert ledger.head() == (3, rows[2][2])
    ledger.verify_integrity()


def test_anchor_is_idempotent_by_key(ledger: LocalLedger) -> None:
    first = ledger.anchor(_entry(7))
    again = ledger.anchor(_entry(7))
    assert again.locator == first.locator and again.digest == first.digest
    assert ledger.head()[0] == 1
    with pytest.raises(AnchorConflict):
        ledger.anchor(AnchorEntry(key="window/dwd/7", kind="window", body={"other": 1}))
    assert ledger.head()[0] == 1


def test_anchor_many_gives_the_one_by_one_outcome(tmp_path: Path) -> None:
    """One transaction for a run's entries, same refs and chain as anchoring one by one;
    a conflict keeps the entries before it and nothing after it."""
    one_by_one = LocalLedger(tmp_path / "a.sqlite3")
    batched = LocalLedger(tmp_path / "b.sqlite3")
    entries = [_entry(i) for i in range(5)]
    first = [one_by_one.anchor(e) for e in entries[:2]]
    assert batched.anchor_many(entries[:2]) == first
    again = [one_by_one.anchor(e) for e in [*entries, entries[4]]]
    assert batched.anchor_many([*entries, entries[4]]) == again  # idempotent, in a batch too
    assert [r.locator for r in batched.anchor_many(entries)] == [r.locator for r in again[:5]]
    batched.verify_integrity()

    changed = AnchorEntry(key=entries[3].key, kind="window", body={"other": 1})
    with pytest.raises(AnchorConflict):
        batched.anchor_many([_entry(7), changed, _entry(8)])
    assert batched.lookup(_entry(7).key) is not None  # before the conflict: committed
    assert batched.lookup(_entry(8).key) is None  # after it: not anchored
    batched.verify_integrity()
    one_by_one.close()
    batched.close()


def test_confirmations_grow_with_later_entries(ledger: LocalLedger) -> None:
    ref = ledger.anchor(_entry(0))
    assert (ref.confirmations, ref.final) == (1, False)
    ledger.anchor(_entry(1))
    fresh = ledger.lookup(ref.key)
    assert fresh is not None and (fresh.confirmations, fresh.final) == (2, True)
    assert ledger.lookup("window/dwd/none") is None


def test_read_unknown_or_mismatched_reference(ledger: LocalLedger) -> None:
    ref = ledger.anchor(_entry(0))
    with pytest.raises(EntryNotFound):
        ledger.read(AnchorRef("local", "window/dwd/none", ref.digest))
    wrong = AnchorRef("local", ref.key, ref.digest, {"seq": 5, "entry_hash": "x"})
    with pytest.raises(LedgerCorrupted):
        ledger.read(wrong)


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with LocalLedger(path) as led:
        _fill(led, 2)
    with LocalLedger(path) as led:
        assert led.anchor(_entry(2)).locator["seq"] == 3
        led.verify_integrity()


def _tamper(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        ("UPDATE entries SET body = replace(body, '\"n\":2', '\"n\":9') WHERE seq = 3", 3),
        ("UPDATE entries SET digest = '00' || substr(digest, 3) WHERE seq = 2", 2),
        ("UPDATE entries SET key = 'window/dwd/evil' WHERE seq = 4", 4),
        ("DELETE FROM entries WHERE seq = 2", 2),
    ],
)
def test_tampering_is_detected_at_the_first_bad_seq(tmp_path: Path, sql: str, bad_seq: int) -> None:
    path = tmp_path / "l.sqlite3"
    with LocalLedger(path) as led:
        _fill(led, 5)
        led.verify_integrity()
    _tamper(path, sql)
    with LocalLedger(path) as led, pytest.raises(LedgerCorrupted, match=f"seq {bad_seq}"):
        led.verify_integrity()


def test_tampered_body_with_recomputed_digest_breaks_the_chain(tmp_path: Path) -> None:
    """Fixing the digest is not enough: the digest is inside the entry hash."""
    path = tmp_path / "l.sqlite3"
    with LocalLedger(path) as led:
        _fill(led, 3)
    forged = {"schema": "test", "n": 99, "root": "0" * 64}
    from tasks.canonical import canonical_json

    _tamper(
        path,
        "UPDATE entries SET body = ?, digest = ? WHERE seq = 2",
        canonical_json(forged).decode(),
        canonical_digest(forged),
    )
    with LocalLedger(path) as led:
        with pytest.raises(LedgerCorrupted, match="seq 2: entry_hash"):
            led.verify_integrity()
        ref = led.lookup("window/dwd/1")
        assert ref is not None and led.read(ref) == forged  # read alone cannot see it


def test_reordering_rows_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with LocalLedger(path) as led:
        _fill(led, 4)
    db = sqlite3.connect(path)
    with db:  # swap the contents of seq 2 and 3
        db.execute("UPDATE entries SET seq = -2 WHERE seq = 2")
        db.execute("UPDATE entries SET seq = 2 WHERE seq = 3")
        db.execute("UPDATE entries SET seq = 3 WHERE seq = -2")
    db.close()
    with LocalLedger(path) as led, pytest.raises(LedgerCorrupted, match="seq 2"):
        led.verify_integrity()


def _anchor_many(path: str, worker: int) -> list[int]:
    with LocalLedger(Path(path)) as led:
        seqs = [led.anchor(_entry(worker * 100 + i)).locator["seq"] for i in range(15)]
        led.anchor(_entry(10_000))  # every worker also anchors one shared key
        return seqs


def test_concurrent_processes_serialize(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    LocalLedger(path).close()
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_anchor_many, [str(path)] * 3, range(3)))
    all_seqs = sorted(s for r in results for s in r)
    assert all_seqs == sorted(set(all_seqs))  # no seq handed out twice
    with LocalLedger(path) as led:
        assert led.head()[0] == 3 * 15 + 1  # the shared key was anchored once
        led.verify_integrity()


def test_factory_and_settings(tmp_path: Path) -> None:
    led = open_ledger(Settings(home=str(tmp_path), ledger="local", ledger_confirmations=3))
    assert isinstance(led, LocalLedger)
    assert led.path == tmp_path / "ledger.sqlite3" and led.required_confirmations == 3
    led.close()
    custom = tmp_path / "x" / "chain.db"
    led = LocalLedger.from_settings(Settings(home=str(tmp_path), ledger_url=str(custom)))
    assert led.path == custom
    led.close()
    led = LocalLedger.from_settings(Settings(home=str(tmp_path), ledger_url=custom.as_uri()))
    assert led.path == custom
    led.close()


def test_ledger_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        ledger = LocalLedger(tmp_path / "home" / "ledger.sqlite3")
        ledger.anchor(AnchorEntry("batch/t/" + "ab" * 32, "batch", {"kind": "batch"}))
        ledger.close()
    finally:
        os.umask(old)
    for f in (tmp_path / "home").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
