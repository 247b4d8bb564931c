"""Send an EVM transaction at most once per purpose, however often the caller retries.

Why: a transaction that is not mined before the caller's deadline (a mainnet block takes
~12 s, a congested one minutes) used to be retried with a *fresh* nonce, so every retry
was a second transaction. Here each purpose (``anchor:<key>``, ``deploy``) owns one
*slot*: the first attempt fixes the nonce, signs (locally with the private key, else with
``eth_signTransaction`` by the node's unlocked account) and records the raw bytes before
they are sent;
every later attempt — the same process after a timeout, or a new process after a crash —
re-broadcasts exactly that transaction (same nonce, so at most one of them can ever be
mined) and waits again. A slot is released once its transaction is mined, or once its
nonce was consumed by another transaction (then nothing of ours is pending any more).

Slots live in ``<home>/evm_pending/<slot hash>.json`` (directory 0700, files 0600: a signed
transaction is not secret, but nothing under the home is world-readable).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint

from storage.ledger.base import LedgerError

# Node answers to a re-broadcast of a transaction it already has (geth, anvil, erigon,
# nethermind wordings): the transaction is in flight, which is what we want.
_ALREADY_SENT = (
    "already known",
    "known transaction",
    "already imported",
    "nonce too low",
    "already exists",
    "replacement transaction underpriced",
)


class TransactionFailed(LedgerError):
    """The transaction reverted, or was not mined in time (the next attempt re-sends it)."""


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class PendingSlots:
    """The recorded in-flight transaction per slot (files, or memory when `directory` is None)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, dict[str, Any]] = {}

    def _path(self, slot: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{hashlib.sha256(slot.encode()).hexdigest()[:32]}.json"

    def load(self, slot: str) -> dict[str, Any] | None:
        if self.directory is None:
            return self._memory.get(slot)
        try:
            doc = json.loads(self._path(slot).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise LedgerError(f"unreadable pending transaction record for {slot!r}: {exc}") from exc
        return dict(doc) if doc.get("slot") == slot else None

    def save(self, slot: str, record: dict[str, Any]) -> None:
        record = {**record, "slot": slot}
        if self.directory is None:
            self._memory[slot] = record
        else:
            _private_write(self._path(slot), json.dumps(record, sort_keys=True))

    def clear(self, slot: str) -> None:
        if self.directory is None:
            self._memory.pop(slot, None)
        else:
            self._path(slot).unlink(missing_ok=True)


def _jsonable(tx: dict[str, Any]) -> dict[str, Any]:
    return {k: (HexBytes(v).to_0x_hex() if isinstance(v, bytes) else v) for k, v in tx.items()}


class NonceStableSender:
    """Sends, re-sends and waits for transactions of one account (see the module docstring)."""

    def __init__(
        self,
        w3: Web3,
        call: Callable[[str, Callable[[], Any]], Any],
        sender: Callable[[], str],
        account: Any | None,
        slots: PendingSlots,
        tx_timeout: float,
        poll_seconds: float = 0.05,
    ) -> None:
        self.w3 = w3
        self._call = call
        self._sender = sender
        self._account = account
        self.slots = slots
        self.tx_timeout = tx_timeout
        self.poll_seconds = poll_seconds

    def send(self, slot: str, build: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        """Mine the slot's transaction (built by `build(params)` on the first attempt only)
        and return its receipt; `TransactionFailed` on revert or timeout."""
        record = self.slots.load(slot)
        if record is not None:
            receipt = self._receipt(record["hash"])
            if receipt is None and self._nonce_consumed(int(record["nonce"])):
                receipt = self._receipt(record["hash"])  # mined between the two calls?
                if receipt is None:
                    self.slots.clear(slot)  # another transaction took the nonce: nothing pending
                    record = None
            if receipt is not None:
                return self._settle(slot, record["hash"], receipt)
        if record is None:
            record = self._new_record(build)
            self.slots.save(slot, record)  # before the first broadcast: a crash re-sends it
        self._broadcast(record)
        return self._settle(slot, record["hash"], self._wait(record))

    # -- steps ------------------------------------------------------------------------------

    def _new_record(self, build: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        sender = self._sender()
        nonce = int(
            self._call("nonce", lambda: self.w3.eth.get_transaction_count(sender, "pending"))
        )
        tx = self._call("build", lambda: build({"from": sender, "nonce": nonce}))
        if self._account is not None:
            raw = HexBytes(Account.sign_transaction(tx, self._account.key).raw_transaction)
        else:  # an unlocked node account signs (dev nodes): same bytes on every re-send
            raw = self._node_sign(dict(tx))
        return {"nonce": nonce, "hash": HexBytes(keccak(raw)).to_0x_hex(), "raw": raw.to_0x_hex()}

    def _node_sign(self, tx: dict[str, Any]) -> HexBytes:
        if not tx.get("to"):
            tx.pop("to", None)  # contract creation: no recipient at all, not "0x"
        params = {k: (hex(v) if isinstance(v, int) else v) for k, v in _jsonable(tx).items()}
        resp = self._call(
            "sign",
            lambda: self.w3.provider.make_request(RPCEndpoint("eth_signTransaction"), [params]),
        )
        if resp.get("error"):
            raise LedgerError(f"the node cannot sign for {tx.get('from')}: {resp['error']}")
        result = resp["result"]
        return HexBytes(result["raw"] if isinstance(result, dict) else result)

    def _broadcast(self, record: dict[str, Any]) -> None:
        try:
            self._call("send", lambda: self.w3.eth.send_raw_transaction(record["raw"]))
        except Web3RPCError as exc:
            if not any(s in str(exc).lower() for s in _ALREADY_SENT):
                raise

    def _nonce_consumed(self, nonce: int) -> bool:
        sender = self._sender()
        mined = int(
            self._call("nonce", lambda: self.w3.eth.get_transaction_count(sender, "latest"))
        )
        return mined > nonce

    def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return self._call("receipt", lambda: self.w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def _wait(self, record: dict[str, Any]) -> Any:
        try:
            return self._call(
                "receipt",
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    record["hash"], timeout=self.tx_timeout, poll_latency=self.poll_seconds
                ),
            )
        except TimeExhausted as exc:
            raise TransactionFailed(
                f"tx {record['hash']} (nonce {record['nonce']}) not mined within "
                f"{self.tx_timeout}s; a retry re-sends the same transaction"
            ) from exc

    def _settle(self, slot: str, tx_hash: str, receipt: Any) -> Any:
        self.slots.clear(slot)
        if receipt["status"] != 1:
            raise TransactionFailed(f"tx {tx_hash} reverted")
        return receipt
