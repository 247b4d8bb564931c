"""A small, stateful MultiChain JSON-RPC emulator — a TEST DOUBLE, not a MultiChain node.

Why it still exists: every ledger test now runs against a live MultiChain 2.3.3 node
(tests/fixtures/multichain.py); the emulator was what the suite used before one was
available. It is kept only as a cross-check: ``tests/test_ledger_multichain.py`` replays
every recorded exchange it can reproduce (``tests/data/multichain/``) against it, and
``tests/test_ledger_multichain_live.py::test_emulator_and_live_node_agree`` sends the
same requests to it and to the live node and compares statuses and bodies (two
differences found that way are fixed below: the wrong-chain-name answer and the parse
error's id). It implements ``create``, ``subscribe``, ``publish``,
``liststreamkeyitems``, ``getstreamitem``, ``gettxoutdata``, ``liststreams``, ``getinfo``,
``getruntimeparams`` — not ``publishmulti``, ``liststreamkeys``, ``liststreamtxitems``,
``publishfrom`` or permissions, which `MultiChainLedger` now uses.

What is NOT like a real node (and never claimed to be): no consensus, wallet, fees or
permissions; blocks are mined only on request (``emulator_mine``); the data ``size`` is
the compact-JSON length (the node reports its UBJSON size, a few bytes different); the
fields of an *unconfirmed verbose* item and the error for an unknown txid in
``gettxoutdata`` were not recorded and are best guesses (marked below).

Control method (not a MultiChain method): ``emulator_mine [n]`` mines `n` blocks holding
every pending item and returns the new height.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUBLISHER = "18wKH2KTc5ZL2fS7WNY3CEdce6VX4LGwyo25SN"  # the recorded node's address
MAX_KEY_BYTES = 256
DEFAULT_MAXSHOWNDATA = 16384


class RpcFault(Exception):
    """A JSON-RPC error as the node reports it (HTTP 500 unless told otherwise)."""

    def __init__(self, code: int, message: str, http_status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass
class _Item:
    txid: str
    keys: list[str]
    data: Any  # as published: {"json": ...}, {"text": ...} or a hex string
    time: int
    height: int | None = None  # block height once mined
    blockindex: int = 0


@dataclass
class _Stream:
    name: str
    createtxid: str
    open_write: bool
    subscribed: bool = False
    items: list[_Item] = field(default_factory=list)


@dataclass
class _Block:
    height: int
    hash: str
    time: int


class MultiChainState:
    """The chain state and the RPC methods; transport-free so it is easy to reason about."""

    def __init__(self, chain_name: str, *, maxshowndata: int = DEFAULT_MAXSHOWNDATA) -> None:
        self.chain_name = chain_name
        self.maxshowndata = maxshowndata
        self.streams: dict[str, _Stream] = {}
        self.items: dict[str, tuple[_Stream, _Item]] = {}
        self.blocks: list[_Block] = [
            _Block(h, self._hash(f"block{h}"), int(time.time())) for h in range(43)
        ]
        self.pending: list[_Item | str] = []  # transactions of the next block (items, creates)
        self._counter = itertools.count()
        self.lock = threading.Lock()

    @staticmethod
    def _hash(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def _txid(self) -> str:
        return self._hash(f"{self.chain_name}/tx/{next(self._counter)}/{time.time_ns()}")

    @property
    def height(self) -> int:
        return self.blocks[-1].height

    # -- dispatch ----------------------------------------------------------------------

    def dispatch(self, method: str, params: list[Any]) -> Any:
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            raise RpcFault(-32601, "Method not found", http_status=404)
        with self.lock:
            return handler(*params)

    # -- helpers -----------------------------------------------------------------------

    def _stream(self, name: Any) -> _Stream:
        stream = self.streams.get(str(name))
        if stream is None:
            raise RpcFault(-708, f"Stream with this name not found: {name}")
        return stream

    def _readable(self, name: Any) -> _Stream:
        stream = self._stream(name)
        if not stream.subscribed:
            raise RpcFault(-703, "Not subscribed to this stream")
        return stream

    def _confirmations(self, item: _Item) -> int:
        return 0 if item.height is None else self.height - item.height + 1

    @staticmethod
    def _size(data: Any) -> tuple[str, int]:
        if isinstance(data, dict) and "json" in data:
            return "json", len(json.dumps(data["json"], separators=(",", ":")).encode())
        if isinstance(data, dict) and "text" in data:
            return "text", len(data["text"].encode())
        return "raw", len(data) // 2

    def _shown_data(self, item: _Item) -> Any:
        fmt, size = self._size(item.data)
        if size > self.maxshowndata:
            return {"txid": item.txid, "vout": 0, "format": fmt, "size": size}
        return item.data

    def _item_json(self, item: _Item, verbose: bool) -> dict[str, Any]:
        """Key order as recorded (05, 12, 13): verbose adds block fields and vout/valid/time."""
        out: dict[str, Any] = {
            "publishers": [PUBLISHER],
            "keys": list(item.keys),
            "offchain": False,
            "available": True,
            "data": self._shown_data(item),
            "confirmations": self._confirmations(item),
        }
        if item.height is not None:
            block = self.blocks[item.height]
            if verbose:
                out["blockhash"] = block.hash
                out["blockheight"] = block.height
                out["blockindex"] = item.blockindex
            out["blocktime"] = block.time
        out["txid"] = item.txid
        if verbose:  # unconfirmed + verbose was not recorded: same fields minus block ones
            out["vout"] = 0
            out["valid"] = True
            out["time"] = item.time
            out["timereceived"] = item.time
        return out

    # -- MultiChain methods --------------------------------------------------------------

    def rpc_getinfo(self) -> dict[str, Any]:
        return {
            "version": "2.3.3",
            "nodeversion": 20303901,
            "edition": "Community",
            "protocolversion": 20013,
            "chainname": self.chain_name,
            "description": f"MultiChain {self.chain_name}",
            "protocol": "multichain",
            "port": 18571,
            "setupblocks": 60,
            "nodeaddress": f"{self.chain_name}@127.0.0.1:18571",
            "burnaddress": "1XXXXXXWiXXXXXXXDXXXXXXXWxXXXXXXTJunrL",
            "incomingpaused": False,
            "miningpaused": False,
            "offchainpaused": False,
            "walletversion": 60000,
            "balance": 0,
            "walletdbversion": 3,
            "reindex": False,
            "blocks": self.height,
            "chainrewards": 0,
            "streams": len(self.streams) + 1,
            "timeoffset": 0,
            "connections": 0,
            "proxy": "",
            "difficulty": 5.96046447753906e-8,
            "testnet": False,
            "keypoololdest": self.blocks[0].time,
            "keypoolsize": 2,
            "paytxfee": 0,
            "relayfee": 0,
            "errors": "",
        }

    def rpc_getruntimeparams(self) -> dict[str, Any]:
        return {
            "port": 18571, "reindex": False, "rescan": False, "txindex": True,
            "autocombineminconf": 1, "autocombinemininputs": 50, "autocombinemaxinputs": 100,
            "autocombinedelay": 1, "autocombinesuspend": 15, "autosubscribe": "",
            "handshakelocal": PUBLISHER, "bantx": "", "lockblock": "", "hideknownopdrops": False,
            "maxshowndata": self.maxshowndata, "maxqueryscanitems": 5000,
            "v1apicompatible": False, "miningrequirespeers": True, "mineemptyrounds": 10,
            "miningturnover": 0.5, "lockadminminerounds": 10, "gen": True, "genproclimit": 1,
            "lockinlinemetadata": True, "acceptfiltertimeout": 100, "sendfiltertimeout": 20,
            "debug": "",
        }  # fmt: skip

    def rpc_create(self, entity_type: str, name: str, open_: Any = False, *_: Any) -> str:
        if entity_type not in (
            "stream",
            "streamfilter",
            "txfilter",
            "upgrade",
            "variable",
            "library",
        ):
            raise RpcFault(-8, "Invalid entity type")  # not recorded
        if name in self.streams:
            raise RpcFault(-705, "Entity with this name already exists")
        txid = self._txid()
        self.streams[name] = _Stream(name, txid, bool(open_))
        self.pending.append(txid)
        return txid

    def rpc_subscribe(self, streams: Any, rescan: bool = True) -> None:
        for name in streams if isinstance(streams, list) else [streams]:
            self._stream(name).subscribed = True
        return None

    def rpc_publish(self, stream_name: str, keys: Any, data: Any, options: str = "") -> str:
        stream = self._stream(stream_name)
        key_list = keys if isinstance(keys, list) else [keys]
        for key in key_list:
            if len(str(key).encode()) > MAX_KEY_BYTES:
                raise RpcFault(-8, "Item key is too long")
        if isinstance(data, dict):
            unsupported = [k for k in data if k not in ("json", "text")]
            if unsupported or len(data) != 1:
                raise RpcFault(
                    -702, f"Unsupported item data type: {unsupported[0] if unsupported else ''}"
                )
        elif isinstance(data, str):
            try:
                bytes.fromhex(data)
            except ValueError as exc:
                raise RpcFault(
                    -702, "Item data should be hexadecimal string"
                ) from exc  # not recorded
        else:
            raise RpcFault(-702, "Unsupported item data type")  # not recorded
        item = _Item(self._txid(), [str(k) for k in key_list], data, int(time.time()))
        stream.items.append(item)
        self.items[item.txid] = (stream, item)
        self.pending.append(item)
        return item.txid

    def rpc_liststreamkeyitems(
        self,
        stream_name: str,
        key: str,
        verbose: bool = False,
        count: int = 10,
        start: int | None = None,
        local_ordering: bool = False,
    ) -> list[dict[str, Any]]:
        stream = self._readable(stream_name)
        matching = [item for item in stream.items if key in item.keys]
        return [self._item_json(item, bool(verbose)) for item in _window(matching, count, start)]

    def rpc_getstreamitem(
        self, stream_name: str, txid: str, verbose: bool = False
    ) -> dict[str, Any]:
        stream = self._readable(stream_name)
        found = self.items.get(txid)
        if found is None or found[0] is not stream:
            raise RpcFault(-710, "This transaction was not found in this stream")
        return self._item_json(found[1], bool(verbose))

    def rpc_gettxoutdata(
        self, txid: str, vout: int, count: int | None = None, start: int = 0
    ) -> Any:
        found = self.items.get(txid)
        if found is None or vout != 0:
            raise RpcFault(-5, "No information available about transaction")  # not recorded
        data = found[1].data
        fmt, size = self._size(data)
        if fmt in ("json", "text") and (start != 0 or (count is not None and count < size)):
            raise RpcFault(-8, "Invalid count, must include all text or JSON data")
        if fmt == "raw":
            offset = 2 * start
            return data[offset : offset + 2 * count] if count is not None else data[offset:]
        return data

    def rpc_liststreams(
        self, streams: Any = "*", verbose: bool = False, *_: Any
    ) -> list[dict[str, Any]]:
        if streams in ("*", None):
            selected = list(self.streams.values())
        else:
            selected = [
                self._stream(n) for n in (streams if isinstance(streams, list) else [streams])
            ]
        out = []
        for s in selected:
            keys = {k for item in s.items for k in item.keys}
            out.append({
                "name": s.name,
                "createtxid": s.createtxid,
                "streamref": None,
                "restrict": {"write": not s.open_write, "read": False, "onchain": False,
                             "offchain": False},
                "details": {},
                "subscribed": s.subscribed,
                "retrieve": s.subscribed,
                "canretrieve": True,
                "indexes": {"items": True, "keys": True, "publishers": True, "items-local": True,
                            "keys-local": True, "publishers-local": True},
                "synchronized": True,
                "items": len(s.items),
                "confirmed": sum(1 for i in s.items if i.height is not None),
                "keys": len(keys),
                "publishers": 1 if s.items else 0,
            })  # fmt: skip
        return out

    # -- emulator control ------------------------------------------------------------

    def rpc_emulator_mine(self, n: int = 1) -> int:
        """Mine `n` blocks; the first takes every pending item (2,000 fitted one real block)."""
        for _ in range(int(n)):
            height = self.height + 1
            block_hash = self._hash(f"{self.chain_name}/block/{height}/{time.time_ns()}")
            self.blocks.append(_Block(height, block_hash, int(time.time())))
            for index, tx in enumerate(self.pending, start=1):  # index 0 is the coinbase
                if isinstance(tx, _Item):
                    tx.height = height
                    tx.blockindex = index
            self.pending = []
        return self.height


def _window(items: list[Any], count: int, start: int | None) -> list[Any]:
    """MultiChain's count/start: default start is -count (the last `count` items)."""
    count = int(count)
    first = -count if start is None else int(start)
    if first < 0:
        first = max(0, len(items) + first)
    return items[first : first + count]


class MultiChainEmulator:
    """The emulator behind a real HTTP server (Basic auth, JSON-RPC 1.0) on a free port."""

    def __init__(
        self,
        *,
        user: str = "multichainrpc",
        password: str = "emulator-password",
        chain_name: str = "testchain",
        maxshowndata: int = DEFAULT_MAXSHOWNDATA,
    ) -> None:
        self.user = user
        self.password = password
        self.chain_name = chain_name
        self.state = MultiChainState(chain_name, maxshowndata=maxshowndata)
        self.requests_served = 0
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                emulator.requests_served += 1
                expected = (
                    "Basic "
                    + base64.b64encode(f"{emulator.user}:{emulator.password}".encode()).decode()
                )
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.headers.get("Authorization") != expected:
                    # Bitcoin-derived servers answer 401 with an empty body.
                    self._send(401, b"", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
                    return
                status, body = emulator.handle(raw)
                self._send(status, body)

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="multichain-emulator", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MultiChainEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mine(self, n: int = 1) -> int:
        """Mine `n` blocks (confirmations of every listed item go up by `n`)."""
        with self.state.lock:
            return self.state.rpc_emulator_mine(n)

    def handle(self, raw: bytes) -> tuple[int, bytes]:
        """One JSON-RPC request → (HTTP status, body) in the node's compact format."""
        try:
            request = json.loads(raw)
        except ValueError:
            return 500, _encode(
                {"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": 0}
            )
        request_id = request.get("id")
        if "chain_name" in request and request["chain_name"] != self.chain_name:
            # As the live node answers (test_emulator_and_live_node_agree): 400, id 0.
            error = {"code": -32600, "message": "Wrong chain name"}
            return 400, _encode({"result": None, "error": error, "id": 0})
        try:
            result = self.state.dispatch(
                str(request.get("method")), list(request.get("params") or [])
            )
        except RpcFault as fault:
            body = {
                "result": None,
                "error": {"code": fault.code, "message": fault.message},
                "id": request_id,
            }
            return fault.http_status, _encode(body)
        except TypeError as exc:  # wrong number of parameters
            body = {"result": None, "error": {"code": -1, "message": str(exc)}, "id": request_id}
            return 500, _encode(body)
        return 200, _encode({"result": result, "error": None, "id": request_id})


def _encode(body: dict[str, Any]) -> bytes:
    """Compact JSON plus a newline, as the recorded node writes it."""
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"
