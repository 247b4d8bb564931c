"""A JSON-RPC relay in front of a real node that behaves like a hosted provider.

Hosted EVM endpoints differ from a local anvil in two ways the ledger must survive: they
put the API key in the URL path (``https://provider/v3/<key>``), and they refuse
``eth_getLogs`` over more than N blocks (error -32005, "query exceeds max block range").
The relay accepts any path, forwards every request byte for byte to the real node, and
refuses only over-wide ``eth_getLogs`` ranges with the provider's error; it records the
ranges it saw so a test can check the client's chunking.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class RangeLimitedRelay:
    upstream: str
    max_blocks: int
    port: int = 0
    log_ranges: list[tuple[int, int]] = field(default_factory=list)
    refused: int = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _head(self) -> int:
        doc = requests.post(
            self.upstream,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=10,
        ).json()
        return int(doc["result"], 16)

    def _block(self, tag: Any) -> int:
        if isinstance(tag, str) and tag.startswith("0x"):
            return int(tag, 16)
        return 0 if tag in (None, "earliest") else self._head()

    def answer(self, body: bytes) -> bytes:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("method") == "eth_getLogs":
            flt = doc["params"][0]
            lo, hi = self._block(flt.get("fromBlock")), self._block(flt.get("toBlock"))
            self.log_ranges.append((lo, hi))
            if hi - lo + 1 > self.max_blocks:
                self.refused += 1
                error = {
                    "code": -32005,
                    "message": f"query exceeds max block range {self.max_blocks}",
                }
                return json.dumps({"jsonrpc": "2.0", "id": doc.get("id"), "error": error}).encode()
        resp = requests.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        return resp.content


@contextmanager
def range_limited_relay(upstream: str, max_blocks: int) -> Iterator[RangeLimitedRelay]:
    relay = RangeLimitedRelay(upstream, max_blocks)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            out = relay.answer(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    relay.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        server.shutdown()
        server.server_close()
