"""Live observation sources: DWD open data archives and the Bright Sky JSON API.

Both run their real network code path through `requests` (timeouts, retries on connection
errors and on 429/5xx answers via urllib3's `Retry`). Neither service is reachable from the
build machines, so the tests serve recorded-format responses from a local HTTP server and
point `base_url` at it.

* `fetch_dwd_archive` downloads the zip archive DWD publishes per station
  (``stundenwerte_TU_<id>_akt.zip`` and the 10-minute ``10minutenwerte_TU_<id>_akt.zip``);
  `tasks.dwd.read_observations` reads it.
* `fetch_brightsky_observations` asks Bright Sky's ``GET /weather`` for one DWD station and
  a time span and converts its records to `Observation`s. Bright Sky writes temperatures as
  JSON numbers in °C; they are parsed as decimal text (never as floats) and rounded half to
  even to tenths, so ``8.7`` becomes exactly 87 tenths.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from io import BytesIO
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tasks.record import Observation, RecordRejected, validate

DWD_BASE_URL = "https://opendata.dwd.de/climate_environment/CDC/observations_germany/climate"
BRIGHTSKY_BASE_URL = "https://api.brightsky.dev"
TIMEOUT = (5.0, 60.0)  # connect, read (seconds): archives are a few MB
RETRIES = 4
BACKOFF_SECONDS = 0.5

# Bright Sky does not publish DWD's per-row quality level (QN_9); its records are the
# "recent"/"current" DWD releases, i.e. at least formally controlled, which is level 1.
BRIGHTSKY_QUALITY_LEVEL = 1
_OBSERVATION_TYPES = frozenset({"historical", "current", "synop"})
_TENTH = Decimal("0.1")

_PRODUCTS = {
    "hourly": ("hourly/air_temperature", "stundenwerte_TU"),
    "10_minutes": ("10_minutes/air_temperature", "10minutenwerte_TU"),
}
_PERIOD_SUFFIX = {"recent": "akt", "now": "now"}


class SourceError(RuntimeError):
    """A live source could not be reached or answered something unusable."""


def retrying_session(
    retries: int = RETRIES, backoff_seconds: float = BACKOFF_SECONDS
) -> requests.Session:
    """A session that retries connection errors, read errors and 429/5xx answers (GET only)."""
    s = requests.Session()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff_seconds,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def _session(session: requests.Session | None) -> requests.Session:
    """The caller's session (its retry policy is the caller's), or a `retrying_session`."""
    return session if session is not None else retrying_session()


def _get(session: requests.Session | None, url: str, **kwargs: Any) -> requests.Response:
    s = _session(session)
    try:
        response = s.get(url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise SourceError(f"GET {url} failed: {exc}") from exc
    finally:
        if session is None:
            s.close()
    if response.status_code != 200:
        raise SourceError(f"GET {response.url} answered HTTP {response.status_code}")
    return response


def fetch_url(url: str, *, session: requests.Session | None = None) -> bytes:
    """GET `url` with timeouts and retries (connection errors, 429/5xx); raise `SourceError`."""
    return _get(session, url).content


def dwd_archive_url(
    station_id: str,
    *,
    resolution: str = "hourly",
    period: str = "recent",
    base_url: str = DWD_BASE_URL,
) -> str:
    """URL of DWD's per-station archive for `resolution` ("hourly", "10_minutes")."""
    if resolution not in _PRODUCTS:
        raise ValueError(f"resolution must be one of {sorted(_PRODUCTS)}, got {resolution!r}")
    if period not in _PERIOD_SUFFIX:
        raise ValueError(f"period must be one of {sorted(_PERIOD_SUFFIX)}, got {period!r}")
    if not (len(station_id) == 5 and station_id.isdigit()):
        raise ValueError(f"station id must be 5 digits, got {station_id!r}")
    folder, prefix = _PRODUCTS[resolution]
    name = f"{prefix}_{station_id}_{_PERIOD_SUFFIX[period]}.zip"
    return f"{base_url.rstrip('/')}/{folder}/{period}/{name}"


def fetch_dwd_archive(
    station_id: str,
    *,
    resolution: str = "hourly",
    period: str = "recent",
    base_url: str = DWD_BASE_URL,
    session: requests.Session | None = None,
) -> bytes:
    """Download the station's DWD zip archive and return its bytes (checked to be a zip)."""
    url = dwd_archive_url(station_id, resolution=resolution, period=period, base_url=base_url)
    data = fetch_url(url, session=session)
    if not zipfile.is_zipfile(BytesIO(data)):
        raise SourceError(f"{url} did not return a zip archive ({len(data)} bytes)")
    return data


def _utc_text(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"time must be aware, got naive {t.isoformat()}")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _tenths(value: Any, field: str) -> int | None:
    """Exact tenths of a JSON number parsed as Decimal (half-even rounding to 0.1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise RecordRejected(f"bad_{field}", f"{field} is not a number: {value!r}")
    try:
        return int(Decimal(value).quantize(_TENTH, rounding=ROUND_HALF_EVEN) * 10)
    except InvalidOperation as exc:
        raise RecordRejected(f"bad_{field}", f"{field} {value!r}: {exc}") from exc


def brightsky_observations(document: dict[str, Any], station_id: str) -> Iterator[Observation]:
    """Observations of `station_id` in a decoded Bright Sky ``/weather`` answer.

    Numbers must have been decoded with ``parse_float=Decimal``. Records of other sources
    (Bright Sky may mix in nearby stations) and forecast sources are left out; a record
    that cannot be canonicalized raises `RecordRejected`.
    """
    sources = {
        s["id"]: s
        for s in document.get("sources", [])
        if s.get("dwd_station_id") == station_id
        and s.get("observation_type", "historical") in _OBSERVATION_TYPES
    }
    for record in document.get("weather", []):
        if record.get("source_id") not in sources:
            continue
        try:
            observed_at = datetime.fromisoformat(record["timestamp"]).astimezone(UTC)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordRejected("bad_timestamp", f"{record.get('timestamp')!r}") from exc
        if observed_at.tzinfo is None:
            raise RecordRejected("naive_timestamp", record["timestamp"])
        yield validate(
            Observation(
                station_id=station_id,
                observed_at=observed_at,
                temperature_tenths=_tenths(record.get("temperature"), "temperature"),
                humidity_tenths=_tenths(record.get("relative_humidity"), "relative_humidity"),
                quality_level=BRIGHTSKY_QUALITY_LEVEL,
            )
        )


def fetch_brightsky_observations(
    station_id: str,
    start: datetime,
    end: datetime,
    *,
    base_url: str = BRIGHTSKY_BASE_URL,
    session: requests.Session | None = None,
) -> list[Observation]:
    """Observations of DWD station `station_id` from Bright Sky for [start, end]."""
    params = {"date": _utc_text(start), "last_date": _utc_text(end), "dwd_station_id": station_id}
    response = _get(session, f"{base_url.rstrip('/')}/weather", params=params)
    try:
        document = json.loads(response.content.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"Bright Sky answer is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SourceError("Bright Sky answer is not a JSON object")
    return list(brightsky_observations(document, station_id))
