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

**Who wrote it.** Anyone can put our 74-byte format into an OP_RETURN. An anchor counts only
if *every input of its transaction spends from the operator's address*: the pinned
identity's ``operator_address`` (``trusted_identity``, from the auditor's trust file), else
the setting ``ledger_operator_address``, else the wallet's address labelled
``streamnotary`` (created on first use; fund it). The writer spends only that address's
coins and returns the change there, so the address pays for every anchor.

**Finding anchors.** An auditor needs no wallet: `locate` takes the txid from the receipt
and reads it with ``getrawtransaction`` (the node must run with ``-txindex``), checks the
payload against the key and the inputs against the operator address (each previous output
looked up the same way). Anything else is `ForeignAnchor`. The writer's idempotency needs
no local state: `lookup` lists the wallet's own sends (``listtransactions``; a rescan
rebuilds the list), decodes each once (cached by txid) and keeps those paid by the
operator. Conflicted transactions (negative confirmations) are ignored.
"""

from __future__ import annotations

from typing import Any

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    Ledger,
    LedgerError,
    LedgerIdentityMismatch,
)
from storage.ledger.bitcoin_payload import (
    PAYLOAD_SIZE,
    PREFIX,
    EntryNotRecoverable,
    OnChainAnchor,
    batch_body,
    decode_payload_script,
    encode_payload,
    key_hash,
)
from storage.ledger.bitcoin_rpc import (
    ALREADY_IN_CHAIN,
    BitcoinRpc,
    BitcoinRpcError,
    InsufficientFunds,
    RpcAuthFailed,
    TransactionNotFound,
    TransactionRejected,
    WalletNotFound,
)
from tasks.canonical import canonical_digest

OPERATOR_LABEL = "streamnotary"
NO_SUCH_LABEL = -11  # RPC_WALLET_INVALID_LABEL_NAME: getaddressesbylabel found none
__all__ = [
    "PAYLOAD_SIZE",
    "PREFIX",
    "BitcoinLedger",
    "BitcoinRpcError",
    "EntryNotRecoverable",
    "ForeignAnchor",
    "IdentityMismatch",
    "InsufficientFunds",
    "OnChainAnchor",
    "RpcAuthFailed",
    "TransactionNotFound",
    "TransactionRejected",
    "WalletNotFound",
    "batch_body",
    "decode_payload_script",
    "encode_payload",
    "key_hash",
]


class ForeignAnchor(LedgerError):
    """The transaction is not paid (only) from the operator's address, or holds no anchor
    of the key: someone else's OP_RETURN, which never counts."""


IdentityMismatch = LedgerIdentityMismatch  # the node serves another network than pinned


def output_address(script_pub_key: dict[str, Any]) -> str | None:
    """The address an output pays (``address`` since Core 22, ``addresses[0]`` before)."""
    if "address" in script_pub_key:
        return str(script_pub_key["address"])
    addresses = script_pub_key.get("addresses") or []
    return str(addresses[0]) if len(addresses) == 1 else None


class BitcoinLedger(Ledger):
    """Anchors batch roots in OP_RETURN outputs paid from the operator's address."""

    backend = "bitcoin"
    supports_window_items = False

    def __init__(
        self,
        url: str,
        *,
        user: str = "",
        password: str = "",
        wallet: str | None = None,
        required_confirmations: int = 1,
        timeout: float = 10.0,
        retries: int = 3,
        operator_address: str | None = None,
        trusted_identity: dict[str, Any] | None = None,
    ) -> None:
        """`url` is the node's RPC URL; the wallet (for anchoring only) is `wallet`, else a
        ``/wallet/<name>`` path in the URL, else the node's only loaded wallet."""
        node_url = url
        if wallet:
            url = url.rstrip("/") + f"/wallet/{wallet}"
        elif "/wallet/" in url:
            node_url = url.split("/wallet/", 1)[0]
        self.rpc = BitcoinRpc(url, user, password, timeout=timeout, retries=retries)
        # Chain reads go to the node endpoint: no wallet is needed (or touched) to audit.
        self.chain = BitcoinRpc(node_url, user, password, timeout=timeout, retries=retries)
        self.required_confirmations = required_confirmations
        self._operator = operator_address
        self._network: str | None = None
        self._decoded: dict[str, dict[str, Any]] = {}
        self.pin(trusted_identity)

    def pin(self, trusted_identity: dict[str, Any] | None) -> None:
        """Accept only anchors paid by the pinned operator address, on the pinned network
        (checked against the node on first use: `LedgerIdentityMismatch`)."""
        super().pin(trusted_identity)
        if trusted_identity is not None:
            self._operator = str(trusted_identity.get("operator_address", ""))
            self._network = None

    @classmethod
    def from_settings(
        cls, settings: Any, trusted_identity: dict[str, Any] | None = None
    ) -> BitcoinLedger:
        return cls(
            settings.ledger_url,
            user=settings.ledger_user,
            password=settings.ledger_password,
            required_confirmations=max(int(settings.ledger_confirmations), 1),
            operator_address=settings.ledger_operator_address or None,
            trusted_identity=trusted_identity,
        )

    # -- identity ---------------------------------------------------------------------------

    @property
    def network(self) -> str:
        """``main``, ``test``, ``regtest`` or ``signet``, as the node reports it."""
        if self._network is None:
            self._network = str(self.chain.call("getblockchaininfo")["chain"])
            if (
                self.trusted_identity is not None
                and self.trusted_identity.get("network") != self._network
            ):
                raise IdentityMismatch(
                    f"node serves {self._network!r}, the trust policy pins "
                    f"{self.trusted_identity.get('network')!r}"
                )
        return self._network

    @property
    def operator_address(self) -> str:
        """The only address whose anchors count (see the module docstring)."""
        if not self._operator:
            try:
                labelled = self.rpc.call("getaddressesbylabel", OPERATOR_LABEL)
            except BitcoinRpcError as exc:
                if exc.code != NO_SUCH_LABEL:
                    raise
                labelled = {}
            if labelled:
                self._operator = sorted(labelled)[0]
            else:
                self._operator = str(self.rpc.call("getnewaddress", OPERATOR_LABEL, "bech32"))
        return self._operator

    def identity(self) -> dict[str, Any]:
        """``{"backend","network","operator_address"}``: what an auditor pins."""
        return {
            "backend": self.backend,
            "network": self.network,
            "operator_address": self.operator_address,
        }

    # -- reading the chain (no wallet) ------------------------------------------------------

    def _raw_tx(self, txid: str) -> dict[str, Any]:
        """The decoded transaction via ``getrawtransaction`` (``-txindex``); not cached
        because confirmations change."""
        _ = self.network  # the pinned network is checked before any answer is trusted
        try:
            return dict(self.chain.call("getrawtransaction", txid, True))
        except TransactionNotFound as exc:
            raise TransactionNotFound(
                exc.code, f"{exc} (is the node running with -txindex?)", exc.method
            ) from None

    def _decoded_tx(self, txid: str) -> dict[str, Any]:
        """Our anchor outputs of `txid` and whether the operator paid for it (cached:
        transactions are immutable)."""
        if txid not in self._decoded:
            raw = self._raw_tx(txid)
            outputs = []
            for out in raw["vout"]:
                dec = decode_payload_script(out["scriptPubKey"]["hex"])
                if dec is not None:
                    outputs.append((int(out["n"]), *dec))
            payers = {self._input_address(vin) for vin in raw["vin"]}
            self._decoded[txid] = {"outputs": outputs, "payers": payers}
        return self._decoded[txid]

    def _input_address(self, vin: dict[str, Any]) -> str | None:
        if "txid" not in vin:
            return None  # coinbase
        prev = self._raw_tx(str(vin["txid"]))
        return output_address(prev["vout"][int(vin["vout"])]["scriptPubKey"])

    def _paid_by_operator(self, txid: str) -> bool:
        payers = self._decoded_tx(txid)["payers"]
        return payers == {self.operator_address}

    def _confirmations(self, txid: str) -> int:
        return int(self._raw_tx(txid).get("confirmations", 0))

    def lookup_txid(self, txid: str) -> list[OnChainAnchor]:
        """The operator's anchor outputs in `txid`, with fresh confirmations (`ForeignAnchor`
        if someone else paid for the transaction)."""
        if not self._paid_by_operator(txid):
            payers = sorted(str(p) for p in self._decoded_tx(txid)["payers"])
            raise ForeignAnchor(
                f"{txid} is paid by {', '.join(payers)}, not only by the operator "
                f"{self.operator_address}"
            )
        conf = self._confirmations(txid)
        return [
            OnChainAnchor(txid, vout, root.hex(), kh.hex(), size, conf, kind, prev)
            for vout, root, kh, size, kind, prev in self._decoded_tx(txid)["outputs"]
        ]

    def locate(self, key: str, locator: dict[str, Any]) -> AnchorRef | None:
        """The entry under `key` at the transaction a receipt recorded (no wallet needed)."""
        txid = locator.get("txid")
        if not isinstance(txid, str):
            raise EntryNotFound(f"locator {locator!r} names no txid")
        try:
            outputs = self.lookup_txid(txid)
        except TransactionNotFound:
            return None
        kh = key_hash(key).hex()
        found = [a for a in outputs if a.key_hash == kh]
        if not found:
            raise ForeignAnchor(f"{txid} holds no anchor of {key!r}")
        return self._ref(key, found[0])

    # -- the writer's wallet ----------------------------------------------------------------

    def anchors(self) -> list[OnChainAnchor]:
        """Every anchor output the wallet sent and the operator paid for, oldest first."""
        txs = self.rpc.call("listtransactions", "*", 1_000_000, 0, True)
        seen: dict[str, int] = {}
        for tx in txs:
            if tx.get("category") == "send" and tx["txid"] not in seen:
                seen[tx["txid"]] = int(tx.get("confirmations", 0))
        result = []
        for txid, conf in seen.items():
            if conf < 0 or not self._decoded_tx(txid)["outputs"]:
                continue  # conflicted / replaced, or no anchor in it
            if not self._paid_by_operator(txid):
                continue  # paid from another address of the wallet: not an operator anchor
            for vout, root, kh, size, kind, prev in self._decoded_tx(txid)["outputs"]:
                result.append(
                    OnChainAnchor(txid, vout, root.hex(), kh.hex(), size, conf, kind, prev)
                )
        return result

    def _by_key(self, key: str) -> list[OnChainAnchor]:
        kh = key_hash(key).hex()
        return [a for a in self.anchors() if a.key_hash == kh]

    def anchored_count(self, key: str) -> int:
        """How many live operator anchor outputs carry `key` (idempotency keeps it at one)."""
        return len(self._by_key(key))

    def lookup_root(self, root_hex: str) -> list[OnChainAnchor]:
        """The operator's anchors of batch root `root_hex` (from the wallet)."""
        return [a for a in self.anchors() if a.root == root_hex]

    def _ref(self, key: str, a: OnChainAnchor) -> AnchorRef:
        return AnchorRef(
            backend=self.backend,
            key=key,
            digest=canonical_digest(a.body_for(key)),
            locator={"txid": a.txid, "vout": a.vout, "address": self.operator_address},
            confirmations=max(a.confirmations, 0),
            required_confirmations=self.required_confirmations,
        )

    # -- Ledger -----------------------------------------------------------------------------

    def lookup(self, key: str) -> AnchorRef | None:
        """The operator's entry under `key`, found through the writer's wallet (an auditor
        without the wallet uses `locate` with the receipt's txid)."""
        found = self._by_key(key)
        return self._ref(key, found[0]) if found else None

    def _funding_input(self) -> dict[str, Any]:
        """The operator address's largest coin, confirmed ones first (short mempool chains)."""
        coins = self.rpc.call("listunspent", 0, 9_999_999, [self.operator_address])
        coins = [c for c in coins if c.get("spendable", True) and c.get("safe", True)]
        if not coins:
            raise InsufficientFunds(
                -6, f"no spendable coins at the operator address {self.operator_address}; "
                "send some there to pay for anchors", "listunspent",
            )  # fmt: skip
        best = max(coins, key=lambda c: (int(c.get("confirmations", 0)) > 0, c["amount"]))
        return {"txid": best["txid"], "vout": int(best["vout"])}

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
        raw = self.rpc.call(
            "createrawtransaction", [self._funding_input()], [{"data": payload.hex()}]
        )
        funded = self.rpc.call(
            "fundrawtransaction",
            raw,
            {"add_inputs": False, "changeAddress": self.operator_address},
        )["hex"]
        signed = self.rpc.call("signrawtransactionwithwallet", funded)
        if not signed.get("complete"):
            raise TransactionRejected(
                0, f"wallet could not sign: {signed.get('errors')}", "signrawtransactionwithwallet"
            )
        decoded = self.rpc.call("decoderawtransaction", signed["hex"])
        txid = str(decoded["txid"])
        try:
            self.rpc.call("sendrawtransaction", signed["hex"])
        except BitcoinRpcError as exc:
            if exc.code != ALREADY_IN_CHAIN:  # a retried send of the same bytes is fine
                raise
        vout = next(
            int(o["n"])
            for o in decoded["vout"]
            if decode_payload_script(o["scriptPubKey"]["hex"]) is not None
        )
        return AnchorRef(
            backend=self.backend,
            key=entry.key,
            digest=entry.digest,
            locator={"txid": txid, "vout": vout, "address": self.operator_address},
            confirmations=0,
            required_confirmations=self.required_confirmations,
        )

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        """The body anchored at `ref`, only if the operator paid for its transaction."""
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
        self.chain.close()
