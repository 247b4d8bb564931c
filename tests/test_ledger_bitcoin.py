"""BitcoinLedger against a real `litecoind -regtest` (see tests/fixtures/chains.py)."""

from __future__ import annotations

import secrets
import time

import pytest

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorConflict, AnchorEntry, LedgerUnavailable
from storage.ledger.bitcoin import (
    PAYLOAD_SIZE,
    PREFIX,
    BitcoinLedger,
    EntryNotRecoverable,
    InsufficientFunds,
    RpcAuthFailed,
    WalletNotFound,
    batch_body,
    decode_payload_script,
    encode_payload,
)
from streamnotary.chain_nodes import LitecoindNode, free_port
from tasks.canonical import canonical_digest


def batch_entry(size: int = 3, topic: str = "dwd.test") -> AnchorEntry:
    root = secrets.token_hex(32)
    return AnchorEntry(batch_entry_key(topic, root), "batch", batch_body(topic, root, size))


def ledger_for(node: LitecoindNode, **kw: object) -> BitcoinLedger:
    return BitcoinLedger(node.url, user=node.user, password=node.password, wallet=node.wallet, **kw)  # type: ignore[arg-type]


def test_payload_fits_op_return_and_round_trips() -> None:
    entry = batch_entry(size=70_000)
    payload = encode_payload(entry)
    assert len(payload) == PAYLOAD_SIZE <= 80 and payload.startswith(PREFIX)
    script = bytes([0x6A, len(payload)]) + payload
    root, _kh, size, kind, _prev = decode_payload_script(script.hex())  # type: ignore[misc]
    assert kind == "batch"
    assert (root.hex(), size) == (entry.body["root"], 70_000)
    assert decode_payload_script("6a04deadbeef") is None


@pytest.mark.parametrize(
    "entry",
    [
        AnchorEntry("window/t/w/r0", "window", {"kind": "window"}),
        AnchorEntry(
            batch_entry_key("t", "ab" * 32), "batch", {**batch_body("t", "ab" * 32, 1), "run": "x"}
        ),
        AnchorEntry(batch_entry_key("u", "ab" * 32), "batch", batch_body("t", "ab" * 32, 1)),
        AnchorEntry(batch_entry_key("t", "AB" * 32), "batch", batch_body("t", "AB" * 32, 1)),
    ],
)
def test_unrecoverable_entries_are_refused(entry: AnchorEntry) -> None:
    with pytest.raises(EntryNotRecoverable):
        encode_payload(entry)


def test_log_head_entries_fit_op_return_and_are_read_back(litecoind_node: LitecoindNode) -> None:
    """The run's log head entry (tasks.run_log.head_entry) anchors on a Bitcoin-family chain:
    78 bytes, and `read` rebuilds the exact body from the transaction and the key."""
    from tasks.run_log import head_entry

    topic = f"dwd.{secrets.token_hex(4)}"
    entry = head_entry(topic, 70_000, secrets.token_hex(32), 69_000)
    payload = encode_payload(entry)
    assert len(payload) <= 80
    root, _kh, size, kind, prev = decode_payload_script(  # type: ignore[misc]
        (bytes([0x6A, 0x4C, len(payload)]) + payload).hex()  # OP_PUSHDATA1: 78 > 75
    )
    assert (root.hex(), size, kind, prev) == (entry.body["root"], 70_000, "head", 69_000)
    with pytest.raises(EntryNotRecoverable):
        encode_payload(AnchorEntry(f"head/{topic}/1", "head", {**entry.body, "origin": "x"}))
    ledger = ledger_for(litecoind_node)
    ref = ledger.anchor(entry)
    assert ledger.lookup(entry.key) == ref
    assert ledger.read(ref) == entry.body and ref.digest == entry.digest


def test_anchor_lookup_read_confirm(litecoind_node: LitecoindNode) -> None:
    ledger = ledger_for(litecoind_node, required_confirmations=2)
    entry = batch_entry()
    ref = ledger.anchor(entry)
    assert ref.digest == entry.digest and ref.confirmations == 0 and not ref.final
    assert set(ref.locator) == {"txid", "vout", "address"}
    assert ledger.lookup(entry.key) == ref
    assert ledger.read(ref) == entry.body
    assert canonical_digest(ledger.read(ref)) == ref.digest
    [onchain] = ledger.lookup_root(entry.body["root"])
    assert (onchain.txid, onchain.vout) == (ref.locator["txid"], ref.locator["vout"])
    assert onchain.size == 3
    litecoind_node.mine(1)
    assert ledger.lookup_txid(ref.locator["txid"])[0].confirmations == 1
    litecoind_node.mine(1)
    final = ledger.lookup(entry.key)
    assert final is not None and final.confirmations == 2 and final.final
    raw = litecoind_node.rpc("getrawtransaction", ref.locator["txid"], True)
    spk = raw["vout"][ref.locator["vout"]]["scriptPubKey"]
    assert spk["type"] == "nulldata" and PREFIX.hex() in spk["hex"]


def test_idempotency_is_recovered_from_the_chain(litecoind_node: LitecoindNode) -> None:
    """A fresh ledger object (no cache, no local state) finds the earlier anchor by key."""
    entry = batch_entry()
    ref = ledger_for(litecoind_node).anchor(entry)
    mempool = set(litecoind_node.rpc("getrawmempool"))
    other = ledger_for(litecoind_node)
    assert other.anchor(entry).locator == ref.locator
    assert set(litecoind_node.rpc("getrawmempool")) == mempool  # nothing new was sent
    assert other.anchored_count(entry.key) == 1
    with pytest.raises(AnchorConflict):
        other.anchor(AnchorEntry(entry.key, "batch", {**entry.body, "size": 4}))
    assert other.anchored_count(entry.key) == 1


def test_rpc_errors_are_named(litecoind_node: LitecoindNode) -> None:
    wrong = BitcoinLedger(
        litecoind_node.url, user=litecoind_node.user, password="wrong", wallet=litecoind_node.wallet
    )
    with pytest.raises(RpcAuthFailed):
        wrong.lookup("batch/t/" + "00" * 32)
    missing = ledger_for(litecoind_node)
    missing.rpc.url = f"{litecoind_node.url}/wallet/no-such-wallet"
    with pytest.raises(WalletNotFound):
        missing.lookup("batch/t/" + "00" * 32)
    empty = f"empty-{secrets.token_hex(4)}"
    litecoind_node.rpc("createwallet", empty)
    poor = BitcoinLedger(
        litecoind_node.url, user=litecoind_node.user, password=litecoind_node.password, wallet=empty
    )
    with pytest.raises(InsufficientFunds):
        poor.anchor(batch_entry())


def test_unreachable_node_retries_then_unavailable() -> None:
    ledger = BitcoinLedger(f"http://127.0.0.1:{free_port()}", user="u", password="p", retries=2)
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="after 3 attempts"):
        ledger.anchor(batch_entry())
    assert time.monotonic() - started < 5
