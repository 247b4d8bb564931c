"""Live sources (storage/sources.py) against a real local HTTP server serving recorded-format
answers: a DWD zip built from the real shared files, and the Bright Sky fixture."""

from __future__ import annotations

import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from storage.sources import (
    SourceError,
    dwd_archive_url,
    fetch_brightsky_observations,
    fetch_dwd_archive,
    retrying_session,
)
from tasks.dwd import read_observations
from tests.dwd_data import product_file, station_dir

SHARED = station_dir("00433")
BRIGHTSKY = Path(__file__).parent / "data" / "brightsky_weather_00433_20190907.json"
DWD_PATH = "/cdc/hourly/air_temperature/recent/stundenwerte_TU_00433_akt.zip"


def _dwd_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(SHARED.iterdir()):
            zf.write(f, f.name)
    return buf.getvalue()


class _Recorded(BaseHTTPRequestHandler):
    """Serves the recorded answers; `/flaky/...` fails with 503 on every first request."""

    routes: ClassVar[dict[str, tuple[str, bytes]]] = {}
    requests_seen: ClassVar[list[str]] = []
    flaky_hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/flaky/"):
            path = path.removeprefix("/flaky")
            self.flaky_hits[path] = self.flaky_hits.get(path, 0) + 1
            if self.flaky_hits[path] == 1:
                self.send_error(503)
                return
        if path.endswith("/weather"):
            q = parse_qs(url.query)
            if q.get("dwd_station_id") != ["00433"] or "date" not in q or "last_date" not in q:
                self.send_error(400)
                return
        if path not in self.routes:
            self.send_error(404)
            return
        ctype, body = self.routes[path]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _Recorded.routes = {
        DWD_PATH: ("application/zip", _dwd_zip()),
        "/cdc/hourly/air_temperature/recent/stundenwerte_TU_00427_akt.zip": (
            "text/html",
            b"<html>maintenance</html>",
        ),
        "/weather": ("application/json", BRIGHTSKY.read_bytes()),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorded)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_dwd_url_layout() -> None:
    base = "https://opendata.dwd.de/climate_environment/CDC/observations_germany/climate"
    assert dwd_archive_url("00433") == (
        f"{base}/hourly/air_temperature/recent/stundenwerte_TU_00433_akt.zip"
    )
    assert dwd_archive_url("00433", resolution="10_minutes", period="now") == (
        f"{base}/10_minutes/air_temperature/now/10minutenwerte_TU_00433_now.zip"
    )
    with pytest.raises(ValueError):
        dwd_archive_url("433")


def test_fetch_dwd_archive_reads_like_the_shared_file(server: str, tmp_path: Path) -> None:
    data = fetch_dwd_archive("00433", base_url=f"{server}/cdc")
    archive = tmp_path / "stundenwerte_TU_00433_akt.zip"
    archive.write_bytes(data)
    fetched = list(read_observations(archive))
    assert len(fetched) == 13_200
    assert fetched == list(read_observations(product_file("00433")))


def test_fetch_retries_a_503(server: str) -> None:
    before = len(_Recorded.requests_seen)
    data = fetch_dwd_archive("00433", base_url=f"{server}/flaky/cdc")
    assert zipfile.is_zipfile(io.BytesIO(data))
    assert len(_Recorded.requests_seen) - before == 2


def test_non_zip_and_missing_archives_are_errors(server: str) -> None:
    with pytest.raises(SourceError, match="zip"):
        fetch_dwd_archive("00427", base_url=f"{server}/cdc")
    with pytest.raises(SourceError, match="404"):
        fetch_dwd_archive("00001", base_url=f"{server}/cdc")


def test_connection_refused_is_a_source_error() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = retrying_session(retries=2, backoff_seconds=0.01)
    with pytest.raises(SourceError, match="Max retries exceeded"):
        fetch_dwd_archive("00433", base_url=f"http://127.0.0.1:{port}", session=session)


def test_brightsky_observations_are_exact_tenths(server: str) -> None:
    obs = fetch_brightsky_observations(
        "00433",
        datetime(2019, 9, 7, 12, tzinfo=UTC),
        datetime(2019, 9, 7, 20, tzinfo=UTC),
        base_url=server,
    )
    query = parse_qs(urlsplit(_Recorded.requests_seen[-1]).query)
    assert query["date"] == ["2019-09-07T12:00:00+00:00"]
    # the same hours read from the real DWD file
    dwd = {
        o.observed_at: o
        for o in read_observations(product_file("00433"))
        if datetime(2019, 9, 7, 12, tzinfo=UTC)
        <= o.observed_at
        <= datetime(2019, 9, 7, 20, tzinfo=UTC)
    }
    assert [o.observed_at for o in obs] == sorted(dwd)
    for o in obs:
        assert o.station_id == "00433"
        ref = dwd[o.observed_at]
        assert (o.temperature_tenths, o.humidity_tenths) == (
            ref.temperature_tenths,
            ref.humidity_tenths,
        )
    assert obs[-1].temperature_tenths is None  # 2019-09-07 20 UTC is -999 in DWD's file
    raw = json.loads(BRIGHTSKY.read_text())
    assert len(raw["weather"]) == len(obs) + 1  # the 00427 record was filtered out
