"""Observations and their canonical record form (schema `streamnotary.observation/1`).

An `Observation` is one station-hour (or station-10-minutes) of DWD air temperature and
relative humidity. Measured values are held as integer tenths, exactly as DWD publishes
them (one decimal), so no float ever enters a hash, a payload or an aggregate.

The canonical record is the RFC 8785 JSON of::

    {"observed_at": "2019-09-07T17:00:00Z", "quality_level": 3,
     "relative_humidity_pct_tenths": 890, "station_id": "00433",
     "temperature_c_tenths": 87}

with ``null`` for a missing value. `canonical_bytes` writes it with a fixed-schema encoder
that is proven byte-identical to the `rfc8785` package (tests/test_record.py), because
the generic encoder is the bottleneck of the pipeline (about 100k records/s).
See docs/schemas/observation.schema.json.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from tasks.canonical import nesting_depth

RECORD_SCHEMA = "streamnotary.observation/1"

STATION_ID_RE = re.compile(r"[0-9]{5}")  # use with fullmatch: `$` would accept "00433\n"
TEMPERATURE_TENTHS_RANGE = (-800, 650)  # -80.0 °C .. +65.0 °C: beyond any Earth surface record
HUMIDITY_TENTHS_RANGE = (0, 1000)  # 0 .. 100.0 %
QUALITY_LEVEL_RANGE = (1, 10)
OBSERVED_AT_RANGE = (
    datetime(1800, 1, 1, tzinfo=UTC),
    datetime(2200, 1, 1, tzinfo=UTC),
)
MAX_DETAIL_CHARS = 300
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # fullmatch


class RecordRejected(ValueError):
    """A record cannot be canonicalized; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        if len(detail) > MAX_DETAIL_CHARS:  # details quote input: keep quarantine docs small
            detail = detail[:MAX_DETAIL_CHARS] + "..."
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Not frozen, by measure, like `tasks.message.SourceMessage`: one per record.
@dataclass(slots=True, unsafe_hash=True)
class Observation:
    """One DWD observation. Values are integer tenths; `None` means missing (-999)."""

    station_id: str
    observed_at: datetime
    temperature_tenths: int | None
    humidity_tenths: int | None
    quality_level: int

    @property
    def temperature_c(self) -> Decimal | None:
        """Air temperature at 2 m in °C, exact to DWD's one decimal."""
        return None if self.temperature_tenths is None else Decimal(self.temperature_tenths) / 10

    @property
    def relative_humidity_pct(self) -> Decimal | None:
        """Relative humidity in %, exact to one decimal."""
        return None if self.humidity_tenths is None else Decimal(self.humidity_tenths) / 10

    @property
    def key(self) -> tuple[str, datetime]:
        """The identity of the observation: one value per station and timestamp."""
        return (self.station_id, self.observed_at)


def validate(obs: Observation) -> Observation:
    """Return `obs` if it can be canonicalized, else raise `RecordRejected` with a reason."""
    if not isinstance(obs.station_id, str) or not STATION_ID_RE.fullmatch(obs.station_id):
        raise RecordRejected(
            "bad_station_id", f"station id must be 5 digits, got {obs.station_id!r}"
        )
    ts = obs.observed_at
    if not isinstance(ts, datetime):
        raise RecordRejected("bad_timestamp", f"observed_at is not a datetime: {ts!r}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RecordRejected("naive_timestamp", f"observed_at has no time zone: {ts.isoformat()}")
    if ts.utcoffset().total_seconds() != 0 or ts.tzinfo is not UTC:
        raise RecordRejected("non_utc_timestamp", f"observed_at must be UTC: {ts.isoformat()}")
    if ts.microsecond:
        raise RecordRejected("bad_timestamp", f"observed_at has sub-second part: {ts.isoformat()}")
    if not OBSERVED_AT_RANGE[0] <= ts < OBSERVED_AT_RANGE[1]:
        raise RecordRejected("out_of_range", f"observed_at outside 1800..2200: {ts.isoformat()}")
    _check_tenths("temperature", obs.temperature_tenths, TEMPERATURE_TENTHS_RANGE)
    _check_tenths("relative_humidity", obs.humidity_tenths, HUMIDITY_TENTHS_RANGE)
    q = obs.quality_level
    if type(q) is not int or not QUALITY_LEVEL_RANGE[0] <= q <= QUALITY_LEVEL_RANGE[1]:
        raise RecordRejected("bad_quality_level", f"quality level must be 1..10, got {q!r}")
    return obs


def _check_tenths(name: str, value: int | None, bounds: tuple[int, int]) -> None:
    if value is None:
        return
    if type(value) is not int:
        raise RecordRejected(f"bad_{name}", f"{name} must be integer tenths, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise RecordRejected(
            "out_of_range",
            f"{name} {value / 10} outside physical range {bounds[0] / 10}..{bounds[1] / 10}",
        )


_RECORD_FORMAT = (
    '{"observed_at":"%.19sZ","quality_level":%d,"relative_humidity_pct_tenths":%s,'
    '"station_id":"%s","temperature_c_tenths":%s}'
)
# observed_at -> b'{"observed_at":"YYYY-MM-DDTHH:MM:SSZ","quality_level":'. Many stations
# share each hour, so the record prefix of a timestamp is computed once and reused; the cache
# is dropped when it grows large, which bounds memory without changing any output.
_TIMESTAMP_PREFIX: dict[datetime, bytes] = {}
_TIMESTAMP_CACHE_LIMIT = 1 << 17


def _prefix(ts: datetime) -> bytes:
    """The record bytes up to the quality level's value: `observed_at` is the first key."""
    return b'{"observed_at":"%sZ","quality_level":' % ts.isoformat()[:19].encode("ascii")


def _cached_prefix(ts: datetime) -> bytes:
    """`_prefix(ts)` through the bounded process-wide cache."""
    prefix = _TIMESTAMP_PREFIX.get(ts)
    if prefix is None:
        if len(_TIMESTAMP_PREFIX) >= _TIMESTAMP_CACHE_LIMIT:
            _TIMESTAMP_PREFIX.clear()
        prefix = _TIMESTAMP_PREFIX[ts] = _prefix(ts)
    return prefix


def _pieces(template: str, lo_hi: tuple[int, int], null: bool) -> dict[int | None, bytes]:
    """`template % value` as bytes for each valid integer (and `null` for None if allowed)."""
    table: dict[int | None, bytes] = {
        v: (template % v).encode("ascii") for v in range(lo_hi[0], lo_hi[1] + 1)
    }
    if null:
        table[None] = (template % "null").encode("ascii")
    return table


# Every other field is a small integer (or null), so the text of each value *with the key that
# follows it* is a precomputed table entry, and a record is five pieces joined. The tables hold
# exactly the valid ranges: any other value misses and takes `_formatted`, the plain encoder.
_QUALITY_PIECE = _pieces('%d,"relative_humidity_pct_tenths":', QUALITY_LEVEL_RANGE, null=False)
_HUMIDITY_PIECE = _pieces('%s,"station_id":"', HUMIDITY_TENTHS_RANGE, null=True)
_TEMPERATURE_PIECE = _pieces('","temperature_c_tenths":%s}', TEMPERATURE_TENTHS_RANGE, null=True)
_join = b"".join


def canonical_bytes(obs: Observation) -> bytes:
    """RFC 8785 bytes of the record, by a fixed-schema encoder (keys already sorted).

    Precondition: `obs` passed `validate`: every string is ASCII digits and punctuation, so
    no JSON escaping is ever needed; numbers are integers, which RFC 8785 writes exactly as
    Python's `%d` does; `observed_at` is UTC without sub-seconds, so the first 19 characters
    of its ISO form are the canonical text (years 1800..2199 are always four digits).
    tests/test_record.py proves the result byte-identical to `rfc8785.dumps`.
    """
    ts = obs.observed_at
    prefix = _cached_prefix(ts)
    try:
        return _join(
            (
                prefix,
                _QUALITY_PIECE[obs.quality_level],
                _HUMIDITY_PIECE[obs.humidity_tenths],
                obs.station_id.encode("ascii"),
                _TEMPERATURE_PIECE[obs.temperature_tenths],
            )
        )
    except (KeyError, TypeError, AttributeError):
        return _formatted(obs)


def _formatted(obs: Observation) -> bytes:
    """The same bytes by plain `%`-formatting: the path of values outside the piece tables."""
    h = obs.humidity_tenths
    t = obs.temperature_tenths
    return (
        _RECORD_FORMAT
        % (
            obs.observed_at.isoformat(),
            obs.quality_level,
            "null" if h is None else h,
            obs.station_id,
            "null" if t is None else t,
        )
    ).encode("ascii")


# Identities of a batch are integers `timestamp number * _STATION_STRIDE + station number`
# (numbers in order of first appearance), unique while a batch has at most this many
# stations (validated ids are 5 digits: at most 100,000; beyond, the batch falls back to
# `Observation.key` tuples). An odd stride spreads the blocks
# of consecutive identities over a hash table, so a dict of them stays cache-friendly.
_STATION_STRIDE = 100_003


_key = attrgetter("station_id", "observed_at")


def canonical_leaves(records: list[Observation]) -> tuple[list[bytes], list[Hashable]]:
    """`canonical_bytes` of every record, plus an integer identity per record.

    Two records of the batch have equal identities iff they have equal
    `(station_id, observed_at)`: the identities stand in for `Observation.key` in
    deduplication, where hashing a million aware datetimes (a fresh object per decoded
    message, so never a cached hash) was a third of the work. Here a timestamp is hashed
    only when it differs from the previous record's (arrival order is nearly time order),
    and each record is joined from the same pieces as `canonical_bytes`.
    """
    leaves: list[bytes] = []
    identities: list[Hashable] = []
    add_leaf = leaves.append
    add_identity = identities.append
    prefixes: dict[datetime, tuple[bytes, int]] = {}
    stations: dict[str, tuple[bytes, int]] = {}
    quality_piece = _QUALITY_PIECE
    humidity_piece = _HUMIDITY_PIECE
    temperature_piece = _TEMPERATURE_PIECE
    join = _join
    cached_prefix = _cached_prefix
    stride = _STATION_STRIDE
    too_many_stations = False
    last_ts: datetime | None = None
    prefix = b""
    base = 0
    for obs in records:
        ts = obs.observed_at
        if ts != last_ts:
            known = prefixes.get(ts)
            if known is None:  # every station's window of a day has the same hours
                known = prefixes[ts] = (cached_prefix(ts), len(prefixes) * stride)
            prefix, base = known
            last_ts = ts
        station = obs.station_id
        known_station = stations.get(station)
        if known_station is None:
            if len(stations) == stride:
                too_many_stations = True
            known_station = stations[station] = (station.encode("ascii"), len(stations))
        try:
            leaf = join(
                (
                    prefix,
                    quality_piece[obs.quality_level],
                    humidity_piece[obs.humidity_tenths],
                    known_station[0],
                    temperature_piece[obs.temperature_tenths],
                )
            )
        except (KeyError, TypeError):
            leaf = _formatted(obs)
        add_leaf(leaf)
        add_identity(base + known_station[1])
    if too_many_stations:  # not a validated batch: identities could collide, use the keys
        return leaves, list(map(_key, records))
    return leaves, identities


def to_json_value(obs: Observation) -> dict[str, Any]:
    """The record as a JSON-compatible dict (the canonical form before serialization)."""
    return {
        "observed_at": obs.observed_at.strftime(_TIMESTAMP_FORMAT),
        "quality_level": obs.quality_level,
        "relative_humidity_pct_tenths": obs.humidity_tenths,
        "station_id": obs.station_id,
        "temperature_c_tenths": obs.temperature_tenths,
    }


_FIELDS = frozenset(
    (
        "observed_at",
        "quality_level",
        "relative_humidity_pct_tenths",
        "station_id",
        "temperature_c_tenths",
    )
)


def parse_timestamp(text: str) -> datetime:
    """Parse the canonical `YYYY-MM-DDTHH:MM:SSZ` form (nothing else is accepted)."""
    if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
        raise RecordRejected("bad_timestamp", f"expected YYYY-MM-DDTHH:MM:SSZ, got {text!r}")
    try:  # the pattern guarantees ASCII digits at fixed places: no strptime needed
        return datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise RecordRejected("bad_timestamp", f"{text!r}: {exc}") from exc


def from_json_value(value: Any) -> Observation:
    """Build and validate an Observation from a decoded canonical-schema JSON object."""
    if not isinstance(value, dict):
        raise RecordRejected("not_an_object", f"expected a JSON object, got {type(value).__name__}")
    missing = _FIELDS - value.keys()
    if missing:
        raise RecordRejected("missing_field", f"missing field(s): {', '.join(sorted(missing))}")
    extra = value.keys() - _FIELDS
    if extra:
        raise RecordRejected("unknown_field", f"unknown field(s): {sorted(extra)!r}")
    obs = Observation(
        station_id=value["station_id"],
        observed_at=parse_timestamp(value["observed_at"]),
        temperature_tenths=value["temperature_c_tenths"],
        humidity_tenths=value["relative_humidity_pct_tenths"],
        quality_level=value["quality_level"],
    )
    return validate(obs)


# Limits of a record as produced to Kafka. A canonical record is about 140 bytes and one
# flat object, so these bound hostile input long before they touch a valid one.
MAX_RECORD_BYTES = 4096
MAX_JSON_DEPTH = 4
# RFC 7493 (I-JSON) section 2.2: integers must be exactly representable as IEEE 754 doubles.
SAFE_INTEGER = 2**53 - 1
_SAFE_INTEGER_DIGITS = len(str(SAFE_INTEGER))
# C0 controls, DEL and C1 controls: legal inside a JSON string when escaped, never in a
# record, and a raw newline in a field would forge line structure in logs and reports.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# RFC 7493 section 2.1: no unpaired surrogates and no noncharacters.
_NOT_IJSON_RE = re.compile(r"[\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
# Text that could hold a non-I-JSON number or string: any escape, a long digit run, an
# exponent, NaN/Infinity, or a raw C1 control/noncharacter. Canonical records have none, so
# they take the fast parse (duplicate names are checked on both paths).
_NEEDS_STRICT_RE = re.compile(
    r"\\|[0-9]{16}|[0-9.][eE]|NaN|Infinity|[\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]"
)


def decode_record(data: bytes) -> Observation:
    """Decode record bytes as produced to Kafka (UTF-8 I-JSON, canonical schema).

    Every input gives an `Observation` or raises `RecordRejected` with a reason code
    (`too_large`, `not_utf8`, `too_deep`, `bad_json`, `duplicate_key`,
    `non_ijson_number`, `not_canonicalizable`, `control_character`, `not_ijson_string`,
    `missing_field`, ...; docs/formats.md lists them) so that the pipeline can
    quarantine the message: no input, however hostile, raises anything else. I-JSON
    (RFC 7493) is the profile RFC 8785 requires of its input: no duplicate member names
    (section 2.3), numbers within IEEE 754 double precision (section 2.2), no unpaired
    surrogates or noncharacters (section 2.1).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordRejected("not_bytes", f"record is {type(data).__name__}, not bytes")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordRejected(
            "too_large", f"record has {len(data)} bytes, the limit is {MAX_RECORD_BYTES}"
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordRejected("not_utf8", str(exc)) from exc
    if (text.count("{") > 1 or "[" in text) and nesting_depth(text) > MAX_JSON_DEPTH:
        raise RecordRejected("too_deep", f"JSON nesting deeper than {MAX_JSON_DEPTH}")
    strict = _NEEDS_STRICT_RE.search(text) is not None
    try:
        if strict:
            value = json.loads(
                text,
                object_pairs_hook=_ijson_object,
                parse_constant=_reject_constant,
                parse_int=_ijson_int,
                parse_float=_ijson_float,
            )
        else:
            value = json.loads(text, object_pairs_hook=_unique_object)
    except ValueError as exc:
        if isinstance(exc, RecordRejected):
            raise
        raise RecordRejected("bad_json", str(exc)) from exc
    return from_json_value(value)


def _check_string(text: str, where: str) -> None:
    if _CONTROL_RE.search(text):
        raise RecordRejected("control_character", f"{where} holds a control character")
    if _NOT_IJSON_RE.search(text):
        raise RecordRejected(
            "not_ijson_string", f"{where} holds an unpaired surrogate or a noncharacter"
        )


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` of the fast path: refuse duplicate member names (RFC 7493 2.3)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        return _ijson_object(pairs)  # names the duplicate
    return value


def _ijson_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: refuse duplicate member names and bad strings (RFC 7493)."""
    value: dict[str, Any] = {}
    for k, v in pairs:
        if k in value:
            raise RecordRejected("duplicate_key", f"member name {_clip(k)!r} occurs twice")
        value[k] = v
        _check_string(k, "a member name")
        if isinstance(v, str):
            _check_string(v, f"member {_clip(k)!r}")
    return value


def _ijson_int(text: str) -> int:
    """`parse_int`: only integers a double holds exactly (also avoids int()'s digit limit)."""
    digits = text.lstrip("-")
    if len(digits) > _SAFE_INTEGER_DIGITS or abs(int(text)) > SAFE_INTEGER:
        raise RecordRejected(
            "non_ijson_number", f"integer {_clip(text)} is outside ±(2**53-1) (RFC 7493 2.2)"
        )
    return int(text)


def _ijson_float(text: str) -> float:
    """`parse_float`: a number that overflows a double (1e400) is not I-JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise RecordRejected(
            "non_ijson_number", f"number {_clip(text)} overflows a double (RFC 7493 2.2)"
        )
    return value


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(name: str) -> Any:
    raise RecordRejected("not_canonicalizable", f"{name} is not a JSON number")
