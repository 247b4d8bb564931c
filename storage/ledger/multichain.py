"""MultiChain streams as a ledger: a JSON-RPC client and the `MultiChainLedger` backend.

Why a hand-written client: MultiChain speaks Bitcoin-style JSON-RPC 1.0 over HTTP with
Basic auth; the official "libraries" are thin urllib wrappers that swallow errors into
status fields. We need the opposite: every JSON-RPC error surfaced as a named exception
(so the pipeline can tell "stream missing" from "no permission" from "node down"), and
retries limited to *connection* failures. A JSON-RPC error is an answer from the node and
is never retried — retrying a rejected ``publish`` cannot succeed, and retrying an
accepted one could publish twice.

Wire format (verified against exchanges recorded from a real MultiChain 2.3.3 node,
``tests/data/multichain/``):

* request: ``{"jsonrpc": "1.0", "id": ..., "method": ..., "params": [...]}`` plus
  ``"chain_name"`` when one is configured (as MultiChain's own client libraries send it);
* success: HTTP 200, ``{"result": ..., "error": null, "id": ...}``;
* error: HTTP 500 with ``{"result": null, "error": {"code": N, "message": ...}}``; an
  unknown method is HTTP 404 with code -32601. The body is read whatever the status.

What is published per anchor entry: one stream item with keys
``[entry.key, *entry.index_keys]`` (window entries: ``[window/<topic>/<window id>/r<rev>,
<window id>, <station>, <topic>]``) and data ``{"json": {"entry_key", "kind", "digest",
"body"}}``. Items are listed at once with ``confirmations: 0``; they are final only once
they have ``required_confirmations``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import requests

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

# MultiChain's limit on one item key (bytes, UTF-8); the node answers -8 "Item key is too long".
MAX_KEY_BYTES = 256
# Page size for liststreamkeyitems: the node returns only the last 10 items by default.
KEY_ITEMS_PAGE = 200
DOCUMENT_FIELDS = ("entry_key", "kind", "digest", "body")


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
    -32601: MethodNotFound,
}


def rpc_error(
    code: int, message: str, *, method: str = "", http_status: int = 0
) -> MultiChainRpcError:
    """The named exception for a JSON-RPC error code (generic `MultiChainRpcError` otherwise)."""
    cls = ERROR_CLASSES.get(code, MultiChainRpcError)
    return cls(code, message, method=method, http_status=http_status)


class MultiChainRpc:
    """One MultiChain node's JSON-RPC endpoint.

    `retries` extra attempts are made, with exponential backoff from `backoff` seconds,
    only when the HTTP connection fails (refused, reset, connect timeout). A read timeout
    is not retried: the node may have executed the call.
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
                raise LedgerUnavailable(
                    f"MultiChain node at {self.url} did not answer {body['method']} within "
                    f"{self.timeout[1]} s (not retried: the call may have been executed)"
                ) from exc
        raise LedgerUnavailable(
            f"MultiChain node at {self.url} unreachable after {self.retries + 1} attempts: {last}"
        ) from last

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


def _check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidParameter(-8, f"Item key is too long ({key[:40]}...)", method="publish")


class MultiChainLedger(Ledger):
    """Anchor entries as items of one MultiChain stream, found again by key."""

    backend = "multichain"
    supports_window_items = True
    key_items_page = KEY_ITEMS_PAGE

    def __init__(
        self,
        url: str,
        *,
        user: str,
        password: str,
        chain_name: str = "",
        stream: str = "streamnotary",
        required_confirmations: int = 1,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.rpc = MultiChainRpc(
            url,
            user=user,
            password=password,
            chain_name=chain_name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
        self.stream = stream
        self.required_confirmations = required_confirmations
        self._stream_ready = False

    @classmethod
    def from_settings(cls, settings: Any) -> MultiChainLedger:
        return cls(
            settings.ledger_url,
            user=settings.ledger_user,
            password=settings.ledger_password,
            chain_name=settings.ledger_chain_name,
            stream=settings.ledger_stream or "streamnotary",
            required_confirmations=int(settings.ledger_confirmations),
        )

    # -- stream set-up -------------------------------------------------------------------

    def ensure_stream(self) -> None:
        """Create the stream (open to all writers) if missing and subscribe to it.

        Creating an existing stream answers -705, which is the normal case after the first
        run. Without create permission (-704) the stream may still exist; reading it needs
        a subscription on this node (else -703).
        """
        if self._stream_ready:
            return
        try:
            self.rpc.call("create", "stream", self.stream, True)
        except EntityAlreadyExists:
            pass
        except NoPermission:
            self.rpc.call("liststreams", self.stream)  # StreamNotFound if it truly is missing
        self.rpc.call("subscribe", self.stream)
        self._stream_ready = True

    # -- Ledger interface ----------------------------------------------------------------

    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        keys = list(dict.fromkeys((entry.key, *entry.index_keys)))
        for key in keys:
            _check_key(key)
        self.ensure_stream()
        digest = entry.digest
        existing = list(self._entry_items(entry.key))
        for item, document in existing:
            if document["digest"] == digest:
                return self._ref(entry.key, item, document)
        if existing:
            raise AnchorConflict(
                f"{entry.key} is already anchored in stream {self.stream} with digest "
                f"{existing[0][1]['digest']}, not {digest}"
            )
        document = {
            "entry_key": entry.key,
            "kind": entry.kind,
            "digest": digest,
            "body": entry.body,
        }
        txid = self.rpc.call("publish", self.stream, keys, {"json": document})
        return AnchorRef(
            backend=self.backend,
            key=entry.key,
            digest=digest,
            locator={"txid": txid, "stream": self.stream},
            confirmations=0,
            required_confirmations=self.required_confirmations,
        )

    def lookup(self, key: str) -> AnchorRef | None:
        """The first (in chain order) valid item anchored under `key`, with its confirmations."""
        self.ensure_stream()
        for item, document in self._entry_items(key):
            return self._ref(key, item, document)
        return None

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        """The committed body; raises `LedgerCorrupted` if the item is not what `ref` names."""
        self.ensure_stream()
        stream = ref.locator.get("stream", self.stream)
        txid = ref.locator.get("txid")
        if not txid:
            raise EntryNotFound(f"reference for {ref.key} carries no MultiChain txid")
        item = self.rpc.call("getstreamitem", stream, txid, True)
        document = self._document(item)
        if document is None:
            raise LedgerCorrupted(f"item {txid} in stream {stream} is not a streamnotary anchor")
        if document["entry_key"] != ref.key or document["digest"] != ref.digest:
            raise LedgerCorrupted(
                f"item {txid} anchors {document['entry_key']} with digest {document['digest']}, "
                f"but the reference names {ref.key} with digest {ref.digest}"
            )
        return document["body"]

    def close(self) -> None:
        self.rpc.close()

    # -- helpers -------------------------------------------------------------------------

    def key_items(self, key: str, *, verbose: bool = True) -> Iterator[dict[str, Any]]:
        """Every item published under `key`, oldest first, paging past the default 10."""
        start = 0
        while True:
            page = self.rpc.call(
                "liststreamkeyitems", self.stream, key, verbose, self.key_items_page, start
            )
            yield from page
            if len(page) < self.key_items_page:
                return
            start += len(page)

    def _entry_items(self, key: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Valid items whose document names `key` as its entry key (index-key hits skipped)."""
        for item in self.key_items(key):
            if item.get("valid") is False:
                continue
            document = self._document(item)
            if document is not None and document["entry_key"] == key:
                yield item, document

    def item_data(self, item: dict[str, Any]) -> Any:
        """An item's data as published; data above ``maxshowndata`` is listed only as
        ``{"txid", "vout", "format", "size"}`` and fetched whole with ``gettxoutdata``
        (JSON and text cannot be read in parts: -8)."""
        data = item.get("data")
        if isinstance(data, dict) and "json" not in data and {"txid", "vout"} <= data.keys():
            return self.rpc.call("gettxoutdata", data["txid"], data["vout"])
        return data

    def _document(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """The published document of an item (None for items streamnotary did not write)."""
        data = self.item_data(item)
        if not isinstance(data, dict) or not isinstance(data.get("json"), dict):
            return None
        document = data["json"]
        if not all(name in document for name in DOCUMENT_FIELDS):
            return None
        if canonical_digest(document["body"]) != document["digest"]:
            raise LedgerCorrupted(
                f"item {item.get('txid')} carries digest {document['digest']} that does not "
                "match its body"
            )
        return document

    def _ref(self, key: str, item: dict[str, Any], document: dict[str, Any]) -> AnchorRef:
        return AnchorRef(
            backend=self.backend,
            key=key,
            digest=document["digest"],
            locator={"txid": item["txid"], "stream": self.stream},
            confirmations=int(item.get("confirmations", 0)),
            required_confirmations=self.required_confirmations,
        )
