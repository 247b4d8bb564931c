"""EVM ledger defences on a real anvil (issue 9 item 10, issue 8 item 4): each test fails
when its defence is removed.

* no silent redeploy: a recorded address without code stops anchoring (`ContractMissing`);
* nonce-stable retries: a transaction that is not mined in time is re-sent, never doubled;
* eth_getLogs in block-range chunks, under a provider's range limit;
* ledger identity: entries are keyed by (msg.sender, key), so a second account can neither
  squat nor forge the operator's keys; lookups and reads accept only the pinned operator;
* the node URL (which may carry an API key) never reaches a message or a file.
"""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import pytest

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorEntry, AnchorRef, LedgerUnavailable
from storage.ledger.evm import (
    ContractMissing,
    EvmLedger,
    ForeignAnchor,
    IdentityMismatch,
    TransactionFailed,
)
from storage.ledger.factory import open_ledger
from streamnotary.chain_nodes import AnvilNode, free_port, start_anvil
from streamnotary.config import Settings
from tests.rpc_proxy import range_limited_relay

# anvil's well-known dev accounts #1 and #2 (public test keys of every anvil/hardhat node).
THIRD_PARTY_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
THIRD_PARTY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OPERATOR_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
OPERATOR = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def batch_entry(size: int = 3, topic: str = "dwd.defence") -> AnchorEntry:
    root = secrets.token_hex(32)
    body = {"kind": "batch", "topic": topic, "root": root, "size": size}
    return AnchorEntry(batch_entry_key(topic, root), "batch", body)


def nonce(node: AnvilNode, address: str, tag: str = "latest") -> int:
    return int(node.rpc("eth_getTransactionCount", address, tag), 16)


# -- no silent redeploy ----------------------------------------------------------------------


def test_recorded_address_without_code_is_an_error_not_a_redeploy(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    """A lagging or reset node shows no code at the recorded address: anchoring stops with
    a clear error instead of deploying a new contract (which would forget every key)."""
    record = tmp_path / "evm_contract.json"
    chain = str(int(anvil_node.rpc("eth_chainId"), 16))
    record.write_text(json.dumps({"deployments": {chain: {"address": THIRD_PARTY, "block": 0}}}))
    before = record.read_text()
    sender_nonce = nonce(anvil_node, OPERATOR)
    ledger = EvmLedger(anvil_node.url, private_key=OPERATOR_KEY, deployments_file=record)
    with pytest.raises(ContractMissing, match="--deploy"):
        ledger.anchor(batch_entry())
    with pytest.raises(ContractMissing):  # the audit reports it too, instead of "nothing here"
        ledger.lookup(batch_entry().key)
    assert record.read_text() == before
    assert nonce(anvil_node, OPERATOR) == sender_nonce  # no deployment was sent

    explicit = EvmLedger(
        anvil_node.url, private_key=OPERATOR_KEY, deployments_file=record, deploy="replace"
    )
    explicit.anchor(batch_entry())
    assert json.loads(record.read_text())["deployments"][chain]["address"] != THIRD_PARTY


def test_deploy_never_requires_a_configured_contract(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json", deploy="never")
    with pytest.raises(ContractMissing, match="never"):
        ledger.anchor(batch_entry())
    assert not (tmp_path / "evm.json").exists()


# -- nonce-stable retries --------------------------------------------------------------------


@pytest.fixture
def manual_anvil(tmp_path: Path) -> AnvilNode:
    node = start_anvil(workdir=tmp_path / "anvil", persist_state=False)
    yield node  # type: ignore[misc]
    node.stop()


@pytest.mark.parametrize("signer", ["private key", "node account"])
def test_retry_after_timeout_resends_the_same_transaction(
    manual_anvil: AnvilNode, tmp_path: Path, signer: str
) -> None:
    """Blocks stop coming (automine off): every retry — the same object, or a new process
    with the same pending directory — re-sends the one transaction; after a block, exactly
    one anchor exists and the account's nonce moved by exactly one."""
    key = OPERATOR_KEY if signer == "private key" else None
    account = OPERATOR if key else manual_anvil.rpc("eth_accounts")[0]

    def ledger() -> EvmLedger:
        return EvmLedger(
            manual_anvil.url, private_key=key, deployments_file=tmp_path / "evm.json",
            pending_dir=tmp_path / "pending", tx_timeout=0.5,
        )  # fmt: skip

    first = ledger()
    first.deployment  # noqa: B018 - deploy while blocks are still mined
    manual_anvil.rpc("evm_setAutomine", False)
    start = nonce(manual_anvil, account)
    entry = batch_entry()
    for attempt in (first, first, ledger()):
        with pytest.raises(TransactionFailed, match="re-sends the same transaction"):
            attempt.anchor(entry)
        assert nonce(manual_anvil, account, "pending") == start + 1  # one transaction in flight
    manual_anvil.mine(1)
    ref = ledger().anchor(entry)
    assert ref.digest == entry.digest
    assert nonce(manual_anvil, account) == start + 1
    assert first.anchored_count(entry.key) == 1
    assert list((tmp_path / "pending").iterdir()) == []  # slot released once mined


# -- eth_getLogs in chunks -------------------------------------------------------------------


def test_logs_are_read_in_chunks_under_a_provider_range_limit(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    record = tmp_path / "evm.json"
    writer = EvmLedger(anvil_node.url, deployments_file=record)
    entry = batch_entry()
    ref = writer.anchor(entry)
    anvil_node.mine(40)
    with range_limited_relay(anvil_node.url, max_blocks=8) as relay:
        for chunk in (8, 1_000_000):  # configured below the limit, or far above it
            reader = EvmLedger(relay.url(), deployments_file=record, log_chunk_blocks=chunk)
            found = reader.lookup(entry.key)
            assert found is not None and found.locator == ref.locator
            assert reader.read(found) == entry.body
        assert relay.log_ranges and all(hi - lo + 1 <= 8 for lo, hi in relay.log_ranges[-5:])
        assert max(hi for _, hi in relay.log_ranges) >= ref.locator["block"] + 40


# -- ledger identity: msg.sender -------------------------------------------------------------


def test_third_party_can_neither_squat_nor_forge_the_operators_keys(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    """Drill (issue 8): a second account pre-publishes the operator's next keys."""
    operator = EvmLedger(
        anvil_node.url, private_key=OPERATOR_KEY, deployments_file=tmp_path / "evm.json"
    )
    operator.anchor(batch_entry())  # deploys the contract
    identity = operator.identity()
    assert identity == {
        "backend": "evm",
        "chain_id": int(anvil_node.rpc("eth_chainId"), 16),
        "contract": operator.contract_address,
        "operator": OPERATOR,
    }
    third = EvmLedger(
        anvil_node.url, private_key=THIRD_PARTY_KEY, contract_address=operator.contract_address
    )
    next_entry = batch_entry()
    forged = AnchorEntry(next_entry.key, "batch", {**next_entry.body, "size": 999})
    squatted = third.anchor(forged)
    assert squatted.locator["sender"] == THIRD_PARTY

    auditor = EvmLedger(anvil_node.url, trusted_identity=identity)  # no key, no wallet
    assert auditor.lookup(next_entry.key) is None  # the forgery does not count
    with pytest.raises(ForeignAnchor, match="not by the operator"):
        auditor.read(squatted)  # a bundle built on it is rejected

    ref = operator.anchor(next_entry)  # the squat does not block the operator
    assert (ref.digest, ref.locator["sender"]) == (next_entry.digest, OPERATOR)
    found = auditor.lookup(next_entry.key)
    assert found is not None and found.locator == ref.locator
    assert auditor.read(found) == next_entry.body
    assert auditor.foreign_entries(next_entry.key) == [
        {"tx": squatted.locator["tx"], "block": squatted.locator["block"], "sender": THIRD_PARTY}
    ]


def test_pinned_identity_must_match_the_node(anvil_node: AnvilNode, tmp_path: Path) -> None:
    operator = EvmLedger(anvil_node.url, private_key=OPERATOR_KEY,
                         deployments_file=tmp_path / "evm.json")  # fmt: skip
    operator.anchor(batch_entry())
    identity = operator.identity()
    with pytest.raises(IdentityMismatch):
        EvmLedger(anvil_node.url, trusted_identity={**identity, "chain_id": 1}).lookup("k")
    with pytest.raises(ContractMissing):
        EvmLedger(anvil_node.url, trusted_identity={**identity, "contract": THIRD_PARTY}).lookup(
            "k"
        )
    settings = Settings(home=str(tmp_path), ledger="evm", ledger_url=anvil_node.url)
    pinned = open_ledger(settings, trusted_identity=identity)
    assert isinstance(pinned, EvmLedger) and pinned.operator == OPERATOR
    with pytest.raises(ForeignAnchor):  # we sign as anvil's account 0, not the operator
        pinned.anchor(batch_entry())


# -- secrets ---------------------------------------------------------------------------------


def test_node_url_with_credentials_reaches_no_message_and_no_file(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    token = secrets.token_hex(12)
    dead = f"http://user:pw{token}@127.0.0.1:{free_port()}/v3/{token}?apikey={token}"
    with pytest.raises(LedgerUnavailable) as caught:
        EvmLedger(dead, retries=0, timeout=1, deployments_file=tmp_path / "x.json").lookup("k")
    assert token not in str(caught.value) and "127.0.0.1" in str(caught.value)

    with range_limited_relay(anvil_node.url, max_blocks=10_000) as relay:
        settings = Settings(home=str(tmp_path), ledger="evm",
                            ledger_url=relay.url(f"/v3/{token}?apikey={token}"))  # fmt: skip
        ref = open_ledger(settings).anchor(batch_entry())
    assert ref.final
    record = tmp_path / "evm_contract.json"
    assert token not in record.read_text()
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


def test_references_of_another_chain_are_refused(anvil_node: AnvilNode, tmp_path: Path) -> None:
    ledger = EvmLedger(anvil_node.url, deployments_file=tmp_path / "evm.json")
    ref = ledger.anchor(batch_entry())
    moved = AnchorRef.from_json({**ref.to_json(), "locator": {**ref.locator, "chain_id": 1}})
    with pytest.raises(ForeignAnchor):
        ledger.read(moved)
