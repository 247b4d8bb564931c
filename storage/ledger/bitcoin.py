"""Bitcoin-family ledger: one OP_RETURN output per batch entry (Bitcoin Core JSON-RPC).

Works with bitcoind and its forks that keep the RPC (litecoind is what the tests run).

What is on chain: an OP_RETURN output whose 74-byte payload is ::

    b"SNTY" | version 0x01 | kind b"B" | batch root (32) | sha256(key) (32) | size (uint32 BE)

An OP_RETURN cannot hold the whole JSON body (80 bytes at most), so a bitcoin batch entry
is restricted to what can be rebuilt from the payload plus its key: exactly
``{"kind": "batch", "topic": t, "root": r, "size": n}`` under the key
``batch/<t>/<r>`` (`storage.layout.batch_entry_key`). The key's hash is on chain, so the
topic taken from the key is committed too; `read` rebuilds the body from the transaction
and the key and the auditor recomputes its digest as for every other ledger. The window
members of the batch are checked against the batch manifest (`batches/<topic>/<root>.json`)
whose Merkle root must equal the anchored root. Other entries raise `EntryNotRecoverable`.

Idempotency without local state: the key → transaction mapping is recovered from the chain
itself. The ledger lists the wallet's own transactions (`listtransactions`; the anchoring
wallet paid for every anchor, so it sees them all, and a rescan of the wallet rebuilds the
list), decodes each one once (cached by txid) and indexes the payloads by key hash and root.
Conflicted transactions (negative confirmations) are ignored.

Lookup by txid uses the wallet (`gettransaction`) or, for a transaction of another wallet,
`getrawtransaction` (needs ``-txindex``).
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from storage.layout import batch_entry_key
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
from tasks.canonical import canonical_digest

MAGIC = b"SNTY"
VERSION = 1
KIND_BATCH = b"B"
PREFIX = MAGIC + bytes([VERSION]) + KIND_BATCH
PAYLOAD_SIZE = len(PREFIX) + 32 + 32 + 4  # 74 <= 80, the standard OP_RETURN relay limit
OP_RETURN = 0x6A
OP_PUSHDATA1 = 0x4C


class BitcoinRpcError(LedgerError):
    """A JSON-RPC error returned by the node (`code` is Bitcoin Core's RPC error code)."""

    def __init__(self, code: int, message: str, method: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.code = code
        self.method = method


class RpcAuthFailed(BitcoinRpcError):
    """HTTP 401: wrong rpcuser/rpcpassword."""


class TransactionNotFound(BitcoinRpcError):
    """-5 RPC_INVALID_ADDRESS_OR_KEY: no such transaction (or address)."""


class InsufficientFunds(BitcoinRpcError):
    """-6 RPC_WALLET_INSUFFICIENT_FUNDS (or -4 "Insufficient funds" from
    fundrawtransaction): the wallet cannot pay the anchoring fee."""


class WalletNotFound(BitcoinRpcError):
    """-18 RPC_WALLET_NOT_FOUND / -19 RPC_WALLET_NOT_SPECIFIED: load or name a wallet."""


class TransactionRejected(BitcoinRpcError):
    """-25/-26 verify errors: the node refused the transaction."""


class EntryNotRecoverable(LedgerError):
    """The entry holds more than an OP_RETURN can carry (see the module docstring)."""


_ERRORS: dict[int, type[BitcoinRpcError]] = {
    -5: TransactionNotFound,
    -6: InsufficientFunds,
    -18: WalletNotFound,
    -19: WalletNotFound,
    -25: TransactionRejected,
    -26: TransactionRejected,
}
_WARMING_UP = -28
_WALLET_ERROR = -4
_ALREADY_IN_CHAIN = -27


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def batch_body(topic: str, root_hex: str, size: int) -> dict[str, Any]:
    """The (only) body a bitcoin batch entry can have: everything is recoverable from chain."""
    return {"kind": "batch", "topic": topic, "root": root_hex, "size": size}


def encode_payload(entry: AnchorEntry) -> bytes:
    """The OP_RETURN payload of `entry`; `EntryNotRecoverable` unless `read` can rebuild it."""
    body = entry.body
    if entry.kind != "batch" or set(body) != {"kind", "topic", "root", "size"}:
        raise EntryNotRecoverable(
            f"{entry.key}: a bitcoin entry must be exactly "
            '{"kind": "batch", "topic", "root", "size"} (only that fits in OP_RETURN)'
        )
    topic, root, size = body["topic"], body["root"], body["size"]
    if body["kind"] != "batch" or not isinstance(topic, str) or not isinstance(size, int):
        raise EntryNotRecoverable(f"{entry.key}: malformed batch body {body!r}")
    try:
        root_bytes = bytes.fromhex(root)
    except (TypeError, ValueError) as exc:
        raise EntryNotRecoverable(f"{entry.key}: root is not hex") from exc
    if len(root_bytes) != 32 or root != root_bytes.hex() or not 0 <= size < 2**32:
        raise EntryNotRecoverable(f"{entry.key}: root must be 32 bytes lowercase hex, size uint32")
    if entry.key != batch_entry_key(topic, root):
        raise EntryNotRecoverable(f"{entry.key}: key must be {batch_entry_key(topic, root)!r}")
    return PREFIX + root_bytes + key_hash(entry.key) + struct.pack(">I", size)


@dataclass(frozen=True, slots=True)
class OnChainAnchor:
    """One decoded anchor output."""

    txid: str
    vout: int
    root: str
    key_hash: str
    size: int
    confirmations: int

    def body_for(self, key: str) -> dict[str, Any]:
        """Rebuild the entry body, given its key (whose hash must match the one on chain)."""
        if key_hash(key).hex() != self.key_hash:
            raise LedgerCorrupted(f"{self.txid}:{self.vout} does not anchor key {key!r}")
        prefix, suffix = "batch/", f"/{self.root}"
        if not (key.startswith(prefix) and key.endswith(suffix)):
            raise LedgerCorrupted(f"{key!r} is not the key of batch {self.root}")
        return batch_body(key[len(prefix) : -len(suffix)], self.root, self.size)


def decode_payload_script(script_hex: str) -> tuple[bytes, bytes, int] | None:
    """(root, key hash, size) if the output script is one of our OP_RETURNs, else None."""
    script = bytes.fromhex(script_hex)
    if len(script) < 2 or script[0] != OP_RETURN:
        return None
    if script[1] == OP_PUSHDATA1 and len(script) >= 3:
        n, data = script[2], script[3:]
    elif script[1] < OP_PUSHDATA1:
        n, data = script[1], script[2:]
    else:
        return None
    if n != len(data) or len(data) != PAYLOAD_SIZE or not data.startswith(PREFIX):
        return None
    body = data[len(PREFIX) :]
    return body[:32], body[32:64], struct.unpack(">I", body[64:68])[0]


class BitcoinRpc:
    """Bitcoin Core JSON-RPC over requests: basic auth, timeouts, retries on connection loss."""

    def __init__(self, url: str, user: str = "", password: str = "", *, timeout: float = 10.0,
                 retries: int = 3) -> None:
        self.url = url
        self.auth = (user, password) if user or password else None
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()

    def call(self, method: str, *params: Any) -> Any:
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.post(
                    self.url,
                    json={"jsonrpc": "1.0", "id": "streamnotary", "method": method,
                          "params": list(params)},
                    auth=self.auth,
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise LedgerUnavailable(
                        f"bitcoin node {_safe(self.url)} unreachable ({method}) after "
                        f"{self.retries + 1} attempts: {exc}"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status_code == 401:
                raise RpcAuthFailed(401, "authentication failed (rpcuser/rpcpassword)", method)
            try:
                doc = resp.json()
            except ValueError as exc:
                raise BitcoinRpcError(resp.status_code, resp.text[:200], method) from exc
            err = doc.get("error")
            if err:
                code = int(err.get("code", 0))
                if code == _WARMING_UP and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                message = str(err.get("message"))
                kind = _ERRORS.get(code, BitcoinRpcError)
                if code == _WALLET_ERROR and "insufficient funds" in message.lower():
                    kind = InsufficientFunds  # fundrawtransaction reports it as -4
                raise kind(code, message, method)
            return doc["result"]
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.session.close()


def _safe(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class BitcoinLedger(Ledger):
    """Anchors batch roots in OP_RETURN outputs paid by a Bitcoin Core wallet."""

    backend = "bitcoin"
    supports_window_items = False

    def __init__(self, url: str, *, user: str = "", password: str = "", wallet: str | None = None,
                 required_confirmations: int = 1, timeout: float = 10.0, retries: int = 3) -> None:
        """`url` is the node's RPC URL; the wallet is `wallet`, else a ``/wallet/<name>`` path
        in the URL, else the node's only loaded wallet."""
        if wallet:
            url = url.rstrip("/") + f"/wallet/{wallet}"
        self.rpc = BitcoinRpc(url, user, password, timeout=timeout, retries=retries)
        self.required_confirmations = required_confirmations
        self._decoded: dict[str, list[tuple[int, bytes, bytes, int]]] = {}

    @classmethod
    def from_settings(
        cls, settings: Any, trusted_identity: dict[str, Any] | None = None
    ) -> BitcoinLedger:
        return cls(
            settings.ledger_url,
            user=settings.ledger_user,
            password=settings.ledger_password,
            required_confirmations=max(int(settings.ledger_confirmations), 1),
        )

    # -- reading the chain ------------------------------------------------------------------

    def _tx_outputs(self, txid: str) -> list[tuple[int, bytes, bytes, int]]:
        """Our anchor outputs in `txid` (vout, root, key hash, size); cached: txs are immutable."""
        if txid not in self._decoded:
            raw = self._raw_tx(txid)
            found = []
            for out in raw["vout"]:
                dec = decode_payload_script(out["scriptPubKey"]["hex"])
                if dec is not None:
                    found.append((int(out["n"]), *dec))
            self._decoded[txid] = found
        return self._decoded[txid]

    def _raw_tx(self, txid: str) -> dict[str, Any]:
        try:
            hex_tx = self.rpc.call("gettransaction", txid)["hex"]
            return dict(self.rpc.call("decoderawtransaction", hex_tx))
        except (TransactionNotFound, WalletNotFound):
            return dict(self.rpc.call("getrawtransaction", txid, True))

    def _confirmations(self, txid: str) -> int:
        try:
            return int(self.rpc.call("gettransaction", txid).get("confirmations", 0))
        except (TransactionNotFound, WalletNotFound):
            return int(self.rpc.call("getrawtransaction", txid, True).get("confirmations", 0))

    def anchors(self) -> list[OnChainAnchor]:
        """Every anchor output the wallet has paid for, oldest first (conflicted ones dropped)."""
        txs = self.rpc.call("listtransactions", "*", 1_000_000, 0, True)
        seen: dict[str, int] = {}
        for tx in txs:
            if tx.get("category") == "send" and tx["txid"] not in seen:
                seen[tx["txid"]] = int(tx.get("confirmations", 0))
        result = []
        for txid, conf in seen.items():
            if conf < 0:
                continue  # conflicted / replaced: not on the chain
            for vout, root, kh, size in self._tx_outputs(txid):
                result.append(OnChainAnchor(txid, vout, root.hex(), kh.hex(), size, conf))
        return result

    def _by_key(self, key: str) -> list[OnChainAnchor]:
        kh = key_hash(key).hex()
        return [a for a in self.anchors() if a.key_hash == kh]

    def anchored_count(self, key: str) -> int:
        """How many live anchor outputs carry `key` (idempotency keeps it at one)."""
        return len(self._by_key(key))

    def lookup_root(self, root_hex: str) -> list[OnChainAnchor]:
        """The wallet's anchors of batch root `root_hex`."""
        return [a for a in self.anchors() if a.root == root_hex]

    def lookup_txid(self, txid: str) -> list[OnChainAnchor]:
        """The anchor outputs of transaction `txid`, with fresh confirmations."""
        conf = self._confirmations(txid)
        return [
            OnChainAnchor(txid, vout, root.hex(), kh.hex(), size, conf)
            for vout, root, kh, size in self._tx_outputs(txid)
        ]

    def _ref(self, key: str, a: OnChainAnchor) -> AnchorRef:
        return AnchorRef(
            backend=self.backend,
            key=key,
            digest=canonical_digest(a.body_for(key)),
            locator={"txid": a.txid, "vout": a.vout},
            confirmations=max(a.confirmations, 0),
            required_confirmations=self.required_confirmations,
        )

    # -- Ledger -----------------------------------------------------------------------------

    def lookup(self, key: str) -> AnchorRef | None:
        found = self._by_key(key)
        return self._ref(key, found[0]) if found else None

    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        payload = encode_payload(entry)
        existing = self.lookup(entry.key)
        if existing is not None:
            if existing.digest != entry.digest:
                raise AnchorConflict(
                    f"{entry.key} is anchored in {existing.locator['txid']} with digest "
                    f"{existing.digest}, not {entry.digest}"
                )
            return existing
        raw = self.rpc.call("createrawtransaction", [], [{"data": payload.hex()}])
        funded = self.rpc.call("fundrawtransaction", raw)["hex"]
        signed = self.rpc.call("signrawtransactionwithwallet", funded)
        if not signed.get("complete"):
            raise TransactionRejected(0, f"wallet could not sign: {signed.get('errors')}",
                                      "signrawtransactionwithwallet")
        decoded = self.rpc.call("decoderawtransaction", signed["hex"])
        txid = str(decoded["txid"])
        try:
            self.rpc.call("sendrawtransaction", signed["hex"])
        except BitcoinRpcError as exc:
            if exc.code != _ALREADY_IN_CHAIN:  # a retried send of the same bytes is fine
                raise
        vout = next(
            int(o["n"]) for o in decoded["vout"]
            if decode_payload_script(o["scriptPubKey"]["hex"]) is not None
        )
        return AnchorRef(
            backend=self.backend,
            key=entry.key,
            digest=entry.digest,
            locator={"txid": txid, "vout": vout},
            confirmations=0,
            required_confirmations=self.required_confirmations,
        )

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        txid = ref.locator.get("txid")
        if not txid:
            raise EntryNotFound(f"reference {ref.key} has no txid")
        try:
            outputs = self.lookup_txid(str(txid))
        except TransactionNotFound as exc:
            raise EntryNotFound(f"transaction {txid} not found") from exc
        for a in outputs:
            if a.vout == int(ref.locator.get("vout", a.vout)):
                return a.body_for(ref.key)
        raise EntryNotFound(f"{txid} has no streamnotary OP_RETURN at {ref.locator}")

    def close(self) -> None:
        self.rpc.close()
