"""A relay in front of a real MultiChain node that forgets a stream for a few calls.

MultiChain 2.3.3 answers -708 "Stream with this name not found" for a stream whose
``create`` is still unconfirmed while it connects a block (measured: 12 of 29,400 reads in
the first blocks after ``create``). That window is a few milliseconds wide and cannot be hit
on demand, so this relay reproduces it: it forwards every request byte for byte to the node,
except that the first `forget` calls *of each method* naming `stream` (other than its
``create``) get the node's own recorded -708 answer
(``tests/data/multichain/responses/09_err_liststreamkeyitems_unknown_stream``).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

RECORDED_708 = (
    Path(__file__).resolve().parent
    / "data"
    / "multichain"
    / "responses"
    / "09_err_liststreamkeyitems_unknown_stream.json"
)


class ForgetfulRelay:
    """Forwards to `upstream`; the first `forget` calls of each method naming `stream`
    answer -708."""

    def __init__(self, upstream: str, stream: str, forget: int) -> None:
        self.upstream = upstream
        self.stream = stream
        self.forget = forget
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._recorded = json.loads(RECORDED_708.read_bytes())
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, body = relay.answer(raw, self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, raw: bytes, authorization: str) -> tuple[int, bytes]:
        doc = json.loads(raw)
        if doc.get("method") != "create" and self.stream in doc.get("params", []):
            with self._lock:
                if self.refused[doc["method"]] < self.forget:
                    self.refused[doc["method"]] += 1
                    error = dict(self._recorded["error"])
                    error["message"] = f"Stream with this name not found: {self.stream}"
                    body = {"result": None, "error": error, "id": doc.get("id")}
                    return 500, json.dumps(body, separators=(",", ":")).encode()
        upstream = requests.post(
            self.upstream,
            data=raw,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
            timeout=30,
        )
        return upstream.status_code, upstream.content

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def forgetful_relay(upstream: str, stream: str, forget: int) -> Iterator[ForgetfulRelay]:
    relay = ForgetfulRelay(upstream, stream, forget)
    try:
        yield relay
    finally:
        relay.stop()
