"""MultiChain streams as a ledger: the `MultiChainLedger` backend.

What is published per anchor entry: one stream item with keys ``[entry.key,
*entry.index_keys]`` (window entries: ``[window/<scope>/<window id>/r<rev>, <window id>,
<station>, <topic>]``, the scope being the topic or a partition group's
``<topic>/<group>``) and data ``{"json": {"entry_key", "kind", "digest", "body"}}``.
A run's entries go out with ``publishmultifrom``, up to `publish_chunk` items per
transaction (the chain caps it at ``max-std-op-returns-count``, 32 by default); such a
transaction holds several items of the stream, so an item is addressed by (txid, vout).

Who may write (issue 8 / 11): the stream is created write-restricted
(``{"restrict": "write"}``), so only addresses granted ``<stream>.write`` can publish. That
is not enough on its own: a misconfigured grant, or another tenant of the chain, could
still publish items under our keys first. So every item's ``publishers`` are checked
against the *trusted publishers*: the pinned identity's (``trusted_identity``, from the
auditor's trust file), else the operator's own address (setting ``ledger_publisher``, else
the stream's creator). Items by anyone else are ignored by `lookup`, `anchor` and `read`,
and listed by `foreign_entries` so that the audit reports them as ``info``; they can
neither block the operator's anchoring nor stand in for it.

Items are listed at once with ``confirmations: 0`` (mempool); an item is final only with
``required_confirmations`` >= 1 (a 0 would call mempool items final, so it is raised to 1).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    Ledger,
    LedgerCorrupted,
    LedgerError,
    LedgerIdentityMismatch,
)
from storage.ledger.multichain_rpc import (  # noqa: F401 - re-exported for callers and tests
    ERROR_CLASSES,
    BadData,
    EntityAlreadyExists,
    InsufficientFunds,
    InvalidParameter,
    ItemNotFound,
    MethodNotFound,
    MultiChainAuthError,
    MultiChainRpc,
    MultiChainRpcError,
    NoPermission,
    NotAllowed,
    NotSubscribed,
    StreamNotFound,
    rpc_error,
)
from tasks.canonical import canonical_digest

# MultiChain's limit on one item key (bytes, UTF-8); the node answers -8 "Item key is too long".
MAX_KEY_BYTES = 256
# Page size for liststreamkeyitems: the node returns only the last 10 items by default.
KEY_ITEMS_PAGE = 200
# Items per publishmulti transaction; the chain's max-std-op-returns-count caps it (32).
PUBLISH_CHUNK = 32
DOCUMENT_FIELDS = ("entry_key", "kind", "digest", "body")
WRITE_RESTRICTED = {"restrict": "write"}
# How long a call on our own stream asks again when the node answers -708 "stream not found"
# for a stream it has just created or confirmed to exist (see `MultiChainLedger._on_stream`).
STREAM_SETTLE_S = 5.0


class IdentityMismatch(LedgerIdentityMismatch):
    """The pinned identity names another chain or stream than the node serves."""


class ForeignPublisher(LedgerCorrupted):
    """A reference points at an item published by an address that is not trusted."""


def _read_conf(path: Path) -> dict[str, str]:
    """``key=value`` lines of a ``multichain.conf``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LedgerError(f"cannot read MultiChain RPC credentials from {path}: {exc}") from exc
    pairs = (line.strip().partition("=") for line in text.splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep and not k.startswith("#")}


def _check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidParameter(-8, f"Item key is too long ({key[:40]}...)", method="publish")


def _document(entry: AnchorEntry) -> dict[str, Any]:
    return {"entry_key": entry.key, "kind": entry.kind, "digest": entry.digest, "body": entry.body}


def _item_keys(entry: AnchorEntry) -> list[str]:
    keys = list(dict.fromkeys((entry.key, *entry.index_keys)))
    for key in keys:
        _check_key(key)
    return keys


class MultiChainLedger(Ledger):
    """Anchor entries as items of one write-restricted MultiChain stream, found by key."""

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
        publisher: str = "",
        publish_chunk: int = PUBLISH_CHUNK,
        trusted_identity: dict[str, Any] | None = None,
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
        self.required_confirmations = max(1, int(required_confirmations))
        self.publish_chunk = max(1, int(publish_chunk))
        self._publisher = publisher
        self._stream_ready = False
        self._trusted: frozenset[str] | None = None
        self._foreign: dict[str, list[dict[str, Any]]] = {}
        # Items seen by the last lookups, by (txid, vout): `read` right after `lookup` (what
        # the audit does per window) needs no second round trip.
        self._seen: dict[tuple[str, int], dict[str, Any]] = {}
        self.pin(trusted_identity)

    @classmethod
    def from_settings(cls, settings: Any) -> MultiChainLedger:
        """The ledger the settings name; RPC credentials from ``ledger_user`` /
        ``ledger_password``, else from the node's own ``multichain.conf``
        (``ledger_multichain_conf``: the node and the pipeline share a host)."""
        user, password = settings.ledger_user, settings.ledger_password
        conf_path = getattr(settings, "ledger_multichain_conf", "")
        if conf_path and not (user and password):
            conf = _read_conf(Path(conf_path))
            user, password = user or conf.get("rpcuser", ""), conf.get("rpcpassword", "")
        return cls(
            settings.ledger_url,
            user=user,
            password=password,
            chain_name=settings.ledger_chain_name,
            stream=settings.ledger_stream or "streamnotary",
            required_confirmations=int(settings.ledger_confirmations),
            publisher=getattr(settings, "ledger_publisher", ""),
            publish_chunk=int(getattr(settings, "ledger_publish_chunk", PUBLISH_CHUNK)),
        )

    def pin(self, trusted_identity: dict[str, Any] | None) -> None:
        """Trust only the pinned publishers; chain and stream are checked on first use
        (pinning must not need the node to be up)."""
        super().pin(trusted_identity)
        self._trusted = None

    # -- stream set-up and identity ------------------------------------------------------

    def ensure_stream(self) -> None:
        """Create the stream write-restricted if missing, and subscribe to it.

        Creating an existing stream answers -705, the normal case after the first run.
        Without create permission (-704; an auditor's node) the stream may still exist;
        reading it needs a subscription on this node (else -703).
        """
        if self._stream_ready:
            return
        try:
            self.rpc.call("create", "stream", self.stream, WRITE_RESTRICTED)
        except EntityAlreadyExists:
            pass
        except NoPermission:
            self.rpc.call("liststreams", self.stream)  # StreamNotFound if it truly is missing
        self._stream_ready = True
        self._on_stream("subscribe", self.stream)

    def _on_stream(self, method: str, *params: Any) -> Any:
        """`method` on our stream, once `ensure_stream` has seen that the stream exists.

        Why ask again on -708: MultiChain 2.3.3 briefly forgets a stream whose ``create`` is
        still unconfirmed while it connects a block (measured on a 2 s-block chain: 12 of
        29,400 ``liststreamkeyitems`` in the first blocks after ``create`` answered -708,
        0 of 15,820 once the stream was confirmed). An error answer means the node executed
        nothing, so asking again is safe even for ``publishmultifrom``; after
        `STREAM_SETTLE_S` the error stands (a stream that really vanished, e.g. another
        chain behind the same URL).
        """
        deadline = time.monotonic() + STREAM_SETTLE_S
        delay = 0.05
        while True:
            try:
                return self.rpc.call(method, *params)
            except StreamNotFound:
                if not self._stream_ready or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def stream_info(self) -> dict[str, Any]:
        """The node's ``liststreams`` record of our stream (creators, restrictions)."""
        self.ensure_stream()
        [info] = self._on_stream("liststreams", self.stream, True)
        return dict(info)

    def operator_address(self) -> str:
        """The address this ledger publishes from: `publisher`, else the stream's creator."""
        if not self._publisher:
            creators = self.stream_info().get("creators") or []
            if not creators:
                raise LedgerError(f"stream {self.stream} names no creator; set ledger_publisher")
            self._publisher = str(creators[0])
        return self._publisher

    def identity(self) -> dict[str, Any]:
        """``{"backend","chain_name","stream","publishers"}``: what an auditor pins."""
        chain = str(self.rpc.call("getinfo")["chainname"])
        return {
            "backend": self.backend,
            "chain_name": chain,
            "stream": self.stream,
            "publishers": [self.operator_address()],
        }

    def trusted_publishers(self) -> frozenset[str]:
        """The pinned identity's publishers (checked against this node), else our own."""
        if self._trusted is None:
            if self.trusted_identity is not None:
                self._check_pinned(self.trusted_identity)
                self._trusted = frozenset(
                    str(a) for a in self.trusted_identity.get("publishers", ())
                )
            else:
                self._trusted = frozenset((self.operator_address(),))
        return self._trusted

    def _check_pinned(self, pinned: dict[str, Any]) -> None:
        chain = str(self.rpc.call("getinfo")["chainname"])
        if pinned.get("backend") != self.backend or (
            pinned.get("chain_name"),
            pinned.get("stream"),
        ) != (chain, self.stream):
            raise IdentityMismatch(
                f"pinned ledger identity {pinned.get('backend')}/{pinned.get('chain_name')}/"
                f"{pinned.get('stream')} is not this node's multichain/{chain}/{self.stream}"
            )

    # -- Ledger interface ----------------------------------------------------------------

    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        return self.anchor_many([entry])[0]

    def anchor_many(self, entries: Sequence[AnchorEntry]) -> list[AnchorRef]:
        """Anchor `entries` (idempotent by key) in ``publishmultifrom`` chunks.

        Every entry is looked up first: present with the same digest -> its reference;
        present with another digest -> `AnchorConflict` before anything is published. A
        crash between chunks leaves whole transactions behind, which the re-run finds.
        """
        for entry in entries:
            _item_keys(entry)
        self.ensure_stream()
        refs: dict[str, AnchorRef] = {}
        todo: dict[str, AnchorEntry] = {}
        digests: dict[str, str] = {}
        used = self._keys_in_use([entry.key for entry in entries])
        for entry in entries:
            if digests.setdefault(entry.key, entry.digest) != entry.digest:
                raise AnchorConflict(f"{entry.key} given twice with different digests")
            if entry.key in refs or entry.key in todo:
                continue
            if entry.key not in used:  # no item at all under the key: nothing to look up
                todo[entry.key] = entry
                continue
            existing = list(self._entry_items(entry.key))
            if existing and existing[0][1]["digest"] != entry.digest:
                raise AnchorConflict(
                    f"{entry.key} is already anchored in stream {self.stream} with digest "
                    f"{existing[0][1]['digest']}, not {entry.digest}"
                )
            if existing:
                refs[entry.key] = self._ref(entry.key, *existing[0])
            else:
                todo[entry.key] = entry
        pending = list(todo.values())
        for i in range(0, len(pending), self.publish_chunk):
            refs.update(self._publish_chunk(pending[i : i + self.publish_chunk]))
        return [refs[entry.key] for entry in entries]

    def _keys_in_use(self, keys: list[str]) -> set[str]:
        """The keys that have any item (mempool included), by ``liststreamkeys`` in pages:
        one round trip per page instead of one ``liststreamkeyitems`` per key."""
        used: set[str] = set()
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), self.key_items_page):
            page = unique[i : i + self.key_items_page]
            for row in self._on_stream("liststreamkeys", self.stream, page, False):
                if int(row.get("items", 0)) > 0:
                    used.add(str(row["key"]))
        return used

    def _publish_chunk(self, chunk: list[AnchorEntry]) -> dict[str, AnchorRef]:
        """One transaction for `chunk`; vouts are read back from the node, not assumed."""
        items = [{"keys": _item_keys(e), "data": {"json": _document(e)}} for e in chunk]
        txid = self._on_stream("publishmultifrom", self.operator_address(), self.stream, items)
        vouts = {
            item["data"]["json"]["entry_key"]: int(item["vout"])
            for item in self._on_stream("liststreamtxitems", self.stream, txid, True)
            if isinstance(item.get("data"), dict) and isinstance(item["data"].get("json"), dict)
        }
        return {
            e.key: AnchorRef(
                backend=self.backend,
                key=e.key,
                digest=e.digest,
                locator={
                    "txid": txid,
                    "vout": vouts.get(e.key, n),
                    "stream": self.stream,
                    "publisher": self.operator_address(),
                },
                confirmations=0,
                required_confirmations=self.required_confirmations,
            )
            for n, e in enumerate(chunk)
        }

    def lookup(self, key: str) -> AnchorRef | None:
        """The first (in chain order) valid trusted item anchored under `key`."""
        self.ensure_stream()
        matches = list(self._entry_items(key))  # whole list: `_foreign` must be complete
        return self._ref(key, *matches[0]) if matches else None

    def foreign_entries(self, key: str) -> list[dict[str, Any]]:
        """Items under `key` by untrusted publishers (``txid``, ``vout``, ``publishers``)."""
        if key not in self._foreign:  # else filled by the lookup just made
            self.ensure_stream()
            list(self._entry_items(key))
        return list(self._foreign[key])

    def read(self, ref: AnchorRef) -> dict[str, Any]:
        """The committed body; refuses items that are not what `ref` names or not trusted."""
        self.ensure_stream()
        stream = ref.locator.get("stream", self.stream)
        txid = ref.locator.get("txid")
        if not txid:
            raise EntryNotFound(f"reference for {ref.key} carries no MultiChain txid")
        vout = ref.locator.get("vout")
        seen = self._seen.get((str(txid), int(vout))) if vout is not None else None
        if seen is not None and stream == self.stream:
            item = seen
        else:
            item = self._tx_item(stream, str(txid), vout, ref.key)
        if not set(item.get("publishers", ())) & self.trusted_publishers():
            raise ForeignPublisher(
                f"item {txid} in stream {stream} was published by {item.get('publishers')}, "
                f"not by a trusted publisher {sorted(self.trusted_publishers())}"
            )
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

    def _tx_item(self, stream: str, txid: str, vout: Any, key: str) -> dict[str, Any]:
        """The item of `txid` in `stream`: by vout, else the one whose document is `key`."""
        call = self._on_stream if stream == self.stream else self.rpc.call
        try:
            return dict(call("getstreamitem", stream, txid, True))
        except NotAllowed:  # several items of the stream in this transaction
            pass
        items = call("liststreamtxitems", stream, txid, True)
        for item in items:
            if vout is not None and int(item.get("vout", -1)) == int(vout):
                return dict(item)
            document = self._document(item) if vout is None else None
            if document is not None and document["entry_key"] == key:
                return dict(item)
        raise EntryNotFound(f"transaction {txid} holds no item for {key} in stream {stream}")

    def key_items(self, key: str, *, verbose: bool = True) -> Iterator[dict[str, Any]]:
        """Every item published under `key`, oldest first, paging past the default 10."""
        start = 0
        while True:
            page = self._on_stream(
                "liststreamkeyitems", self.stream, key, verbose, self.key_items_page, start
            )
            yield from page
            if len(page) < self.key_items_page:
                return
            start += len(page)

    def _entry_items(self, key: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Valid trusted items whose document names `key` as its entry key.

        Index-key hits are skipped; items by untrusted publishers are set aside in
        `_foreign` (reported by `foreign_entries`), whatever their content.
        """
        trusted = self.trusted_publishers()
        foreign: list[dict[str, Any]] = []
        self._foreign[key] = foreign
        for item in self.key_items(key):
            if item.get("valid") is False:
                continue
            if not set(item.get("publishers", ())) & trusted:
                foreign.append(
                    {
                        "txid": item.get("txid"),
                        "vout": item.get("vout"),
                        "publishers": list(item.get("publishers", ())),
                    }
                )
                continue
            document = self._document(item)
            if document is not None and document["entry_key"] == key:
                if len(self._seen) > 4096:
                    self._seen.clear()
                self._seen[(str(item["txid"]), int(item.get("vout", 0)))] = item
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
            locator={
                "txid": item["txid"],
                "vout": int(item.get("vout", 0)),
                "stream": self.stream,
                "publisher": next(iter(item.get("publishers", [])), ""),
            },
            confirmations=int(item.get("confirmations", 0)),
            required_confirmations=self.required_confirmations,
        )
