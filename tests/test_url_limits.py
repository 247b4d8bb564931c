"""URL ingestion limits (storage/sources.py `fetch_url`, `FetchLimits`) against a real
local HTTP server that misbehaves on purpose: oversized and endless bodies, trickling
bytes, redirect chains to other schemes and to private addresses, and Retry-After hours.

Each test fails when its defence is removed: without the size cap the body is read in
full, without the deadline the trickle runs to the test timeout, without the redirect
policy the request reaches the loopback target, without the Retry-After cap the retry
waits two hours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from storage.sources import FetchLimits, SourceError, _check_redirect, fetch_url
from streamnotary.config import load_settings

BODY = b"x" * 5_000


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        path = self.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/ok":
            self._send(200, BODY)
        elif path == "/announced-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(BODY)
        elif path == "/endless":  # no length, close-delimited: streams until the client stops
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"y" * 65536)
            except OSError:
                return
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                return
        elif path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", f"/loop{self.hits[path]}x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/busy":  # asks for two hours once, then answers
            if self.hits[path] == 1:
                self.send_response(503)
                self.send_header("Retry-After", "7200")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, BODY)
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# Tests on a loopback server need the setting that allows private redirect targets.
LOCAL = FetchLimits(allow_private_redirects=True)


def test_a_normal_answer_is_read(server: str) -> None:
    assert fetch_url(f"{server}/ok", limits=LOCAL) == BODY


def test_body_size_is_capped(server: str) -> None:
    small = FetchLimits(max_bytes=1_000, allow_private_redirects=True)
    with pytest.raises(SourceError, match="url_max_bytes"):
        fetch_url(f"{server}/ok", limits=small)
    with pytest.raises(SourceError, match="exceeds url_max_bytes"):
        fetch_url(f"{server}/announced-huge", limits=LOCAL)
    started = time.monotonic()
    with pytest.raises(SourceError, match="exceeds url_max_bytes"):
        fetch_url(f"{server}/endless", limits=FetchLimits(max_bytes=1 << 20))
    assert time.monotonic() - started < 10


def test_overall_deadline_stops_a_trickling_server(server: str) -> None:
    limits = FetchLimits(deadline_seconds=1.0, allow_private_redirects=True)
    started = time.monotonic()
    with pytest.raises(SourceError, match="deadline"):
        fetch_url(f"{server}/trickle", limits=limits)
    assert time.monotonic() - started < 5  # per-read timeouts alone would allow 8+ hours


def test_redirect_to_loopback_is_refused_unless_allowed(server: str) -> None:
    target = f"{server}/ok"
    _Hostile.hits.pop("/ok", None)
    with pytest.raises(SourceError, match="not a public address"):
        fetch_url(f"{server}/redirect?to={target}", limits=FetchLimits())
    assert "/ok" not in _Hostile.hits  # the private target was never contacted
    assert fetch_url(f"{server}/redirect?to={target}", limits=LOCAL) == BODY


def test_redirect_to_another_scheme_is_refused(server: str) -> None:
    for target in ("file:///etc/passwd", "ftp://example.org/x", "gopher://127.0.0.1/"):
        with pytest.raises(SourceError, match="refused"):
            fetch_url(f"{server}/redirect?to={target}", limits=LOCAL)


def test_redirect_chains_are_bounded(server: str) -> None:
    limits = FetchLimits(max_redirects=3, allow_private_redirects=True)
    with pytest.raises(SourceError, match="more than 3 redirects"):
        fetch_url(f"{server}/loop", limits=limits)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("http://a.example/x", "https://93.184.216.34/y", True),  # upgrade, public address
        ("https://a.example/x", "https://93.184.216.34/y", True),
        ("https://a.example/x", "http://93.184.216.34/y", False),  # downgrade
        ("https://a.example/x", "https://127.0.0.1/y", False),
        ("https://a.example/x", "https://10.1.2.3/y", False),
        ("https://a.example/x", "https://169.254.169.254/latest/meta-data", False),
        ("https://a.example/x", "https://100.64.0.1/y", False),  # carrier-grade NAT
        ("https://a.example/x", "https://[::1]/y", False),
        ("https://a.example/x", "https://[::ffff:127.0.0.1]/y", False),
        ("https://a.example/x", "https://[fe80::1]/y", False),
        ("https://a.example/x", "https://0.0.0.0/y", False),
        ("https://a.example/x", "https:///no-host", False),
    ],
)
def test_redirect_policy(source: str, target: str, allowed: bool) -> None:
    if allowed:
        _check_redirect(source, target, FetchLimits())
    else:
        with pytest.raises(SourceError):
            _check_redirect(source, target, FetchLimits())


def test_retry_after_is_capped(server: str) -> None:
    limits = FetchLimits(retry_after_cap_seconds=0.2, allow_private_redirects=True)
    started = time.monotonic()
    assert fetch_url(f"{server}/busy", limits=limits) == BODY
    assert _Hostile.hits["/busy"] == 2
    assert time.monotonic() - started < 5  # the server asked for 7200 s


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMNOTARY_URL_MAX_BYTES", "123")
    monkeypatch.setenv("STREAMNOTARY_URL_ALLOW_PRIVATE_REDIRECTS", "true")
    monkeypatch.setenv("STREAMNOTARY_URL_RETRY_AFTER_CAP_SECONDS", "7.5")
    monkeypatch.setenv("STREAMNOTARY_DWD_MAX_LINE_CHARS", "99")
    settings = load_settings()
    limits = FetchLimits.from_settings(settings)
    assert (limits.max_bytes, limits.allow_private_redirects) == (123, True)
    assert limits.retry_after_cap_seconds == 7.5
    assert settings.dwd_limits.max_line_chars == 99
    assert FetchLimits.from_settings(load_settings(url_allow_private_redirects="0")) == (
        FetchLimits(123, retry_after_cap_seconds=7.5)
    )
