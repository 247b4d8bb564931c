"""Canonical record encoding and rejection reasons (tasks/record.py)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.record import (
    HUMIDITY_TENTHS_RANGE,
    OBSERVED_AT_RANGE,
    QUALITY_LEVEL_RANGE,
    TEMPERATURE_TENTHS_RANGE,
    Observation,
    RecordRejected,
    canonical_bytes,
    decode_record,
    from_json_value,
    to_json_value,
    validate,
)


def _maybe(lo: int, hi: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(lo, hi)


timestamps = st.datetimes(
    min_value=OBSERVED_AT_RANGE[0].replace(tzinfo=None),
    max_value=(OBSERVED_AT_RANGE[1] - timedelta(seconds=1)).replace(tzinfo=None),
).map(lambda t: t.replace(microsecond=0, tzinfo=UTC))

observations = st.builds(
    Observation,
    station_id=st.from_regex(r"\A[0-9]{5}\Z"),
    observed_at=timestamps,
    temperature_tenths=_maybe(*TEMPERATURE_TENTHS_RANGE),
    humidity_tenths=_maybe(*HUMIDITY_TENTHS_RANGE),
    quality_level=st.integers(*QUALITY_LEVEL_RANGE),
)

EXAMPLE = Observation("00433", datetime(2019, 9, 7, 17, tzinfo=UTC), -87, None, 3)


@settings(max_examples=100, deadline=None)
@given(observations)
def test_fast_encoder_is_byte_identical_to_rfc8785(obs: Observation) -> None:
    validate(obs)
    assert canonical_bytes(obs) == rfc8785.dumps(to_json_value(obs))
    assert decode_record(canonical_bytes(obs)) == obs


@pytest.mark.parametrize(
    "obs",
    [
        EXAMPLE,
        Observation("00000", OBSERVED_AT_RANGE[0], TEMPERATURE_TENTHS_RANGE[0], 0, 1),
        Observation(
            "99999",
            OBSERVED_AT_RANGE[1] - timedelta(seconds=1),
            TEMPERATURE_TENTHS_RANGE[1],
            HUMIDITY_TENTHS_RANGE[1],
            10,
        ),
        Observation("01234", datetime(2000, 2, 29, 23, 59, 59, tzinfo=UTC), 0, None, 5),
    ],
)
def test_edge_records_match_rfc8785(obs: Observation) -> None:
    assert canonical_bytes(validate(obs)) == rfc8785.dumps(to_json_value(obs))


def test_example_bytes() -> None:
    assert canonical_bytes(EXAMPLE) == (
        b'{"observed_at":"2019-09-07T17:00:00Z","quality_level":3,'
        b'"relative_humidity_pct_tenths":null,"station_id":"00433","temperature_c_tenths":-87}'
    )
    assert str(EXAMPLE.temperature_c) == "-8.7"
    assert EXAMPLE.relative_humidity_pct is None


def _doc(**changes: object) -> bytes:
    value = to_json_value(EXAMPLE)
    value.update(changes)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"observed_at": NaN}', "not_canonicalizable"),
        (_doc(temperature_c_tenths=math.nan), "not_canonicalizable"),
        (_doc(temperature_c_tenths=math.inf), "not_canonicalizable"),
        (_doc(relative_humidity_pct_tenths=-math.inf), "not_canonicalizable"),
        (_doc(temperature_c_tenths=8.7), "bad_temperature"),
        (_doc(relative_humidity_pct_tenths=890.0), "bad_relative_humidity"),
        (_doc(temperature_c_tenths=True), "bad_temperature"),
        (_doc(temperature_c_tenths="87"), "bad_temperature"),
        (_doc(temperature_c_tenths=651), "out_of_range"),
        (_doc(temperature_c_tenths=-801), "out_of_range"),
        (_doc(relative_humidity_pct_tenths=1001), "out_of_range"),
        (_doc(relative_humidity_pct_tenths=-1), "out_of_range"),
        (_doc(observed_at="1799-12-31T23:00:00Z"), "out_of_range"),
        (_doc(observed_at="2019-09-07T17:00:00"), "bad_timestamp"),
        (_doc(observed_at="2019-09-07T17:00:00+01:00"), "bad_timestamp"),
        (_doc(observed_at="2019-02-30T17:00:00Z"), "bad_timestamp"),
        (_doc(observed_at=1567875600), "bad_timestamp"),
        (_doc(quality_level=0), "bad_quality_level"),
        (_doc(quality_level=3.0), "bad_quality_level"),
        (_doc(station_id="433"), "bad_station_id"),
        (_doc(station_id=433), "bad_station_id"),
        (_doc(extra=1), "unknown_field"),
        (b'{"observed_at":"2019-09-07T17:00:00Z"}', "missing_field"),
        (b"[1, 2]", "not_an_object"),
        (b'{"observed_at": ', "bad_json"),
        (b"", "bad_json"),
        ('{"station_id": "0043\u00e9"}'.encode("latin-1"), "not_utf8"),
        (b"\xff\xfe{}", "not_utf8"),
    ],
)
def test_rejections_name_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RecordRejected) as info:
        decode_record(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("observed_at", "reason"),
    [
        (datetime(2019, 9, 7, 17), "naive_timestamp"),
        (datetime(2019, 9, 7, 18, tzinfo=timezone(timedelta(hours=1))), "non_utc_timestamp"),
        (datetime(2019, 9, 7, 19, tzinfo=ZoneInfo("Europe/Berlin")), "non_utc_timestamp"),
        (datetime(2019, 9, 7, 17, 0, 0, 5, tzinfo=UTC), "bad_timestamp"),
        ("2019-09-07T17:00:00Z", "bad_timestamp"),
        (datetime(2200, 1, 1, tzinfo=UTC), "out_of_range"),
    ],
)
def test_validate_rejects_bad_timestamps(observed_at: object, reason: str) -> None:
    with pytest.raises(RecordRejected) as info:
        validate(Observation("00433", observed_at, 1, 1, 3))  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_from_json_value_round_trip() -> None:
    assert from_json_value(to_json_value(EXAMPLE)) == EXAMPLE


@settings(max_examples=50, deadline=None)
@given(observations)
def test_documented_schema_accepts_every_canonical_record(obs: Observation) -> None:
    assert _VALIDATOR.is_valid(json.loads(canonical_bytes(obs)))


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_c_tenths": 651},
        {"relative_humidity_pct_tenths": 8.5},
        {"station_id": "433"},
        {"observed_at": "2019-09-07T17:00:00+00:00"},
        {"quality_level": 0},
        {"extra": 1},
    ],
)
def test_documented_schema_rejects_what_decode_rejects(change: dict) -> None:
    value = {**to_json_value(EXAMPLE), **change}
    assert not _VALIDATOR.is_valid(value)
    with pytest.raises(RecordRejected):
        from_json_value(value)


_VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(
        (
            Path(__file__).resolve().parent.parent / "docs/schemas/observation.schema.json"
        ).read_text()
    )
)
