"""Every Kafka message is a verdict (tasks/message.py `classify`, tasks/record.py).

Each case here is a message that once raised out of `classify` (and so wedged every later
anchor run on it) or was accepted although I-JSON / the producer contract forbids it. The
real-broker drill is tests/test_poison_messages.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.message import SourceMessage, classify, envelope_window
from tasks.record import (
    MAX_RECORD_BYTES,
    Observation,
    RecordRejected,
    canonical_bytes,
    decode_record,
    parse_timestamp,
    to_json_value,
    validate,
)
from tasks.window import WindowKey, WindowSpec, WindowSpecError

SPEC = WindowSpec(86_400)
OBS = Observation("00433", datetime(2019, 9, 7, 17, tzinfo=UTC), -87, 890, 3)
GOOD = canonical_bytes(OBS)
TS = int(OBS.observed_at.timestamp() * 1000)


def _msg(value: bytes | None = GOOD, key: bytes | None = b"00433", ts: int | None = TS):
    return SourceMessage("t", 0, 7, key, value, ts)


def _with(**changes: object) -> bytes:
    return json.dumps({**to_json_value(OBS), **changes}).encode()


def test_a_valid_message_is_a_record() -> None:
    c = classify(_msg(), SPEC)
    assert c.record == OBS and c.window == SPEC.key_of("00433", OBS.observed_at)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (b"[" * 2_000 + b"]" * 2_000, "too_deep"),  # deeper than the parser's recursion limit
        (b'{"a":' * 600 + b"1" + b"}" * 600, "too_deep"),
        (b'{"a":"' + b"[" * 4000 + b'"}', "missing_field"),  # brackets in a string are text
        (b" " * (MAX_RECORD_BYTES + 1), "too_large"),
        (_with(station_id="00433\n"), "control_character"),
        (_with(station_id="\u0660\u0660\u0664\u0663\u0663"), "bad_station_id"),  # Arabic digits
        (_with(observed_at="2019-09-07T17:00:00Z\n"), "control_character"),
        (GOOD[:-1] + b',"station_id":"00433"}', "duplicate_key"),
        (GOOD[:-1] + b',"quality_level":3}', "duplicate_key"),
        (_with(temperature_c_tenths=2**53), "non_ijson_number"),
        (_with(temperature_c_tenths=-(2**53)), "non_ijson_number"),
        (GOOD.replace(b"-87", b"9" * 3000), "non_ijson_number"),  # past int() digit limit
        (GOOD.replace(b"-87", b"1e400"), "non_ijson_number"),
        (GOOD.replace(b"-87", b"NaN"), "not_canonicalizable"),
        (GOOD.replace(b"-87", b"-Infinity"), "not_canonicalizable"),
        (GOOD.replace(b'"00433"', b'"00433\\u0000"'), "control_character"),
        (GOOD.replace(b'"00433"', b'"0043\\u0085"'), "control_character"),
        (GOOD[:-1] + b',"x\\u001b[2J":1}', "control_character"),
        (GOOD.replace(b'"00433"', b'"\\ud800"'), "not_ijson_string"),
        (GOOD.replace(b'"00433"', b'"\\uffff"'), "not_ijson_string"),
        (b"\xed\xa0\x80", "not_utf8"),  # a surrogate encoded as UTF-8 is not UTF-8
    ],
    ids=lambda v: v if isinstance(v, str) else repr(v[:24]),
)
def test_hostile_values_are_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(RecordRejected) as info:
        decode_record(value)
    assert info.value.reason == reason
    c = classify(_msg(value), SPEC)
    assert c.rejected and c.reason == reason
    assert len(c.detail or "") <= 400  # details quote input, clipped


def test_patterns_match_the_whole_text() -> None:
    """`$` matches before a trailing newline; every pattern must be a full match."""
    with pytest.raises(RecordRejected, match="bad_station_id"):
        validate(Observation("00433\n", OBS.observed_at, 1, 1, 3))
    with pytest.raises(RecordRejected, match="bad_timestamp"):
        parse_timestamp("2019-09-07T17:00:00Z\n")
    with pytest.raises(WindowSpecError):
        WindowKey.parse("00433_20190907T000000Z_86400s\n")


@pytest.mark.parametrize(
    "key",
    [None, b"00427", b"00433\n", b"", b"\xff" * 3, b"x" * 10_000],
    ids=["none", "other-station", "newline", "empty", "not-ascii", "long"],
)
def test_a_key_that_is_not_the_station_is_a_reason(key: bytes | None) -> None:
    c = classify(_msg(key=key), SPEC)
    assert c.rejected and c.reason == "key_mismatch"
    assert len(c.detail or "") < 200
    # attributed through its envelope: the key's window if the key is a station id
    assert c.window == (SPEC.key_of("00427", OBS.observed_at) if key == b"00427" else None)


@pytest.mark.parametrize(
    "ts",
    [
        None,
        -1,
        -(2**63),
        2**63 - 1,
        253_402_300_800_000,  # 10000-01-01: datetime.fromtimestamp raised ValueError
        7_258_118_400_000,  # 2200-01-01, first instant past the record range
    ],
)
def test_any_timestamp_gives_a_verdict(ts: int | None) -> None:
    assert envelope_window(_msg(b"x", ts=ts), SPEC) is None
    bad = classify(_msg(b"{", ts=ts), SPEC)
    assert bad.rejected and bad.reason == "bad_json" and bad.window is None
    good = classify(_msg(ts=ts), SPEC)  # a valid record's window comes from its own time
    assert good.record == OBS


def test_envelope_attribution_still_works_in_range() -> None:
    c = classify(_msg(b"{", ts=TS), SPEC)
    assert c.window == SPEC.key_of("00433", OBS.observed_at)
    assert classify(_msg(b"{", key=b"00433\n", ts=TS), SPEC).window is None


def parse_with_strptime(window_id: str) -> WindowKey | None:
    """`WindowKey.parse` as it was before session 12 (strptime); None where it raised."""
    station, start, size = window_id.split("_")
    try:
        t = datetime.strptime(start, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        key = WindowSpec(int(size.removesuffix("s"))).key_of(station, t)
        key.end  # noqa: B018 -- raises OverflowError past year 9999
    except (ValueError, OverflowError):
        return None
    return key if key.start == t and key.window_id == window_id else None


@settings(max_examples=500, deadline=None)
@given(
    start=st.from_regex(r"\A[0-9]{8}T[0-9]{6}Z\Z")
    | st.datetimes().map(lambda t: t.strftime("%Y%m%dT%H%M%SZ")).filter(lambda t: len(t) == 16),
    size=st.sampled_from([1, 60, 3600, 86_400, 7 * 86_400]),
)
def test_window_id_parse_reads_the_start_as_strptime_does(start: str, size: int) -> None:
    """`WindowKey.parse` reads the start's digits by position: strptime's verdict."""
    window_id = f"00433_{start}_{size}s"
    expected = parse_with_strptime(window_id)
    if expected is None:
        with pytest.raises(WindowSpecError):
            WindowKey.parse(window_id)
    else:
        assert WindowKey.parse(window_id) == expected
