"""Fixed-schema fast decoder for canonical record bytes (the only form the producer writes).

`tasks.record.decode_record` is the general decoder: it accepts any I-JSON text of the
record schema (any key order, whitespace, escapes) and gives a verdict on every input,
however hostile. It parses JSON into a dict first, which makes decoding the pipeline's
most expensive step per message (~35-45k messages/s). But every message our producer
writes is exactly the RFC 8785 form of the record (`tasks.record.canonical_bytes`):
keys in one order, no whitespace, integers in shortest form. `decode_canonical` reads
that one byte layout with a single regular expression and returns `None` ("unsure")
for anything else, so the caller falls back to the general decoder:

    record = decode_canonical(data)
    if record is None:
        record = decode_record(data)   # verdict on every other input

The fast path returns an `Observation` only when the general path would return an equal
one; it never rejects. tests/test_record_fast.py checks that with property-based tests
over canonical records, mutated records and arbitrary JSON of the record schema.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tasks.record import (
    HUMIDITY_TENTHS_RANGE,
    OBSERVED_AT_RANGE,
    QUALITY_LEVEL_RANGE,
    TEMPERATURE_TENTHS_RANGE,
    Observation,
)

# JSON integers in shortest form (RFC 8785 section 3.2.2.3): no leading zero, no "-0".
_INT = rb"0|-?[1-9][0-9]{0,3}"
_CANONICAL_RE = re.compile(
    rb'\{"observed_at":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})Z",'
    rb'"quality_level":([1-9]|10),'
    rb'"relative_humidity_pct_tenths":(null|' + _INT + rb"),"
    rb'"station_id":"([0-9]{5})",'
    rb'"temperature_c_tenths":(null|' + _INT + rb")\}"
)
_match = _CANONICAL_RE.fullmatch

# Many stations share each timestamp: parse each timestamp text once. Bounded like the
# prefix cache of tasks.record: cleared when it grows large, which changes no result.
_TIMES: dict[bytes, datetime | None] = {}
_TIMES_LIMIT = 1 << 17


def _time_of(text: bytes) -> datetime | None:
    """UTC datetime of ``YYYY-MM-DDTHH:MM:SS`` (already pattern-checked), None if invalid."""
    try:
        t = datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return t if OBSERVED_AT_RANGE[0] <= t < OBSERVED_AT_RANGE[1] else None


def decode_canonical(data: object) -> Observation | None:
    """The record of canonical record bytes; `None` if `data` is anything else.

    `None` is no verdict: the caller must use `tasks.record.decode_record`, which
    accepts the other valid spellings and names the reason of every rejection.
    """
    if type(data) is not bytes:
        return None
    m = _match(data)
    if m is None:
        return None
    stamp, quality, humidity, station, temperature = m.groups()
    t = _TIMES.get(stamp)
    if t is None:
        if len(_TIMES) >= _TIMES_LIMIT:
            _TIMES.clear()
        t = _TIMES[stamp] = _time_of(stamp)
        if t is None:
            return None
    h = None if humidity == b"null" else int(humidity)
    if h is not None and not HUMIDITY_TENTHS_RANGE[0] <= h <= HUMIDITY_TENTHS_RANGE[1]:
        return None
    tt = None if temperature == b"null" else int(temperature)
    if tt is not None and not TEMPERATURE_TENTHS_RANGE[0] <= tt <= TEMPERATURE_TENTHS_RANGE[1]:
        return None
    q = int(quality)
    if not QUALITY_LEVEL_RANGE[0] <= q <= QUALITY_LEVEL_RANGE[1]:
        return None
    return Observation(station.decode("ascii"), t, tt, h, q)
