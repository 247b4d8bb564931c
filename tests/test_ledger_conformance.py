"""One conformance suite for every ledger backend, each against its real (or recorded) node.

Backends: ``local`` (SQLite hash chain), ``multichain`` (a live MultiChain 2.3.3 node the
session starts, see tests/fixtures/multichain.py), ``evm`` (a real anvil), ``bitcoin`` (a
real litecoind in regtest). Each parameter provides hooks: make a ledger
with some required confirmations, *advance* the backend by one block, count the entries
stored under a key, and (for networked backends) make a ledger pointing at a dead node.

Entries are batch entries shaped as the Bitcoin family can recover them
(``{"kind","topic","root","size"}`` under ``batch/<topic>/<root>``), which every backend
accepts, so all four run the very same cases.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorConflict, AnchorEntry, Ledger, LedgerUnavailable
from storage.ledger.bitcoin import BitcoinLedger
from storage.ledger.evm import EvmLedger
from storage.ledger.local import LocalLedger
from storage.ledger.multichain import MultiChainLedger
from streamnotary.chain_nodes import free_port
from tasks.canonical import canonical_digest

NETWORKED = ("multichain", "evm", "bitcoin")
UNREACHABLE_BOUND_S = 10.0


@dataclass
class Backend:
    name: str
    make: Callable[[int], Ledger]  # required_confirmations -> ledger
    advance: Callable[[Ledger], None]  # add exactly one block on top of existing entries
    count: Callable[[Ledger, str], int]  # entries stored under a key, read from the backend
    unreachable: Callable[[], Ledger] | None = None  # same backend, node that is not there
    reopen: Callable[[Ledger], Ledger] | None = None  # a fresh client on the same ledger
    # stop the node by PID, run the callback while it is down, start it on the same data
    restart: Callable[[Callable[[], None] | None], None] | None = None

    def fresh(self, ledger: Ledger) -> Ledger:
        """A new ledger object on the same backing store (what a restarted process opens)."""
        return self.reopen(ledger) if self.reopen else self.make(ledger.required_confirmations)


def batch_entry(size: int = 2, topic: str = "dwd.conformance") -> AnchorEntry:
    root = secrets.token_hex(32)
    body = {"kind": "batch", "topic": topic, "root": root, "size": size}
    return AnchorEntry(batch_entry_key(topic, root), "batch", body)


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = tmp_path / "ledger.sqlite3"

    def count(_: Ledger, key: str) -> int:
        db = sqlite3.connect(path)
        try:
            row = db.execute("SELECT COUNT(*) FROM entries WHERE key = ?", (key,)).fetchone()
            return int(row[0])
        finally:
            db.close()

    return Backend(
        "local",
        make=lambda rc: LocalLedger(path, rc),
        advance=lambda ledger: ledger.anchor(batch_entry()) and None,
        count=count,
    )


def _multichain(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factory = request.getfixturevalue("multichain_ledger_factory")
    node = request.getfixturevalue("multichain_paused")  # blocks only when advanced

    def count(ledger: Ledger, key: str) -> int:
        assert isinstance(ledger, MultiChainLedger)
        return len(list(ledger.key_items(key)))

    def restart(while_down: Callable[[], None] | None = None) -> None:
        node.stop()
        if while_down is not None:
            while_down()
        node.start()
        node.pause_mining()

    return Backend(
        "multichain",
        make=factory,
        advance=lambda _: node.mine(1) and None,
        count=count,
        reopen=lambda ledger: factory(
            ledger.required_confirmations,
            stream=ledger.stream,  # type: ignore[attr-defined]
        ),
        unreachable=lambda: factory(1, url=_dead_url(), retries=2, backoff=0.05, timeout=2.0),
        restart=restart if getattr(node, "restartable", False) else None,
    )


def _evm(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    node = request.getfixturevalue("anvil_node")
    record = tmp_path / "evm_contract.json"

    def count(ledger: Ledger, key: str) -> int:
        assert isinstance(ledger, EvmLedger)
        return ledger.anchored_count(key)

    return Backend(
        "evm",
        make=lambda rc: EvmLedger(node.url, deployments_file=record, required_confirmations=rc),
        advance=lambda _: node.mine(1),
        count=count,
        unreachable=lambda: EvmLedger(_dead_url(), deployments_file=record, retries=2, timeout=2.0),
    )


def _bitcoin(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    node = request.getfixturevalue("litecoind_node")

    def count(ledger: Ledger, key: str) -> int:
        assert isinstance(ledger, BitcoinLedger)
        return ledger.anchored_count(key)

    return Backend(
        "bitcoin",
        make=lambda rc: BitcoinLedger(
            node.url,
            user=node.user,
            password=node.password,
            wallet=node.wallet,
            required_confirmations=rc,
        ),
        advance=lambda _: node.mine(1) and None,
        count=count,
        unreachable=lambda: BitcoinLedger(
            _dead_url(), user="u", password="p", retries=2, timeout=2.0
        ),
    )


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "local": _local,
    "multichain": _multichain,
    "evm": _evm,
    "bitcoin": _bitcoin,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture(params=list(NETWORKED))
def networked(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


def test_anchor_then_lookup_and_read(backend: Backend) -> None:
    ledger = backend.make(1)
    entry = batch_entry()
    ref = ledger.anchor(entry)
    assert (ref.backend, ref.key, ref.digest) == (backend.name, entry.key, entry.digest)
    found = ledger.lookup(entry.key)
    assert found is not None
    assert (found.digest, found.locator) == (ref.digest, ref.locator)
    body = ledger.read(found)
    assert body == entry.body and canonical_digest(body) == ref.digest
    assert ledger.lookup(batch_entry().key) is None


def test_anchoring_twice_leaves_one_entry(backend: Backend) -> None:
    ledger = backend.make(1)
    entry = batch_entry()
    first = ledger.anchor(entry)
    second = ledger.anchor(entry)
    again = backend.fresh(ledger).anchor(entry)  # a new process after a crash: no in-memory state
    assert first.locator == second.locator == again.locator
    assert backend.count(ledger, entry.key) == 1


def test_same_key_different_body_conflicts(backend: Backend) -> None:
    ledger = backend.make(1)
    entry = batch_entry(size=2)
    ledger.anchor(entry)
    with pytest.raises(AnchorConflict):
        ledger.anchor(AnchorEntry(entry.key, "batch", {**entry.body, "size": 3}))
    assert backend.count(ledger, entry.key) == 1
    found = ledger.lookup(entry.key)
    assert found is not None and found.digest == entry.digest


def test_unreachable_node_retries_then_clear_error(networked: Backend) -> None:
    assert networked.unreachable is not None
    dead = networked.unreachable()
    entry = batch_entry()
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match=r"127\.0\.0\.1"):
        dead.anchor(entry)
    elapsed = time.monotonic() - started
    assert elapsed < UNREACHABLE_BOUND_S
    assert elapsed >= 0.1, "gave up without a single back-off: no retries happened"
    # Nothing was written anywhere: the real node has no trace of the entry.
    assert networked.make(1).lookup(entry.key) is None


def test_not_final_until_required_confirmations(backend: Backend) -> None:
    required = 2
    ledger = backend.make(required)
    entry = batch_entry()
    ref = ledger.anchor(entry)
    assert ref.required_confirmations == required
    assert ref.confirmations < required and not ref.final
    confirmations = ref.confirmations
    while confirmations < required:
        current = ledger.lookup(entry.key)
        assert current is not None and not current.final
        backend.advance(ledger)
        after = ledger.lookup(entry.key)
        assert after is not None and after.confirmations == confirmations + 1
        confirmations = after.confirmations
    final = ledger.lookup(entry.key)
    assert final is not None and final.final and final.confirmations == required


RESTARTABLE = ("multichain",)


@pytest.fixture(params=list(RESTARTABLE))
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


def test_node_restart_in_the_middle_of_a_run(restartable: Backend) -> None:
    """A run anchors half its entries, the node goes down, the rest fails cleanly; after the
    node is back (same data directory) the re-run anchors the rest and duplicates nothing.
    The first half was still unconfirmed when the node stopped: the node keeps it."""
    if restartable.restart is None:
        pytest.skip("external node (MULTICHAIN_RPC_URL): the suite cannot restart it")
    ledger = restartable.make(1)
    entries = [batch_entry() for _ in range(6)]
    first = ledger.anchor_many(entries[:3])
    assert all(not ref.final for ref in first)
    restartable.restart(None)
    rerun = restartable.fresh(ledger).anchor_many(entries)
    assert [r.locator["txid"] for r in rerun[:3]] == [r.locator["txid"] for r in first]
    assert [restartable.count(ledger, e.key) for e in entries] == [1] * 6
    restartable.advance(ledger)
    assert all(ledger.lookup(e.key).final for e in entries)  # type: ignore[union-attr]


def test_node_down_mid_run_is_unavailable_then_the_rerun_completes(
    restartable: Backend,
) -> None:
    if restartable.restart is None:
        pytest.skip("external node (MULTICHAIN_RPC_URL): the suite cannot restart it")
    node = restartable
    ledger = node.make(1)
    entries = [batch_entry() for _ in range(4)]
    ledger.anchor_many(entries[:2])

    # Down for longer than the client's retries: the step fails with LedgerUnavailable
    # (the flow's task retries / the next run take over), and nothing half-written stays.
    def while_down() -> None:
        with pytest.raises(LedgerUnavailable):
            ledger.anchor_many(entries)

    assert node.restart is not None
    node.restart(while_down)
    refs = node.fresh(ledger).anchor_many(entries)
    assert len({(r.locator["txid"], r.locator.get("vout")) for r in refs}) == 4
    assert [node.count(ledger, e.key) for e in entries] == [1] * 4
