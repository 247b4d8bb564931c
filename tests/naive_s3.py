"""A real, deliberately naive S3 server: it speaks enough S3 for boto3 but IGNORES
conditional headers (If-None-Match, If-Match), like the servers the write-once probe
must refuse. Not a mock object: a real HTTP server on a free port, in a thread.

Handles path-style PutObject, GetObject, HeadObject, DeleteObject, CreateBucket and
GetObjectLockConfiguration (answering "Enabled" when started with `object_lock=True`).
Every write is recorded in `writes`, so a test can see what a client wrote.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, decoding aws-chunked framing when botocore uses it."""
    if "chunked" in handler.headers.get("Transfer-Encoding", ""):
        raw = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            raw += handler.rfile.read(size)
            handler.rfile.readline()
    else:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    if "aws-chunked" in handler.headers.get("Content-Encoding", ""):
        out, rest = b"", raw
        while rest:
            line, rest = rest.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        return out
    return raw


class NaiveS3:
    def __init__(self, *, object_lock: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []
        self.object_lock = object_lock
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                xml = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
                self._send(status, xml, {"Content-Type": "application/xml"})

            def _target(self) -> tuple[str, str, dict[str, list[str]]]:
                url = urlparse(self.path)
                bucket, _, key = url.path.lstrip("/").partition("/")
                return bucket, key, parse_qs(url.query, keep_blank_values=True)

            def do_PUT(self) -> None:
                bucket, key, _query = self._target()
                body = _read_body(self)
                if not key:
                    self._send(200)
                    return
                server.objects[f"{bucket}/{key}"] = body  # no precondition is checked
                server.writes.append(key)
                etag = f'"{hashlib.md5(body).hexdigest()}"'
                self._send(200, headers={"ETag": etag})

            def do_GET(self) -> None:
                bucket, key, query = self._target()
                if not key and "object-lock" in query:
                    if server.object_lock:
                        xml = (
                            b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled"
                            b"</ObjectLockEnabled></ObjectLockConfiguration>"
                        )
                        self._send(200, xml, {"Content-Type": "application/xml"})
                    else:
                        self._error(404, "ObjectLockConfigurationNotFoundError")
                    return
                body = server.objects.get(f"{bucket}/{key}")
                if body is None:
                    self._error(404, "NoSuchKey")
                    return
                etag = f'"{hashlib.md5(body).hexdigest()}"'
                self._send(200, body, {"ETag": etag, "Content-Type": "application/octet-stream"})

            do_HEAD = do_GET

            def do_DELETE(self) -> None:
                bucket, key, _query = self._target()
                server.objects.pop(f"{bucket}/{key}", None)
                self._send(204)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> NaiveS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
