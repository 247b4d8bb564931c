"""EVM ledger: anchor entries as `Anchored` events of the `StreamNotaryAnchor` contract.

What is on chain, per entry (one `anchor(root, key, digest, body)` call):

* ``root`` (indexed topic): the batch Merkle root for a batch entry (``body["root"]``);
  for any other entry, its body digest. Auditors find a batch by root with `lookup_root`.
* ``keyHash`` (indexed topic) = keccak256(key): the idempotency key, found with `lookup`.
* ``key``, ``digest`` (SHA-256 of the canonical body) and ``body`` (the RFC 8785 JSON itself),
  so `read` rebuilds the body from the chain alone and re-checks its digest.
* the contract's ``digestOf[keyHash]`` binds a key to one digest forever: a second anchor
  of the same key reverts, so even two racing writers leave exactly one event.

Only batch entries go on chain (`supports_window_items` is False): a window is proven by
its receipt's inclusion proof in the batch root.

The compiled contract (ABI + bytecode) is ``contracts/StreamNotaryAnchor.json``, produced by
``node scripts/compile_contract.mjs`` with the pinned npm ``solc``. Without a configured
`contract_address` the ledger deploys the contract on first use and records the address in
a small JSON file (``<home>/evm_contract.json``), keyed by chain id, so later runs reuse it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import requests
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    Ledger,
    LedgerCorrupted,
    LedgerError,
    LedgerUnavailable,
)
from tasks.canonical import canonical_digest, canonical_json

T = TypeVar("T")

ARTIFACT = "StreamNotaryAnchor.json"
DEPLOYMENTS_FILE = "evm_contract.json"
_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)


class ContractMissing(LedgerError):
    """The configured address holds no StreamNotaryAnchor code (wrong chain or address)."""


class TransactionFailed(LedgerError):
    """The anchoring transaction reverted or was not mined in time."""


@cache
def contract_artifact() -> dict[str, Any]:
    """The committed compiler output (ABI, bytecode, solc version and settings)."""
    text = resources.files("storage.ledger").joinpath("contracts", ARTIFACT).read_text()
    return dict(json.loads(text))


def entry_root(entry_body: dict[str, Any], digest_hex: str) -> bytes:
    """The indexed `root` of an entry: the batch root if the body names one, else its digest."""
    root = entry_body.get("root")
    if isinstance(root, str) and len(root) == 64:
        try:
            return bytes.fromhex(root)
        except ValueError:
            pass
    return bytes.fromhex(digest_hex)


def key_hash(key: str) -> bytes:
    """keccak256 of the UTF-8 key, exactly as the contract computes it."""
    return bytes(keccak(key.encode()))


@dataclass(frozen=True, slots=True)
class Deployment:
    address: str
    block: int


class EvmLedger(Ledger):
    """Anchors on any EVM JSON-RPC endpoint (anvil in tests, a real chain in production)."""

    backend = "evm"
    supports_window_items = False

    def __init__(
        self,
        url: str,
        *,
        private_key: str | None = None,
        contract_address: str | None = None,
        deployment_block: int = 0,
        required_confirmations: int = 1,
        timeout: float = 10.0,
        retries: int = 3,
        deployments_file: Path | None = None,
    ) -> None:
        self.url = url
        self.required_confirmations = required_confirmations
        self.timeout = timeout
        self.retries = retries
        self.deployments_file = deployments_file
        # Retries are ours (bounded, then LedgerUnavailable), not web3's silent ones.
        self.w3 = Web3(
            Web3.HTTPProvider(
                url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
            )
        )
        self._account = Account.from_key(private_key) if private_key else None
        self._sender: str | None = self._account.address if self._account else None
        artifact = contract_artifact()
        self._abi = artifact["abi"]
        self._deployment: Deployment | None = (
            Deployment(to_checksum_address(contract_address), deployment_block)
            if contract_address
            else None
        )

    @classmethod
    def from_settings(cls, settings: Any) -> EvmLedger:
        return cls(
            settings.ledger_url,
            private_key=settings.ledger_private_key or None,
            contract_address=settings.ledger_contract or None,
            required_confirmations=max(int(settings.ledger_confirmations), 1),
            deployments_file=Path(settings.home_path) / DEPLOYMENTS_FILE,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one node interaction; connection errors are retried, then LedgerUnavailable."""
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _CONNECTION_ERRORS as exc:
                if attempt == self.retries:
                    raise LedgerUnavailable(
                        f"EVM node {self.url} unreachable ({what}) after {self.retries + 1} "
                        f"attempts: {exc}"
                    ) from exc
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @property
    def sender(self) -> str:
        if self._sender is None:
            accounts = self._call("eth_accounts", lambda: self.w3.eth.accounts)
            if not accounts:
                raise LedgerError("no private key configured and the node has no unlocked account")
            self._sender = str(accounts[0])
        return self._sender

    def _transact(self, fn: Any) -> bytes:
        """Sign (locally with the private key, else by the node) and send; return tx hash."""
        if self._account is None:
            return bytes(self._call("send", lambda: fn.transact({"from": self.sender})))
        tx = self._call(
            "build",
            lambda: fn.build_transaction(
                {
                    "from": self.sender,
                    "nonce": self.w3.eth.get_transaction_count(self.sender, "pending"),
                }
            ),
        )
        signed = self._account.sign_transaction(tx)
        # Re-sending the same signed bytes is idempotent (same hash), so retries are safe.
        raw = signed.raw_transaction
        return bytes(self._call("send", lambda: self.w3.eth.send_raw_transaction(raw)))

    def _wait(self, tx_hash: bytes) -> Any:
        try:
            receipt = self._call(
                "receipt",
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self.timeout, poll_latency=0.05
                ),
            )
        except TimeExhausted as exc:
            raise TransactionFailed(
                f"tx 0x{tx_hash.hex()} not mined within {self.timeout}s"
            ) from exc
        if receipt["status"] != 1:
            raise TransactionFailed(f"tx 0x{tx_hash.hex()} reverted")
        return receipt

    # -- contract ---------------------------------------------------------------------------

    def _chain_id(self) -> int:
        return int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))

    def _has_our_code(self, address: str) -> bool:
        code = self._call("eth_getCode", lambda: self.w3.eth.get_code(address))
        return "0x" + bytes(code).hex() == contract_artifact()["deployedBytecode"]

    def _recorded(self) -> Deployment | None:
        if self.deployments_file is None or not self.deployments_file.is_file():
            return None
        doc = json.loads(self.deployments_file.read_text())
        rec = doc.get("deployments", {}).get(str(self._chain_id()))
        return Deployment(rec["address"], int(rec["block"])) if rec else None

    def _record(self, dep: Deployment) -> None:
        if self.deployments_file is None:
            return
        doc: dict[str, Any] = {"deployments": {}}
        if self.deployments_file.is_file():
            doc = json.loads(self.deployments_file.read_text())
        doc.setdefault("deployments", {})[str(self._chain_id())] = {
            "address": dep.address,
            "block": dep.block,
            "url": self.url,
        }
        self.deployments_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.deployments_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.deployments_file)

    def deploy(self) -> Deployment:
        """Deploy a fresh StreamNotaryAnchor (and record it beside the home dir)."""
        art = contract_artifact()
        factory = self.w3.eth.contract(abi=self._abi, bytecode=art["bytecode"])
        receipt = self._wait(self._transact(factory.constructor()))
        dep = Deployment(
            to_checksum_address(receipt["contractAddress"]), int(receipt["blockNumber"])
        )
        self._record(dep)
        return dep

    def _resolve(self, *, deploy: bool) -> Deployment | None:
        """The contract in use: configured, else recorded (and still present), else (only when
        `deploy`, i.e. when anchoring) freshly deployed. Reads never write to the chain."""
        if self._deployment is None:
            rec = self._recorded()
            if rec is None or not self._has_our_code(rec.address):
                if not deploy:
                    return None
                rec = self.deploy()
            self._deployment = rec
        elif not self._has_our_code(self._deployment.address):
            raise ContractMissing(
                f"{self._deployment.address} on {self.url} holds no StreamNotaryAnchor code"
            )
        return self._deployment

    @property
    def deployment(self) -> Deployment:
        """The contract in use, deployed on first use."""
        dep = self._resolve(deploy=True)
        assert dep is not None
        return dep

    @property
    def contract_address(self) -> str:
        return self.deployment.address

    def _contract(self) -> Any:
        return self.w3.eth.contract(address=self.deployment.address, abi=self._abi)

    # -- logs -------------------------------------------------------------------------------

    def _logs(self, **filters: bytes) -> list[Any]:
        dep = self._resolve(deploy=False)
        if dep is None:
            return []  # no contract yet: nothing was ever anchored here
        contract = self.w3.eth.contract(address=dep.address, abi=self._abi)
        logs = self._call(
            "eth_getLogs",
            lambda: contract.events.Anchored.get_logs(
                from_block=dep.block, argument_filters=filters
            ),
        )
        return [log for log in logs if not log.get("removed", False)]

    def _head(self) -> int:
        return int(self._call("eth_blockNumber", lambda: self.w3.eth.block_number))

    def _ref(self, log: Any, head: int | None = None) -> AnchorRef:
        head = self._head() if head is None else head
        block = int(log["blockNumber"])
        return AnchorRef(
            backend=self.backend,
            key=log["args"]["key"],
            digest=bytes(log["args"]["digest"]).hex(),
            locator={
                "tx": "0x" + bytes(log["transactionHash"]).hex(),
                "block": block,
                "log_index": int(log["logIndex"]),
                "contract": to_checksum_address(log["address"]),
                "chain_id": self._chain_id(),
            },
            confirmations=max(head - block + 1, 0),
            required_confirmations=self.required_confirmations,
        )

    def anchored_count(self, key: str) -> int:
        """How many `Anchored` events carry `key` (the contract guarantees at most one)."""
        return len(self._logs(keyHash=key_hash(key)))

    # -- Ledger -----------------------------------------------------------------------------

    def lookup(self, key: str) -> AnchorRef | None:
        logs = self._logs(keyHash=key_hash(key))
        return self._ref(logs[0]) if logs else None

    def lookup_root(self, root_hex: str) -> list[AnchorRef]:
        """Every entry anchored under the batch root `root_hex` (normally exactly one)."""
        head = self._head()
        return [self._ref(log, head) for log in self._logs(root=bytes.fromhex(root_hex))]

    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        existing = self.lookup(entry.key)
        if existing is None:
            digest = entry.digest
            fn = self._contract().functions.anchor(
                entry_root(entry.body, digest),
                entry.key,
                bytes.fromhex(digest),
                canonical_json(entry.body).decode(),
            )
            try:
                self._wait(self._transact(fn))
            except (ContractCustomError, ContractLogicError, TransactionFailed):
                # Reverted: most likely another writer anchored this key first (AlreadyAnchored).
                if self.lookup(entry.key) is None:
                    raise
            existing = self.lookup(entry.key)
            if existing is None:
                raise TransactionFailed(f"anchor of {entry.key} mined but no Anchored event found")
        if existing.digest != entry.digest:
            raise AnchorConflict(
                f"{entry.key} is anchored on {self.url} with digest {existing.digest}, "
                f"not {entry.digest}"
            )
        return existing

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        tx = ref.locator.get("tx")
        if not tx:
            raise EntryNotFound(f"reference {ref.key} has no EVM transaction locator")
        try:
            receipt = self._call("receipt", lambda: self.w3.eth.get_transaction_receipt(tx))
        except Web3RPCError as exc:
            raise EntryNotFound(f"transaction {tx} not found on {self.url}") from exc
        except Exception as exc:  # web3 raises TransactionNotFound for an unknown hash
            if type(exc).__name__ == "TransactionNotFound":
                raise EntryNotFound(f"transaction {tx} not found on {self.url}") from exc
            raise
        events = self._contract().events.Anchored().process_receipt(receipt)
        for ev in events:
            if int(ev["logIndex"]) == int(ref.locator.get("log_index", ev["logIndex"])):
                if ev["args"]["key"] != ref.key:
                    raise LedgerCorrupted(f"{tx} anchors {ev['args']['key']!r}, not {ref.key!r}")
                body = json.loads(ev["args"]["body"])
                digest = bytes(ev["args"]["digest"]).hex()
                if canonical_digest(body) != digest:
                    raise LedgerCorrupted(f"{tx}: on-chain body does not hash to its digest")
                return dict(body)
        raise EntryNotFound(f"no Anchored event at {ref.locator} on {self.url}")
