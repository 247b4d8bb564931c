"""EvmLedger against a real anvil node (see tests/fixtures/chains.py)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest
from web3.exceptions import ContractCustomError

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorConflict, AnchorEntry, LedgerUnavailable
from storage.ledger.evm import ContractMissing, EvmLedger, contract_artifact
from streamnotary.chain_nodes import REPO_ROOT, AnvilNode, free_port
from streamnotary.config import Settings
from tasks.canonical import canonical_digest

# anvil's well-known second dev account (public test key of every anvil/hardhat node).
ANVIL_KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ANVIL_ADDR_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def batch_entry(size: int = 3, topic: str = "dwd.test") -> AnchorEntry:
    root = secrets.token_hex(32)
    body = {"kind": "batch", "topic": topic, "root": root, "size": size}
    return AnchorEntry(batch_entry_key(topic, root), "batch", body)


def test_committed_artifact_is_the_pinned_compiler_output() -> None:
    """The ABI/bytecode the ledger deploys is exactly what the committed script produces."""
    if not (REPO_ROOT / "node_modules" / "solc").is_dir():
        pytest.fail("node_modules/solc missing: run `npm ci` at the repository root")
    out = subprocess.run(
        ["node", str(REPO_ROOT / "scripts" / "compile_contract.mjs"), "--stdout"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    committed = REPO_ROOT / "storage" / "ledger" / "contracts" / "StreamNotaryAnchor.json"
    assert out == committed.read_text()
    assert json.loads(out)["compiler"]["version"].startswith("0.8.37+")


def test_anchor_lookup_read_and_lookup_by_root(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    entry = batch_entry()
    ref = ledger.anchor(entry)
    assert ref.backend == "evm" and ref.digest == entry.digest
    assert set(ref.locator) == {"tx", "block", "log_index", "contract", "chain_id", "sender"}
    assert ref.confirmations == 1 and ref.final
    assert ledger.lookup(entry.key) == ref
    assert ledger.read(ref) == entry.body
    assert canonical_digest(ledger.read(ref)) == ref.digest
    assert ledger.lookup_root(entry.body["root"]) == [ref]
    assert ledger.lookup_root(secrets.token_hex(32)) == []
    assert ledger.lookup("batch/dwd.test/" + "00" * 32) is None


def test_idempotent_and_conflicting_anchor(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    entry = batch_entry()
    first = ledger.anchor(entry)
    head = int(anvil_node.rpc("eth_blockNumber"), 16)
    again = ledger.anchor(entry)
    assert again.locator == first.locator
    assert int(anvil_node.rpc("eth_blockNumber"), 16) == head  # no second transaction
    assert ledger.anchored_count(entry.key) == 1
    with pytest.raises(AnchorConflict):
        ledger.anchor(AnchorEntry(entry.key, "batch", {**entry.body, "size": 99}))
    assert ledger.anchored_count(entry.key) == 1


def test_contract_enforces_one_anchor_per_key(anvil_node: AnvilNode, tmp_path: Path) -> None:
    """Even bypassing the ledger's own lookup, the contract refuses a second anchor."""
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    entry = batch_entry()
    ledger.anchor(entry)
    fn = ledger._contract().functions.anchor(
        bytes.fromhex(entry.body["root"]), entry.key, bytes.fromhex("11" * 32), "{}"
    )
    with pytest.raises(ContractCustomError):  # AlreadyAnchored(keyHash, digest)
        fn.transact({"from": ledger.sender})
    assert ledger.anchored_count(entry.key) == 1


def test_deployment_is_recorded_and_reused(anvil_node: AnvilNode, tmp_path: Path) -> None:
    record = tmp_path / "evm.json"
    first = EvmLedger(anvil_node.url, deployments_file=record)
    assert first.lookup("batch/x/" + "00" * 32) is None
    assert not record.exists()  # reads never deploy
    first.anchor(batch_entry())
    doc = json.loads(record.read_text())
    chain = str(anvil_node.rpc("eth_chainId") and int(anvil_node.rpc("eth_chainId"), 16))
    assert doc["deployments"][chain]["address"] == first.contract_address
    second = EvmLedger(anvil_node.url, deployments_file=record)
    assert second.contract_address == first.contract_address
    code = anvil_node.rpc("eth_getCode", first.contract_address, "latest")
    assert code == contract_artifact()["deployedBytecode"]


def test_configured_address_without_contract_is_refused(anvil_node: AnvilNode) -> None:
    ledger = EvmLedger(anvil_node.url, contract_address=ANVIL_ADDR_1)
    with pytest.raises(ContractMissing):
        ledger.anchor(batch_entry())


def test_private_key_signs_locally(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(
        anvil_node.url, private_key=ANVIL_KEY_1, deployments_file=tmp_path / "evm.json"
    )
    ref = ledger.anchor(batch_entry())
    tx = anvil_node.rpc("eth_getTransactionByHash", ref.locator["tx"])
    assert tx["from"].lower() == ANVIL_ADDR_1.lower()


def test_confirmations_grow_with_blocks(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(
        anvil_node.url, deployments_file=tmp_path / "evm.json", required_confirmations=3
    )
    ref = ledger.anchor(batch_entry())
    assert (ref.confirmations, ref.final) == (1, False)
    anvil_node.mine(2)
    later = ledger.lookup(ref.key)
    assert later is not None and (later.confirmations, later.final) == (3, True)


def test_unreachable_node_retries_then_unavailable(tmp_path: Path) -> None:
    ledger = EvmLedger(
        f"http://127.0.0.1:{free_port()}",
        retries=2,
        timeout=1,
        deployments_file=tmp_path / "evm.json",
    )
    with pytest.raises(LedgerUnavailable, match="after 3 attempts"):
        ledger.anchor(batch_entry())
    assert not (tmp_path / "evm.json").exists()


def test_from_settings(anvil_node: AnvilNode, tmp_path: Path) -> None:
    settings = Settings(
        home=str(tmp_path), ledger="evm", ledger_url=anvil_node.url, ledger_confirmations=2
    )
    ledger = EvmLedger.from_settings(settings)
    ref = ledger.anchor(batch_entry())
    assert ref.required_confirmations == 2
    assert (tmp_path / "evm_contract.json").is_file()


def test_restart_with_state_keeps_anchors(anvil_node: AnvilNode, tmp_path: Path) -> None:
    """Stop anvil by PID, start it again on the same `--state` file: anchors survive."""
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    entry = batch_entry()
    ref = ledger.anchor(entry)
    old_pid = anvil_node.pid
    anvil_node.restart()
    assert anvil_node.pid != old_pid
    reopened = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    found = reopened.lookup(entry.key)
    assert found is not None and found.locator == ref.locator
    assert reopened.read(found) == entry.body
    assert reopened.anchor(entry).locator == ref.locator
    assert reopened.anchored_count(entry.key) == 1
