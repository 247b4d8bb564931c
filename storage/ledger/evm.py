"""EVM ledger: anchor entries as `Anchored` events of the `StreamNotaryAnchor` contract.

What is on chain, per entry (one `anchor(root, key, digest, body)` call):

* ``root`` (indexed topic): the batch Merkle root for a batch entry (``body["root"]``);
  for any other entry, its body digest. Auditors find a batch by root with `lookup_root`.
* ``keyHash`` (indexed topic) = keccak256(key): the idempotency key, found with `lookup`.
* ``sender`` (indexed topic) = ``msg.sender``: the writer. Only the *operator*'s events
  count: the pinned identity's ``operator`` (``trusted_identity``, from the auditor's trust
  file), else our own account. Events of anyone else are ignored by `lookup`, `anchor` and
  `read` and listed by `foreign_entries` (the audit reports them as ``info``).
* ``key``, ``digest`` (SHA-256 of the canonical body) and ``body`` (the RFC 8785 JSON itself),
  so `read` rebuilds the body from the chain alone and re-checks its digest.
* the contract's ``digestOf[sender][keyHash]`` binds a (sender, key) to one digest forever: a
  second anchor of the same key by the same sender reverts, so even two racing runs of the
  operator leave exactly one event, and a third party cannot squat the operator's keys.

The compiled contract (ABI + bytecode) is ``contracts/StreamNotaryAnchor.json``, produced by
``node scripts/compile_contract.mjs`` with the pinned npm ``solc``. Which contract is used:
the pinned identity's, else ``ledger_contract``, else the one recorded for this chain id in
``<home>/evm_contract.json`` (mode 0600; never holds the node URL, which may carry an API
key). A contract is deployed only by `ledger_deploy` policy: ``first-use`` (default) when
nothing is configured or recorded, ``replace`` (``streamnotary anchor --deploy``) also when
the recorded address holds no code, ``never`` not at all. A recorded or configured address
without our code is otherwise an error (`ContractMissing`): a lagging or reset node must not
silently get a new contract, which would forget every key anchored so far.

Transactions are nonce-stable (`storage.ledger.evm_tx`): a retry re-sends the same
transaction instead of a new one. Logs are read in block ranges of ``log_chunk_blocks``
(hosted providers cap eth_getLogs ranges), halving the range when a provider still refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from eth_account import Account
from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    Ledger,
    LedgerCorrupted,
    LedgerError,
    LedgerIdentityMismatch,
    LedgerUnavailable,
)
from storage.ledger.evm_contract import (
    DEPLOYMENTS_FILE,
    ContractMissing,
    Deployment,
    DeploymentRecord,
    contract_artifact,
    entry_root,
    first_block_with_code,
    key_hash,
    scan_in_chunks,
)
from storage.ledger.evm_tx import NonceStableSender, PendingSlots, TransactionFailed
from streamnotary.masking import mask_text, safe_url, url_secrets
from tasks.canonical import canonical_digest, canonical_json, parse_document

T = TypeVar("T")

PENDING_DIR = "evm_pending"
DEPLOY_POLICIES = ("first-use", "never", "replace")
_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)

__all__ = [
    "ContractMissing",
    "EvmLedger",
    "ForeignAnchor",
    "IdentityMismatch",
    "TransactionFailed",
    "contract_artifact",
    "entry_root",
    "key_hash",
]


class ForeignAnchor(LedgerError):
    """A reference points at an event of a sender (or contract, chain) that is not pinned."""


IdentityMismatch = LedgerIdentityMismatch  # the node serves another chain than pinned


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
        tx_timeout: float = 180.0,
        retries: int = 3,
        deployments_file: Path | None = None,
        pending_dir: Path | None = None,
        deploy: str = "first-use",
        log_chunk_blocks: int = 2_000,
        trusted_identity: dict[str, Any] | None = None,
    ) -> None:
        """`timeout` bounds one RPC request, `tx_timeout` the wait for a transaction to be
        mined (then `TransactionFailed`; the next attempt re-sends the same transaction)."""
        if deploy not in DEPLOY_POLICIES:
            raise LedgerError(f"ledger_deploy must be one of {DEPLOY_POLICIES}, not {deploy!r}")
        self.url = url
        self.safe_url = safe_url(url)
        self.required_confirmations = required_confirmations
        self.timeout = timeout
        self.retries = retries
        self.deployments_file = deployments_file
        self.record = DeploymentRecord(deployments_file)
        self.deploy_policy = deploy
        self.log_chunk_blocks = max(int(log_chunk_blocks), 1)
        self._secrets = url_secrets(url)
        # Retries are ours (bounded, then LedgerUnavailable), not web3's silent ones.
        self.w3 = Web3(
            Web3.HTTPProvider(
                url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
            )
        )
        self._account = Account.from_key(private_key) if private_key else None
        self._sender: str | None = self._account.address if self._account else None
        self._abi = contract_artifact()["abi"]
        self._deployment: Deployment | None = (
            Deployment(to_checksum_address(contract_address), deployment_block)
            if contract_address
            else None
        )
        self._verified = False  # the contract's code was checked on this node
        self._chain: int | None = None
        self.pin(trusted_identity)
        self.transactions = NonceStableSender(
            self.w3, self._call, lambda: self.sender, self._account,
            PendingSlots(pending_dir), tx_timeout,
        )  # fmt: skip

    def pin(self, trusted_identity: dict[str, Any] | None) -> None:
        """Accept only the pinned chain id, contract and operator from now on (checked
        against the node on first use: `LedgerIdentityMismatch`, `ContractMissing`)."""
        super().pin(trusted_identity)
        if trusted_identity is not None:
            self._deployment, self._verified, self._chain = None, False, None

    @classmethod
    def from_settings(
        cls, settings: Any, trusted_identity: dict[str, Any] | None = None
    ) -> EvmLedger:
        home = Path(settings.home_path)
        return cls(
            settings.ledger_url,
            private_key=settings.ledger_private_key or None,
            contract_address=settings.ledger_contract or None,
            required_confirmations=max(int(settings.ledger_confirmations), 1),
            tx_timeout=float(settings.ledger_tx_timeout_seconds),
            deployments_file=home / DEPLOYMENTS_FILE,
            pending_dir=home / PENDING_DIR,
            deploy=settings.ledger_deploy,
            log_chunk_blocks=int(settings.ledger_log_chunk_blocks),
            trusted_identity=trusted_identity,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one node interaction; connection errors are retried, then LedgerUnavailable.
        Messages name the node by `safe_url` only (hosted URLs carry API keys)."""
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _CONNECTION_ERRORS as exc:
                if attempt == self.retries:
                    detail = mask_text(str(exc), self._secrets)
                    raise LedgerUnavailable(
                        f"EVM node {self.safe_url} unreachable ({what}) after "
                        f"{self.retries + 1} attempts: {detail}"
                    ) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @property
    def sender(self) -> str:
        """The account that signs our transactions (private key, else the node's first)."""
        if self._sender is None:
            accounts = self._call("eth_accounts", lambda: self.w3.eth.accounts)
            if not accounts:
                raise LedgerError("no private key configured and the node has no unlocked account")
            self._sender = to_checksum_address(accounts[0])
        return self._sender

    @property
    def operator(self) -> str:
        """The only sender whose events count: the pinned one, else ourselves."""
        if self.trusted_identity is not None:
            return to_checksum_address(str(self.trusted_identity.get("operator", "")))
        return self.sender

    def _chain_id(self) -> int:
        if self._chain is None:
            self._chain = int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))
            if (
                self.trusted_identity is not None
                and int(self.trusted_identity.get("chain_id", -1)) != self._chain
            ):
                raise IdentityMismatch(
                    f"node {self.safe_url} serves chain id {self._chain}, the trust policy "
                    f"pins {self.trusted_identity.get('chain_id')}"
                )
        return self._chain

    # -- contract ---------------------------------------------------------------------------

    def _has_our_code(self, address: str, block: int | str = "latest") -> bool:
        code = self._call("eth_getCode", lambda: self.w3.eth.get_code(address, block))
        return "0x" + bytes(code).hex() == contract_artifact()["deployedBytecode"]

    def _has_code_at(self, address: str) -> Callable[[int], bool]:
        return lambda block: self._has_our_code(address, block)

    def _deployment_block(self, address: str) -> int:
        try:
            return first_block_with_code(self._has_code_at(address), self._head())
        except Web3RPCError:  # the node keeps no state history: scan from genesis
            return 0

    def _recorded(self) -> Deployment | None:
        return self.record.get(self._chain_id())

    def _record(self, dep: Deployment) -> None:
        self.record.put(self._chain_id(), dep)

    def deploy(self) -> Deployment:
        """Deploy a fresh StreamNotaryAnchor and record it (explicitly, or by the policy)."""
        factory = self.w3.eth.contract(abi=self._abi, bytecode=contract_artifact()["bytecode"])
        receipt = self.transactions.send(
            f"deploy:{self._chain_id()}",
            lambda params: factory.constructor().build_transaction(params),
        )
        dep = Deployment(
            to_checksum_address(receipt["contractAddress"]), int(receipt["blockNumber"])
        )
        self._record(dep)
        return dep

    def _resolve(self, *, deploy: bool) -> Deployment | None:
        """The contract in use (see the module docstring), its code checked once. Reads
        never deploy; `None` only when nothing is configured or recorded and we read."""
        if self._deployment is not None:
            if not self._verified and not self._has_our_code(self._deployment.address):
                raise ContractMissing(
                    f"{self._deployment.address} on chain id {self._chain_id()} "
                    f"({self.safe_url}) holds no StreamNotaryAnchor code"
                )
            self._verified = True
            return self._deployment
        where = f"on chain id {self._chain_id()} ({self.safe_url})"
        if self.trusted_identity is not None:
            address = to_checksum_address(str(self.trusted_identity.get("contract", "")))
            if not self._has_our_code(address):
                raise ContractMissing(f"pinned contract {address} holds no code {where}")
            rec = self._recorded()
            block = rec.block if rec and rec.address == address else None
            self._deployment = Deployment(
                address, self._deployment_block(address) if block is None else block
            )
        else:
            rec = self._recorded()
            if rec is not None and self._has_our_code(rec.address):
                self._deployment = rec
            elif rec is not None and not (deploy and self.deploy_policy == "replace"):
                raise ContractMissing(
                    f"recorded contract {rec.address} holds no StreamNotaryAnchor code {where}: "
                    "a lagging or reset node? Anchoring stops rather than deploying a new "
                    "contract silently; if the chain really was reset, run "
                    "`streamnotary anchor --deploy`"
                )
            elif deploy and (rec is not None or self.deploy_policy != "never"):
                self._deployment = self.deploy()
            elif deploy:
                raise ContractMissing(
                    f"no contract configured or recorded {where} and ledger_deploy is 'never': "
                    "set ledger_contract, or deploy with `streamnotary anchor --deploy`"
                )
        self._verified = self._deployment is not None
        return self._deployment

    @property
    def deployment(self) -> Deployment:
        """The contract in use for writing (deployed only as the policy allows)."""
        dep = self._resolve(deploy=True)
        assert dep is not None
        return dep

    @property
    def contract_address(self) -> str:
        return self.deployment.address

    def _contract(self) -> Any:
        return self.w3.eth.contract(address=self.deployment.address, abi=self._abi)

    # -- logs -------------------------------------------------------------------------------

    def _all_logs(self, **filters: Any) -> list[Any]:
        """`Anchored` events matching `filters` (any sender), read in block-range chunks."""
        dep = self._resolve(deploy=False)
        if dep is None:
            return []  # no contract yet: nothing was ever anchored here
        event = self.w3.eth.contract(address=dep.address, abi=self._abi).events.Anchored

        def fetch(start: int, end: int) -> list[Any]:
            logs = self._call(
                "eth_getLogs",
                lambda: event.get_logs(from_block=start, to_block=end, argument_filters=filters),
            )
            return [log for log in logs if not log.get("removed", False)]

        try:
            return scan_in_chunks(fetch, dep.block, self._head(), self.log_chunk_blocks)
        except Web3RPCError as exc:
            detail = mask_text(str(exc), self._secrets)
            raise LedgerError(f"eth_getLogs refused by {self.safe_url}: {detail}") from None

    def _logs(self, **filters: Any) -> list[Any]:
        """The operator's events matching `filters`."""
        return self._all_logs(sender=self.operator, **filters)

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
                "sender": to_checksum_address(log["args"]["sender"]),
            },
            confirmations=max(head - block + 1, 0),
            required_confirmations=self.required_confirmations,
        )

    def anchored_count(self, key: str) -> int:
        """How many of the operator's `Anchored` events carry `key` (the contract allows one)."""
        return len(self._logs(keyHash=key_hash(key)))

    def foreign_entries(self, key: str) -> list[dict[str, Any]]:
        """Events under `key` by senders other than the operator (``tx``, ``block``,
        ``sender``): ignored everywhere, reported by the audit as ``info``."""
        operator = self.operator
        return [
            {
                "tx": "0x" + bytes(log["transactionHash"]).hex(),
                "block": int(log["blockNumber"]),
                "sender": to_checksum_address(log["args"]["sender"]),
            }
            for log in self._all_logs(keyHash=key_hash(key))
            if to_checksum_address(log["args"]["sender"]) != operator
        ]

    # -- Ledger -----------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """``{"backend","chain_id","contract","operator"}``: what an auditor pins."""
        dep = self._resolve(deploy=False)
        if dep is None:
            raise ContractMissing(
                f"no contract recorded or configured on chain id {self._chain_id()}: "
                "anchor once (or set ledger_contract) before exporting the identity"
            )
        return {
            "backend": self.backend,
            "chain_id": self._chain_id(),
            "contract": dep.address,
            "operator": self.operator,
        }

    def lookup(self, key: str) -> AnchorRef | None:
        logs = self._logs(keyHash=key_hash(key))
        return self._ref(logs[0]) if logs else None

    def lookup_root(self, root_hex: str) -> list[AnchorRef]:
        """The operator's entries anchored under the batch root `root_hex` (normally one)."""
        head = self._head()
        return [self._ref(log, head) for log in self._logs(root=bytes.fromhex(root_hex))]

    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        if self.trusted_identity is not None and self.operator != self.sender:
            raise ForeignAnchor(f"we sign as {self.sender}, the pinned operator is {self.operator}")
        self._resolve(deploy=True)  # deploys only as ledger_deploy allows
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
                self.transactions.send(f"anchor:{entry.key}", fn.build_transaction)
            except (ContractCustomError, ContractLogicError, TransactionFailed):
                # Reverted: most likely a racing run of ours anchored this key first.
                if self.lookup(entry.key) is None:
                    raise
            existing = self.lookup(entry.key)
            if existing is None:
                raise TransactionFailed(f"anchor of {entry.key} mined but no Anchored event found")
        self.transactions.slots.clear(f"anchor:{entry.key}")  # mined: nothing left in flight
        if existing.digest != entry.digest:
            raise AnchorConflict(
                f"{entry.key} is anchored on chain id {self._chain_id()} with digest "
                f"{existing.digest}, not {entry.digest}"
            )
        return existing

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        """The body of the event `ref` names, only if the operator emitted it from the
        contract in use on this chain (a bundle built on a foreign event is rejected)."""
        tx = ref.locator.get("tx")
        if not tx:
            raise EntryNotFound(f"reference {ref.key} has no EVM transaction locator")
        if int(ref.locator.get("chain_id", self._chain_id())) != self._chain_id():
            raise ForeignAnchor(f"{tx} is on chain id {ref.locator.get('chain_id')}")
        try:
            receipt = self._call("receipt", lambda: self.w3.eth.get_transaction_receipt(tx))
        except Web3RPCError as exc:
            raise EntryNotFound(f"transaction {tx} not found on {self.safe_url}") from exc
        except Exception as exc:  # web3 raises TransactionNotFound for an unknown hash
            if type(exc).__name__ == "TransactionNotFound":
                raise EntryNotFound(f"transaction {tx} not found on {self.safe_url}") from exc
            raise
        dep = self._resolve(deploy=False)
        if dep is None:
            raise EntryNotFound(f"no contract configured or recorded; {tx} cannot be ours")
        contract = self.w3.eth.contract(address=dep.address, abi=self._abi)
        operator = self.operator
        for log in receipt["logs"]:
            if int(log["logIndex"]) != int(ref.locator.get("log_index", log["logIndex"])):
                continue
            if to_checksum_address(log["address"]) != contract.address:
                raise ForeignAnchor(f"{tx}: event of {log['address']}, not of {contract.address}")
            ev = contract.events.Anchored().process_log(log)
            if to_checksum_address(ev["args"]["sender"]) != operator:
                raise ForeignAnchor(
                    f"{tx}: anchored by {ev['args']['sender']}, not by the operator {operator}"
                )
            if ev["args"]["key"] != ref.key:
                raise LedgerCorrupted(f"{tx} anchors {ev['args']['key']!r}, not {ref.key!r}")
            body = parse_document(ev["args"]["body"])
            digest = bytes(ev["args"]["digest"]).hex()
            if canonical_digest(body) != digest:
                raise LedgerCorrupted(f"{tx}: on-chain body does not hash to its digest")
            return dict(body)
        raise EntryNotFound(f"no Anchored event at {ref.locator} on {self.safe_url}")
