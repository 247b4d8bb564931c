"""Bitcoin-family ledger identity on a real `litecoind -regtest` (issue 8 item 4, issue 9
item 7): each test fails when its defence is removed.

* an auditor finds anchors by the receipt's txid with `getrawtransaction` (``-txindex``),
  without any wallet;
* only transactions paid entirely from the operator's address count: a third party's
  OP_RETURN in our format under the operator's next key neither blocks the operator nor
  passes as the operator's anchor (a bundle built on it is rejected);
* the node's RPC password is on no command line and in no file.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorEntry, AnchorRef, LedgerIdentityMismatch
from storage.ledger.bitcoin import (
    BitcoinLedger,
    ForeignAnchor,
    WalletNotFound,
    batch_body,
    encode_payload,
)
from streamnotary.chain_nodes import LitecoindNode


def batch_entry(size: int = 3, topic: str = "dwd.btc-defence") -> AnchorEntry:
    root = secrets.token_hex(32)
    return AnchorEntry(batch_entry_key(topic, root), "batch", batch_body(topic, root, size))


def operator_ledger(node: LitecoindNode) -> BitcoinLedger:
    return BitcoinLedger(node.url, user=node.user, password=node.password, wallet=node.wallet)


def auditor_ledger(node: LitecoindNode, identity: dict[str, Any]) -> BitcoinLedger:
    """No wallet at all: the node endpoint, pinned to the operator's identity."""
    return BitcoinLedger(
        node.url, user=node.user, password=node.password, trusted_identity=identity
    )


def funded_wallet(node: LitecoindNode, name: str) -> str:
    """A second wallet on the node with one confirmed coin at a fresh address."""
    node.rpc("createwallet", name)
    address = _wallet_rpc(node, name, "getnewaddress", "", "bech32")
    node.rpc("sendtoaddress", address, 1.0, wallet=True)
    node.mine(1)
    return str(address)


def _wallet_rpc(node: LitecoindNode, wallet: str, method: str, *params: Any) -> Any:
    from streamnotary.chain_nodes import _jsonrpc

    return _jsonrpc(f"{node.url}/wallet/{wallet}", method, list(params),
                    auth=(node.user, node.password), timeout=30.0, version="1.0")  # fmt: skip


def send_op_return(node: LitecoindNode, wallet: str, entry: AnchorEntry, address: str) -> str:
    """An anchor transaction in our exact format, paid by `wallet` from `address` only."""
    coin = max(_wallet_rpc(node, wallet, "listunspent", 0, 9_999_999, [address]),
               key=lambda c: c["amount"])  # fmt: skip
    raw = _wallet_rpc(node, wallet, "createrawtransaction",
                      [{"txid": coin["txid"], "vout": coin["vout"]}],
                      [{"data": encode_payload(entry).hex()}])  # fmt: skip
    funded = _wallet_rpc(node, wallet, "fundrawtransaction", raw,
                         {"add_inputs": False, "changeAddress": address})["hex"]  # fmt: skip
    signed = _wallet_rpc(node, wallet, "signrawtransactionwithwallet", funded)["hex"]
    return str(node.rpc("sendrawtransaction", signed))


def test_auditor_locates_anchors_by_txid_without_a_wallet(litecoind_node: LitecoindNode) -> None:
    node = litecoind_node
    funded_wallet(node, f"other-{secrets.token_hex(4)}")  # two wallets: none is implicit
    operator = operator_ledger(node)
    entry = batch_entry()
    ref = operator.anchor(entry)
    node.mine(1)
    auditor = auditor_ledger(node, operator.identity())
    with pytest.raises(WalletNotFound):  # the auditor has no wallet to search...
        auditor.lookup(entry.key)
    found = auditor.locate(entry.key, ref.locator)  # ...and needs none
    assert found is not None and (found.digest, found.confirmations) == (entry.digest, 1)
    assert found.locator["address"] == operator.operator_address
    assert auditor.read(found) == entry.body


def test_third_party_op_return_neither_blocks_nor_passes(litecoind_node: LitecoindNode) -> None:
    """Drill (issue 8): another wallet pre-publishes the operator's next key."""
    node = litecoind_node
    third = f"third-{secrets.token_hex(4)}"
    third_address = funded_wallet(node, third)
    operator = operator_ledger(node)
    identity = operator.identity()
    assert identity == {
        "backend": "bitcoin",
        "network": "regtest",
        "operator_address": node.mining_address,
    }
    entry = batch_entry()
    forged = AnchorEntry(entry.key, "batch", {**entry.body, "size": 999})
    squat_txid = send_op_return(node, third, forged, third_address)
    node.mine(1)

    auditor = auditor_ledger(node, identity)
    with pytest.raises(ForeignAnchor, match="not only by the operator"):
        auditor.locate(entry.key, {"txid": squat_txid, "vout": 0})
    bundle_ref = AnchorRef("bitcoin", entry.key, forged.digest, {"txid": squat_txid, "vout": 0})
    with pytest.raises(ForeignAnchor):
        auditor.read(bundle_ref)  # a proof bundle built on the squat is rejected

    ref = operator.anchor(entry)  # not blocked
    assert ref.locator["txid"] != squat_txid and ref.digest == entry.digest
    node.mine(1)
    found = auditor.locate(entry.key, ref.locator)
    assert found is not None and auditor.read(found) == entry.body


def test_wallet_anchor_paid_from_another_address_does_not_count(
    litecoind_node: LitecoindNode,
) -> None:
    """Even in the operator's own wallet, an anchor paid from a non-operator address is
    not the operator's (the address, not the wallet, is what the auditor pins)."""
    node = litecoind_node
    operator = operator_ledger(node)
    side = str(node.rpc("getnewaddress", "", "bech32", wallet=True))
    node.rpc("sendtoaddress", side, 1.0, wallet=True)
    node.mine(1)
    entry = batch_entry()
    stray = AnchorEntry(entry.key, "batch", {**entry.body, "size": 7})
    stray_txid = send_op_return(node, node.wallet, stray, side)
    node.mine(1)
    assert operator.lookup(entry.key) is None
    ref = operator.anchor(entry)  # a different body would be a conflict if the stray counted
    assert ref.locator["txid"] != stray_txid and operator.anchored_count(entry.key) == 1


def test_pinned_network_must_match(litecoind_node: LitecoindNode) -> None:
    identity = operator_ledger(litecoind_node).identity()
    wrong = auditor_ledger(litecoind_node, {**identity, "network": "main"})
    with pytest.raises(LedgerIdentityMismatch):
        wrong.locate("k", {"txid": "00" * 32})


def test_rpc_password_is_in_no_command_line_and_no_file(litecoind_node: LitecoindNode) -> None:
    node = litecoind_node
    cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().decode()
    assert node.password not in cmdline and "rpcpassword" not in cmdline
    conf = node.datadir / "litecoin.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(node.datadir.stat().st_mode) == 0o700
    text = conf.read_text()
    assert node.password not in text and f"rpcauth={node.user}:" in text
    for path in node.datadir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert node.password.encode() not in path.read_bytes(), path
