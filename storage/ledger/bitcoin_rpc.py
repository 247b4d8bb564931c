"""Bitcoin Core JSON-RPC client (bitcoind and forks such as litecoind): basic auth,
timeouts, bounded retries on connection loss and warm-up, RPC errors as named exceptions.

Credentials travel only in the HTTP Authorization header; messages name the node by
`safe_url` (scheme, host, port), never with the userinfo, path or query of its URL.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from storage.ledger.base import LedgerError, LedgerUnavailable
from streamnotary.masking import mask_text, safe_url, url_secrets


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
ALREADY_IN_CHAIN = -27


class BitcoinRpc:
    """Bitcoin Core JSON-RPC over requests: basic auth, timeouts, retries on connection loss."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        *,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
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
                    json={
                        "jsonrpc": "1.0",
                        "id": "streamnotary",
                        "method": method,
                        "params": list(params),
                    },
                    auth=self.auth,
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise LedgerUnavailable(
                        f"bitcoin node {safe_url(self.url)} unreachable ({method}) after "
                        f"{self.retries + 1} attempts: {mask_text(str(exc), url_secrets(self.url))}"
                    ) from None
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
