"""Window core properties: order/duplication/splitting independence, and exact windows of
the real DWD files checked against an independent Decimal recomputation from the raw text."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.aggregates import window_aggregates
from tasks.dedup import deduplicate
from tasks.dwd import read_observations
from tasks.merkle import merkle_root
from tasks.payload import encode_payload
from tasks.record import Observation
from tasks.window import WindowKey, WindowSpec
from tests.dwd_data import product_file

DAY = WindowSpec(86_400)
T0 = datetime(2019, 9, 6, tzinfo=UTC)

observations = st.builds(
    Observation,
    station_id=st.sampled_from(["00427", "00433", "01766"]),
    observed_at=st.integers(0, 3 * 24 - 1).map(lambda h: T0 + timedelta(hours=h)),
    temperature_tenths=st.none() | st.integers(-300, 400),
    humidity_tenths=st.none() | st.integers(0, 1000),
    quality_level=st.integers(1, 10),
)


def _windows(obs: list[Observation], spec: WindowSpec) -> dict[WindowKey, list[Observation]]:
    grouped: dict[WindowKey, list[Observation]] = defaultdict(list)
    for o in obs:
        grouped[spec.key_of(o.station_id, o.observed_at)].append(o)
    return grouped


def _outcome(obs: list[Observation], spec: WindowSpec) -> dict[WindowKey, tuple]:
    """Per window: payload bytes, Merkle root, aggregates of the deduplicated content."""
    out = {}
    for key, members in _windows(obs, spec).items():
        d = deduplicate(members)
        out[key] = (encode_payload(d.records), merkle_root(d.leaves), window_aggregates(d.records))
    return out


@settings(max_examples=50, deadline=None)
@given(
    st.lists(observations, min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.integers(1, 5),
    st.sampled_from([3_600, 21_600, 86_400]),
)
def test_shuffle_duplicate_split_never_change_windows(
    obs: list[Observation], rnd: random.Random, parts: int, size: int
) -> None:
    spec = WindowSpec(size)
    reference = _outcome(obs, spec)

    # shuffled, with re-deliveries of random messages
    noisy = obs + [rnd.choice(obs) for _ in range(rnd.randint(0, len(obs)))]
    rnd.shuffle(noisy)
    assert _outcome(noisy, spec) == reference

    # split into chunks, each chunk windowed and deduplicated on its own, then merged
    cuts = sorted(rnd.randint(0, len(noisy)) for _ in range(parts - 1))
    chunks = [noisy[a:b] for a, b in zip([0, *cuts], [*cuts, len(noisy)], strict=True)]
    merged: dict[WindowKey, list[Observation]] = defaultdict(list)
    for chunk in chunks:
        for key, members in _windows(chunk, spec).items():
            merged[key] += deduplicate(members).records
    rnd.shuffle(chunks)
    merged_outcome = {}
    for key, members in merged.items():
        d = deduplicate(members)
        merged_outcome[key] = (
            encode_payload(d.records),
            merkle_root(d.leaves),
            window_aggregates(d.records),
        )
    assert merged_outcome == reference


def test_dedup_counts_and_conflict_rule() -> None:
    t = T0
    a3 = Observation("00433", t, 87, 890, 3)
    a1 = Observation("00433", t, 86, 890, 1)  # earlier release, lower quality: loses
    b = Observation("00427", t, 90, 880, 3)
    c_lo = Observation("00427", t + timedelta(hours=1), 10, 500, 3)
    c_hi = Observation("00427", t + timedelta(hours=1), 11, 500, 3)  # tie: greater bytes win
    for order in ([a3, a1, b, a3, c_lo, c_hi, b], [c_hi, b, b, a1, c_lo, a3, a3]):
        d = deduplicate(order)
        assert d.records == [b, a3, c_hi]
        assert (d.duplicates, d.conflicts) == (2, 2)
        assert d.leaves == sorted(d.leaves)


def _raw_daily(path: Path) -> dict[str, dict[str, list[Decimal]]]:
    """Independent parse of a DWD hourly file: {day: {"TT": [...], "RF": [...]}} in Decimal."""
    days: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: {"TT": [], "RF": []})
    lines = path.read_text("latin-1").splitlines()
    assert lines[0].split(";")[:5] == ["STATIONS_ID", "MESS_DATUM", "QN_9", "TT_TU", "RF_TU"]
    for line in lines[1:]:
        _sid, stamp, _qn, tt, rf, eor = (f.strip() for f in line.split(";"))
        assert eor == "eor"
        day = days[stamp[:8]]
        if Decimal(tt) != -999:
            day["TT"].append(Decimal(tt))
        if Decimal(rf) != -999:
            day["RF"].append(Decimal(rf))
    return days


def _check_summary(summary: dict, values: list[Decimal], records: int) -> None:
    assert summary["count"] == len(values)
    assert summary["missing"] == records - len(values)
    if not values:
        assert summary["min"] is summary["max"] is summary["mean"] is None
        return
    assert Decimal(summary["min"]) == min(values)
    assert Decimal(summary["max"]) == max(values)
    mean = (sum(values) / len(values)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    assert Decimal(summary["mean"]) == mean
    assert Decimal(summary["sum_tenths"]) == sum(values) * 10


@pytest.mark.parametrize("station", ["00427", "00433"])
def test_real_files_daily_windows_match_independent_recomputation(station: str) -> None:
    obs = list(read_observations(product_file(station)))
    windows = _windows(obs, DAY)
    # every observation lands in exactly one window: its own, and no neighbour
    assert sum(len(m) for m in windows.values()) == len(obs) == 13_200
    for key, members in windows.items():
        assert all(key.contains(o.observed_at) for o in members)
        before = WindowKey(key.station_id, key.index - 1, key.size_seconds)
        after = WindowKey(key.station_id, key.index + 1, key.size_seconds)
        assert not any(
            before.contains(o.observed_at) or after.contains(o.observed_at) for o in members
        )
    raw = _raw_daily(product_file(station))
    assert len(windows) == len(raw) == 550
    for key, members in windows.items():
        d = deduplicate(members)
        assert (d.duplicates, d.conflicts) == (0, 0)
        agg = window_aggregates(d.records)
        ref = raw[key.start.strftime("%Y%m%d")]
        assert agg["records"] == len(members) == 24
        _check_summary(agg["temperature_c"], ref["TT"], 24)
        _check_summary(agg["relative_humidity_pct"], ref["RF"], 24)


@given(
    st.datetimes(
        min_value=datetime(1800, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    st.sampled_from([1, 60, 600, 3_600, 86_400, 7 * 86_400]) | st.integers(1, 10**7),
)
def test_window_index_is_the_floor_of_the_time_since_the_epoch(t: datetime, size: int) -> None:
    """`index_of`'s integer arithmetic against the timedelta floor division it replaced,
    before 1970 (DWD records reach back to 1893) and with sub-second parts."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    index = WindowSpec(size).index_of(t)
    assert index == (t - epoch) // timedelta(seconds=size)
    start = epoch + timedelta(seconds=index * size)
    assert start <= t < start + timedelta(seconds=size)
