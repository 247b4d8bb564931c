"""The MultiChain JSON-RPC client: one named exception per node error code.

Why a hand-written client: MultiChain speaks Bitcoin-style JSON-RPC 1.0 over HTTP with
Basic auth; the official "libraries" are thin urllib wrappers that swallow errors into
status fields. We need the opposite: every JSON-RPC error surfaced as a named exception
(so the pipeline can tell "stream missing" from "no permission" from "node down"), and
retries limited to *connection* failures and read timeouts of read-only calls. A
JSON-RPC error is an answer from the node and is never retried — retrying a rejected
``publish`` cannot succeed, and retrying an accepted one could publish twice.

Wire format (verified against exchanges recorded from a real MultiChain 2.3.3 node,
``tests/data/multichain/``):

* request: ``{"jsonrpc": "1.0", "id": ..., "method": ..., "params": [...]}`` plus
  ``"chain_name"`` when one is configured (as MultiChain's own client libraries send it);
* success: HTTP 200, ``{"result": ..., "error": null, "id": ...}``;
* error: HTTP 500 with ``{"result": null, "error": {"code": N, "message": ...}}``; an
  unknown method is HTTP 404 with code -32601. The body is read whatever the status.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import requests

from storage.ledger.base import EntryNotFound, LedgerError, LedgerUnavailable
from streamnotary.masking import mask_text, safe_url, url_secrets


class MultiChainRpcError(LedgerError):
    """A JSON-RPC error object returned by the node (code and message as sent)."""

    def __init__(self, code: int, message: str, *, method: str = "", http_status: int = 0):
        super().__init__(f"MultiChain {method or 'RPC'} failed: {code} {message}")
        self.code = code
        self.message = message
        self.method = method
        self.http_status = http_status


class StreamNotFound(MultiChainRpcError):
    """-708: no stream with this name (or txid) on the chain."""


class NotSubscribed(MultiChainRpcError):
    """-703: reading a stream needs `subscribe` on this node first."""


class NoPermission(MultiChainRpcError):
    """-704: the node's address lacks the permission (create, write, ...)."""


class EntityAlreadyExists(MultiChainRpcError):
    """-705: `create` of a stream whose name is taken."""


class InsufficientFunds(MultiChainRpcError):
    """-716 (MultiChain) or -6 (wallet): not enough native currency to pay for the item."""


class ItemNotFound(MultiChainRpcError, EntryNotFound):
    """-710: the transaction is not an item of this stream."""


class InvalidParameter(MultiChainRpcError):
    """-8: a parameter was rejected (e.g. a key over 256 bytes, a partial JSON read)."""


class BadData(MultiChainRpcError):
    """-702: the item data is not of a supported type."""


class NotAllowed(MultiChainRpcError):
    """-701: the call is refused as asked (e.g. `getstreamitem` of a transaction that holds
    several items of the stream, as `publishmulti` writes: use `liststreamtxitems`)."""


class MethodNotFound(MultiChainRpcError):
    """-32601 (HTTP 404): the node does not know this method (wrong version, typo)."""


class MultiChainAuthError(LedgerError):
    """HTTP 401/403: wrong RPC user/password or the client IP is not in rpcallowip."""


ERROR_CLASSES: dict[int, type[MultiChainRpcError]] = {
    -708: StreamNotFound,
    -703: NotSubscribed,
    -704: NoPermission,
    -705: EntityAlreadyExists,
    -716: InsufficientFunds,
    -6: InsufficientFunds,  # RPC_WALLET_INSUFFICIENT_FUNDS inherited from Bitcoin Core
    -710: ItemNotFound,
    -8: InvalidParameter,
    -702: BadData,
    -701: NotAllowed,
    -32601: MethodNotFound,
}


def rpc_error(
    code: int, message: str, *, method: str = "", http_status: int = 0
) -> MultiChainRpcError:
    """The named exception for a JSON-RPC error code (generic `MultiChainRpcError` otherwise)."""
    cls = ERROR_CLASSES.get(code, MultiChainRpcError)
    return cls(code, message, method=method, http_status=http_status)


# Calls that only read: a read timeout on them is retried like a failed connection (a
# node stalled for a moment, e.g. on disk I/O, answers the next attempt). Writes never are.
READ_ONLY_METHODS = frozenset(
    {
        "getinfo",
        "getblockcount",
        "getblockchainparams",
        "liststreams",
        "liststreamkeys",
        "liststreamkeyitems",
        "liststreamtxitems",
        "getstreamitem",
        "gettxoutdata",
        "listpermissions",
    }
)


class MultiChainRpc:
    """One MultiChain node's JSON-RPC endpoint.

    `retries` extra attempts are made, with exponential backoff from `backoff` seconds,
    when the HTTP connection fails (refused, reset, connect timeout), and on a read timeout
    of a read-only call (`READ_ONLY_METHODS`). A read timeout of any other call is not
    retried: the node may have executed it.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str,
        password: str,
        chain_name: str = "",
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if not url:
            raise LedgerError("MultiChain ledger needs ledger_url (http://host:rpcport)")
        self.url = url
        self.chain_name = chain_name
        self.timeout = (
            connect_timeout if connect_timeout is not None else min(timeout, 5.0),
            timeout,
        )
        self.retries = max(0, retries)
        self.backoff = backoff
        self._ids = itertools.count(1)
        self._session = requests.Session()
        self._session.auth = (user, password)

    def request_body(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The JSON-RPC 1.0 body MultiChain expects (``chain_name`` only when configured)."""
        body: dict[str, Any] = {
            "jsonrpc": "1.0",
            "id": f"sn{next(self._ids)}",
            "method": method,
            "params": params,
        }
        if self.chain_name:
            body["chain_name"] = self.chain_name
        return body

    def call(self, method: str, *params: Any) -> Any:
        """Call `method`; return its result or raise the mapped exception."""
        body = self.request_body(method, list(params))
        response = self._post(body)
        return self._result(method, response)

    def _post(self, body: dict[str, Any]) -> requests.Response:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 5.0))
            try:
                return self._session.post(self.url, json=body, timeout=self.timeout)
            except requests.ConnectionError as exc:  # includes ConnectTimeout
                last = exc
            except requests.Timeout as exc:
                if body["method"] in READ_ONLY_METHODS:  # asking again changes nothing
                    last = exc
                    continue
                raise LedgerUnavailable(
                    f"MultiChain node at {safe_url(self.url)} did not answer {body['method']} "
                    f"within {self.timeout[1]} s (not retried: the call may have been executed)"
                ) from None
        detail = mask_text(str(last), url_secrets(self.url))  # requests echoes the URL
        raise LedgerUnavailable(
            f"MultiChain node at {safe_url(self.url)} unreachable after {self.retries + 1} "
            f"attempts: {detail}"
        ) from None

    @staticmethod
    def _result(method: str, response: requests.Response) -> Any:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            if status in (401, 403):
                raise MultiChainAuthError(
                    f"MultiChain refused the RPC credentials (HTTP {status}); check "
                    "ledger_user/ledger_password and rpcallowip"
                )
            raise MultiChainRpcError(
                status,
                f"non-JSON-RPC answer: {response.text[:200]!r}",
                method=method,
                http_status=status,
            )
        error = payload.get("error")
        if error:
            raise rpc_error(
                int(error.get("code", 0)),
                str(error.get("message", "")),
                method=method,
                http_status=status,
            )
        if status != 200:
            raise MultiChainRpcError(
                status, f"HTTP {status} without an error object", method=method
            )
        return payload.get("result")

    def close(self) -> None:
        self._session.close()
