"""The fixed-schema fast decoder (tasks/record_fast.py) agrees with the general one.

Property: for every input, `decode_canonical` either says "unsure" (None) or returns
exactly the observation `decode_record` returns; it never accepts what the general path
rejects. `classify`, which tries the fast path first, gives the general path's verdict.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.message import SourceMessage, classify
from tasks.record import Observation, RecordRejected, canonical_bytes, decode_record
from tasks.record_fast import decode_canonical
from tasks.window import WindowSpec
from tests.test_record import observations

FIELDS = (
    "observed_at",
    "quality_level",
    "relative_humidity_pct_tenths",
    "station_id",
    "temperature_c_tenths",
)
SPEC = WindowSpec(86_400)


def general(data: object) -> Observation | str:
    """The general path's verdict: the observation, or the rejection reason."""
    try:
        return decode_record(data)  # type: ignore[arg-type]
    except RecordRejected as exc:
        return exc.reason


def assert_agrees(data: object) -> None:
    fast = decode_canonical(data)
    if fast is not None:
        assert general(data) == fast


@settings(max_examples=300, deadline=None)
@given(observations)
def test_fast_path_decodes_every_canonical_record(obs: Observation) -> None:
    data = canonical_bytes(obs)
    assert decode_canonical(data) == obs == general(data)


def _num(value: int | None) -> str:
    return "null" if value is None else str(value)


# Canonical layout with values inside and outside the valid ranges, impossible dates,
# years outside 1800..2199, quality levels 0 and 11..99.
layout_texts = st.builds(
    lambda y, mo, d, h, mi, s, q, rh, sid, t: (
        f'{{"observed_at":"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z",'
        f'"quality_level":{q},"relative_humidity_pct_tenths":{_num(rh)},'
        f'"station_id":"{sid}","temperature_c_tenths":{_num(t)}}}'
    ).encode(),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(-5, 120),
    st.none() | st.integers(-99_999, 99_999),
    st.from_regex(r"\A[0-9]{5}\Z"),
    st.none() | st.integers(-99_999, 99_999),
)


@settings(max_examples=200, deadline=None)
@given(layout_texts)
@example(
    b'{"observed_at":"2019-02-29T00:00:00Z","quality_level":3,'
    b'"relative_humidity_pct_tenths":null,"station_id":"00433","temperature_c_tenths":1}'
)
@example(
    b'{"observed_at":"1799-12-31T23:00:00Z","quality_level":3,'
    b'"relative_humidity_pct_tenths":null,"station_id":"00433","temperature_c_tenths":1}'
)
@example(
    b'{"observed_at":"2019-01-01T00:00:00Z","quality_level":3,'
    b'"relative_humidity_pct_tenths":-0,"station_id":"00433","temperature_c_tenths":01}'
)
def test_canonical_layout_with_any_values(data: bytes) -> None:
    assert_agrees(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A canonical record with bytes replaced, inserted or deleted."""
    data = bytearray(canonical_bytes(draw(observations)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("replace", "insert", "delete")))
        byte = draw(st.sampled_from(b' "\\,:{}[]-+.0159eEnulZT\n\x00\xff\xc3'))
        if op == "replace":
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        else:
            del data[i]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_records(data: bytes) -> None:
    assert_agrees(data)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False),
    st.text(max_size=25),
    st.from_regex(r"\A[0-9]{5}\Z"),
    st.sampled_from(["2019-01-01T00:00:00Z", "2019-01-01T00:00:00+00:00"]),
)


@st.composite
def schema_objects(draw: st.DrawFn) -> bytes:
    """JSON objects over the record's keys in any order and spelling."""
    keys = draw(st.permutations(FIELDS))
    keys = keys[: draw(st.integers(3, 5))] + draw(st.lists(st.sampled_from(FIELDS), max_size=1))
    pairs = [(k, draw(json_values)) for k in keys]
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    body = ",".join(
        json.dumps(k) + separators[1][0] + json.dumps(v, separators=separators) for k, v in pairs
    )
    return ("{" + body + "}").encode()


@settings(max_examples=200, deadline=None)
@given(schema_objects())
def test_any_object_of_the_schema(data: bytes) -> None:
    assert_agrees(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    assert_agrees(data)


def test_non_bytes_values_take_the_general_path() -> None:
    data = canonical_bytes(Observation("00433", datetime(2019, 1, 1, tzinfo=UTC), 1, 2, 3))
    for value in (bytearray(data), memoryview(data), data.decode()):
        assert decode_canonical(value) is None


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(observations.map(canonical_bytes), mutated(), layout_texts),
    st.sampled_from([b"00433", b"00427", None]),
)
def test_classify_gives_the_general_verdict(value: bytes, key: bytes | None) -> None:
    msg = SourceMessage("t", 0, 7, key, value, 1_567_875_600_000)
    verdict = general(value)
    c = classify(msg, SPEC)
    if isinstance(verdict, str):
        assert c.rejected and c.reason == verdict
    elif key != verdict.station_id.encode():
        assert c.rejected and c.reason == "key_mismatch"
    else:
        assert c.record == verdict and c.window == SPEC.key_of(key.decode(), verdict.observed_at)
