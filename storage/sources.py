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

import ipaddress
import json
import socket
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from io import BytesIO
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from storage.source_errors import SourceError, SourceUnavailable
from streamnotary.masking import mask_text, url_secrets
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


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """What one download may cost (settings `url_*`, docs/operations.md "Input limits").

    * `max_bytes`: the body is streamed and refused past this size (and at once when
      Content-Length announces more), so a hostile server cannot fill memory;
    * `deadline_seconds`: one overall budget for connecting, retrying, redirects and
      reading, so a server that trickles bytes cannot hold a run for hours;
    * `max_redirects`, and the redirect policy: a redirect keeps its scheme or upgrades
      http to https, and never leads to a loopback, link-local, private or otherwise
      non-global address unless `allow_private_redirects` (a server on the internet must
      not be able to point the worker at its own network: SSRF);
    * `retry_after_cap_seconds`: the longest Retry-After wait honoured (urllib3's
      `retry_after_max`); longer requests are shortened, and the deadline still holds.
    """

    max_bytes: int = 64 << 20
    deadline_seconds: float = 300.0
    max_redirects: int = 5
    allow_private_redirects: bool = False
    retry_after_cap_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> FetchLimits:
        return cls(
            max_bytes=settings.url_max_bytes,
            deadline_seconds=settings.url_deadline_seconds,
            max_redirects=settings.url_max_redirects,
            allow_private_redirects=settings.url_allow_private_redirects,
            retry_after_cap_seconds=settings.url_retry_after_cap_seconds,
        )


class _DeadlineRetry(Retry):
    """urllib3's `Retry`, also exhausted at a monotonic deadline, and never sleeping past it."""

    def __init__(self, *args: Any, deadline: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def new(self, **kwargs: Any) -> _DeadlineRetry:
        kwargs.setdefault("deadline", self.deadline)
        return super().new(**kwargs)

    def _remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or self._remaining() <= 0

    def get_backoff_time(self) -> float:
        return max(0.0, min(super().get_backoff_time(), self._remaining()))

    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else max(0.0, min(wait, self._remaining()))


def retrying_session(
    retries: int = RETRIES,
    backoff_seconds: float = BACKOFF_SECONDS,
    *,
    retry_after_cap_seconds: float = FetchLimits.retry_after_cap_seconds,
    deadline: float | None = None,
) -> requests.Session:
    """A session that retries connection errors, read errors and 429/5xx answers (GET only).

    Retry-After is honoured up to `retry_after_cap_seconds`; with `deadline` (a
    `time.monotonic()` value) no retry starts, and no wait lasts, past it.
    """
    s = requests.Session()
    retry = _DeadlineRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff_seconds,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        retry_after_max=retry_after_cap_seconds,
        deadline=deadline,
    )
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# connection refused, DNS failure, connect/read timeout, a cut transfer, 429/5xx after the
# session's own retries (RetryError): the host may be back later
_UNREACHABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.RetryError,
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_redirect(source: str, target: str, limits: FetchLimits) -> None:
    """Raise `SourceError` unless following `source` -> `target` is allowed (see FetchLimits)."""
    old, new = urlsplit(source), urlsplit(target)
    if new.scheme != old.scheme and (old.scheme, new.scheme) != ("http", "https"):
        raise SourceError(
            f"redirect from {old.scheme}:// to {new.scheme or '(none)'}:// refused "
            "(only the same scheme or an upgrade to https is followed)"
        )
    if not new.hostname:
        raise SourceError(f"redirect to {_safe_url(target)} names no host")
    if limits.allow_private_redirects:
        return
    try:
        infos = socket.getaddrinfo(new.hostname, new.port or _DEFAULT_PORTS.get(new.scheme, 443))
    except (OSError, UnicodeError) as exc:
        raise SourceError(f"redirect target {new.hostname} does not resolve: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise SourceError(
                f"redirect to {new.hostname} ({address}) refused: not a public address "
                "(setting url_allow_private_redirects allows it)"
            )


def _safe_url(url: str) -> str:
    """`url` without userinfo and query (they may carry credentials), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _get(
    session: requests.Session | None,
    url: str,
    limits: FetchLimits = FetchLimits(),
    **kwargs: Any,
) -> bytes:
    """GET `url` within `limits`; the body as bytes, or `SourceError` naming what failed."""
    deadline = time.monotonic() + limits.deadline_seconds
    s = session or retrying_session(
        retry_after_cap_seconds=limits.retry_after_cap_seconds, deadline=deadline
    )
    try:
        current = url
        for _hop in range(limits.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SourceUnavailable(
                    f"GET {_safe_url(url)}: deadline of {limits.deadline_seconds} s"
                )
            try:
                response = s.get(
                    current,
                    timeout=(min(TIMEOUT[0], remaining), min(TIMEOUT[1], remaining)),
                    allow_redirects=False,
                    stream=True,
                    headers={"Accept-Encoding": "identity"},
                    **kwargs,
                )
            except _UNREACHABLE as exc:
                detail = mask_text(str(exc), url_secrets(current))  # requests echoes the URL
                raise SourceUnavailable(f"GET {_safe_url(current)} failed: {detail}") from None
            except requests.RequestException as exc:  # invalid URL: retrying will not help
                detail = mask_text(str(exc), url_secrets(current))
                raise SourceError(f"GET {_safe_url(current)} failed: {detail}") from None
            with response:
                if response.status_code in _REDIRECTS and "Location" in response.headers:
                    target = urljoin(current, response.headers["Location"])
                    _check_redirect(current, target, limits)
                    current = target
                    kwargs.pop("params", None)  # the query belongs to the first URL only
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    raise SourceUnavailable(
                        f"GET {_safe_url(current)} answered HTTP {response.status_code}"
                    )
                if response.status_code != 200:
                    raise SourceError(
                        f"GET {_safe_url(current)} answered HTTP {response.status_code}"
                    )
                return _read_body(response, current, limits, deadline)
        raise SourceError(f"GET {_safe_url(url)}: more than {limits.max_redirects} redirects")
    finally:
        if session is None:
            s.close()


def _read_body(
    response: requests.Response, url: str, limits: FetchLimits, deadline: float
) -> bytes:
    """Stream the body, refusing it past `limits.max_bytes` or past the deadline."""
    declared = response.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limits.max_bytes:
        raise SourceError(
            f"GET {_safe_url(url)}: body of {declared} bytes exceeds url_max_bytes "
            f"({limits.max_bytes})"
        )
    body = bytearray()
    try:
        while chunk := response.raw.read1(1 << 16, decode_content=True):
            body += chunk
            if len(body) > limits.max_bytes:
                raise SourceError(
                    f"GET {_safe_url(url)}: body exceeds url_max_bytes ({limits.max_bytes})"
                )
            if time.monotonic() > deadline:
                raise SourceUnavailable(
                    f"GET {_safe_url(url)}: body not complete within the deadline of "
                    f"{limits.deadline_seconds} s ({len(body)} bytes read)"
                )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise SourceUnavailable(f"GET {_safe_url(url)}: reading the body failed: {exc}") from exc
    return bytes(body)


def fetch_url(
    url: str,
    *,
    session: requests.Session | None = None,
    limits: FetchLimits = FetchLimits(),
) -> bytes:
    """GET `url` with timeouts, retries (connection errors, 429/5xx) and `limits`.

    Raises `SourceError` for every failure: unreachable, HTTP error, too large, too slow,
    a refused redirect.
    """
    return _get(session, url, limits)


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
    limits: FetchLimits = FetchLimits(),
) -> bytes:
    """Download the station's DWD zip archive and return its bytes (checked to be a zip)."""
    url = dwd_archive_url(station_id, resolution=resolution, period=period, base_url=base_url)
    data = fetch_url(url, session=session, limits=limits)
    if not zipfile.is_zipfile(BytesIO(data)):
        raise SourceError(f"{_safe_url(url)} did not return a zip archive ({len(data)} bytes)")
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
        s["id"]
        for s in _objects(document, "sources")
        if s.get("dwd_station_id") == station_id
        and s.get("observation_type", "historical") in _OBSERVATION_TYPES
        and isinstance(s.get("id"), int | str)
    }
    for record in _objects(document, "weather"):
        source_id = record.get("source_id")
        if not isinstance(source_id, int | str) or source_id not in sources:
            continue
        stamp = record.get("timestamp")
        try:
            local = datetime.fromisoformat(stamp)  # type: ignore[arg-type]
            if local.tzinfo is None:  # astimezone() would take the worker's local time zone
                raise RecordRejected("naive_timestamp", f"{stamp!r:.80}")
            observed_at = local.astimezone(UTC)
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, RecordRejected):
                raise
            raise RecordRejected("bad_timestamp", f"{stamp!r:.80}") from exc
        yield validate(
            Observation(
                station_id=station_id,
                observed_at=observed_at,
                temperature_tenths=_tenths(record.get("temperature"), "temperature"),
                humidity_tenths=_tenths(record.get("relative_humidity"), "relative_humidity"),
                quality_level=BRIGHTSKY_QUALITY_LEVEL,
            )
        )


def _objects(document: dict[str, Any], member: str) -> list[dict[str, Any]]:
    """`document[member]` as a list of objects, or `SourceError` for any other shape."""
    items = document.get(member, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SourceError(f"Bright Sky answer: {member!r} is not a list of objects")
    return items


def fetch_brightsky_observations(
    station_id: str,
    start: datetime,
    end: datetime,
    *,
    base_url: str = BRIGHTSKY_BASE_URL,
    session: requests.Session | None = None,
    limits: FetchLimits = FetchLimits(),
) -> list[Observation]:
    """Observations of DWD station `station_id` from Bright Sky for [start, end]."""
    params = {"date": _utc_text(start), "last_date": _utc_text(end), "dwd_station_id": station_id}
    content = _get(session, f"{base_url.rstrip('/')}/weather", limits, params=params)
    try:
        document = json.loads(content.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"Bright Sky answer is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SourceError("Bright Sky answer is not a JSON object")
    return list(brightsky_observations(document, station_id))
