"""The run planner: which windows close, which messages are late, where the next run resumes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.message import SourceMessage
from tasks.planner import (
    Cursor,
    CursorError,
    PlanOptions,
    cap_ranges,
    merge_ranges,
    plan_run,
)
from tasks.window import WindowSpec
from tasks.window_content import build_window

T0 = datetime(2019, 9, 7, tzinfo=UTC)
NOW = datetime(2026, 11, 21, tzinfo=UTC)
OPTS = PlanOptions(spec=WindowSpec(86_400), allowed_lateness=timedelta(hours=1))


def record(station: str, t: datetime, temp: int = 100) -> bytes:
    return json.dumps(
        {
            "observed_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quality_level": 3,
            "relative_humidity_pct_tenths": 800,
            "station_id": station,
            "temperature_c_tenths": temp,
        }
    ).encode()


class Log:
    """An append-only list of messages per partition, standing in for what a read returns."""

    def __init__(self) -> None:
        self.parts: dict[int, list[SourceMessage]] = {0: [], 1: []}

    def append(self, partition: int, station: str, t: datetime, value: bytes | None = None) -> None:
        msgs = self.parts[partition]
        msgs.append(
            SourceMessage(
                "t",
                partition,
                len(msgs),
                station.encode(),
                value or record(station, t),
                int(t.timestamp() * 1000),
            )
        )

    def ends(self) -> dict[int, int]:
        return {p: len(m) for p, m in self.parts.items()}

    def read(self, cursor: Cursor) -> list[SourceMessage]:
        return [m for p, msgs in self.parts.items() for m in msgs[cursor.partition(p).resume :]]


def run(log: Log, cursor: Cursor, opts: PlanOptions = OPTS, now: datetime = NOW):
    return plan_run(cursor, log.read(cursor), log.ends(), opts, now)


def hours(station: str, log: Log, partition: int, start: datetime, n: int) -> None:
    for h in range(n):
        log.append(partition, station, start + timedelta(hours=h))


def test_window_closes_only_after_watermark_passes_end_plus_lateness() -> None:
    log = Log()
    hours("00433", log, 0, T0, 24)  # the whole of 2019-09-07
    log.append(0, "00433", T0 + timedelta(hours=24))  # 00:00 next day: not yet end + 1h
    plan = run(log, Cursor.empty("t", 86_400))
    assert plan.closing == []
    assert plan.next_cursor.partition(0).resume == 0  # the open window must be re-read
    log.append(0, "00433", T0 + timedelta(hours=25))  # 01:00 next day: watermark = end + 1h
    plan = run(log, plan.next_cursor)
    assert [w.key.window_id for w in plan.closing] == ["00433_20190907T000000Z_86400s"]
    assert [w.close_reason for w in plan.closing] == ["watermark"]
    assert len(plan.closing[0].items) == 24
    assert plan.next_cursor.partition(0).resume == 24  # first offset of the still-open next day


def test_stations_close_independently_and_reread_region_is_not_anchored_twice() -> None:
    log = Log()
    hours("00433", log, 0, T0, 30)
    hours("00427", log, 1, T0, 10)
    first = run(log, Cursor.empty("t", 86_400))
    assert [w.key.station_id for w in first.closing] == ["00433"]
    again = run(log, first.next_cursor)  # nothing new arrived
    assert again.closing == [] and again.late == {}
    assert again.messages_new == 0


def test_late_message_for_anchored_window_is_late_not_reanchored() -> None:
    log = Log()
    hours("00433", log, 0, T0, 30)
    first = run(log, Cursor.empty("t", 86_400))
    log.append(
        0,
        "00433",
        T0 + timedelta(hours=5),
        record("00433", T0 + timedelta(hours=5), temp=999 - 400),
    )
    second = run(log, first.next_cursor)
    assert second.closing == []
    ((key, items),) = second.late.items()
    assert key == first.closing[0].key
    assert [c.message.offset for c in items] == [30]


def test_drain_closes_every_open_window_and_idle_timeout_too() -> None:
    log = Log()
    hours("00433", log, 0, T0, 5)
    drained = run(
        log, Cursor.empty("t", 86_400), PlanOptions(OPTS.spec, OPTS.allowed_lateness, drain=True)
    )
    assert [(w.key.window_id, w.close_reason) for w in drained.closing] == [
        ("00433_20190907T000000Z_86400s", "drain")
    ]
    idle = PlanOptions(OPTS.spec, OPTS.allowed_lateness, idle_timeout=timedelta(minutes=30))
    first = run(log, Cursor.empty("t", 86_400), idle, now=NOW)
    assert first.closing == []  # the watermark just advanced: not idle
    later = run(log, first.next_cursor, idle, now=NOW + timedelta(minutes=31))
    assert [w.close_reason for w in later.closing] == ["idle_timeout"]


def test_malformed_messages_are_attributed_by_envelope_or_counted_unattributable() -> None:
    log = Log()
    hours("00433", log, 0, T0, 3)
    log.append(0, "00433", T0 + timedelta(hours=3), b"{broken json")
    log.parts[0].append(SourceMessage("t", 0, 4, None, b"\xff\xfe", None))
    hours("00433", log, 0, T0 + timedelta(hours=30), 1)
    plan = run(log, Cursor.empty("t", 86_400))
    (window,) = plan.closing
    content = build_window(window.key, window.items)
    assert content.counts() == {
        "messages": 4,
        "records": 3,
        "duplicates": 0,
        "conflicts": 0,
        "rejected": 1,
    }
    assert content.rejections[0].reason == "bad_json"
    assert [c.message.offset for c in plan.unattributable] == [4]
    assert plan.next_cursor.unattributable == 1
    assert run(log, plan.next_cursor).unattributable == []  # counted once


@pytest.mark.parametrize("seed", range(10))
def test_random_cut_points_give_the_same_windows_as_one_run(seed: int) -> None:
    rng = random.Random(seed)
    full = Log()
    hours("00433", full, 0, T0, 24 * 6)
    hours("00427", full, 1, T0, 24 * 6)
    # a duplicate delivery inside an open window must not change anything either
    full.append(1, "00427", T0 + timedelta(hours=24 * 5 + 3))
    one = run(full, Cursor.empty("t", 86_400))
    expected = {w.key: build_window(w.key, w.items).root for w in one.closing}

    partial = Log()
    cursor = Cursor.empty("t", 86_400)
    got = {}
    positions = {0: 0, 1: 0}
    while positions != full.ends():
        for p in (0, 1):
            step = rng.randint(0, 40)
            partial.parts[p] = full.parts[p][: min(len(full.parts[p]), positions[p] + step)]
            positions[p] = len(partial.parts[p])
        plan = run(partial, cursor)
        assert plan.late == {}
        for w in plan.closing:
            assert w.key not in got
            got[w.key] = build_window(w.key, w.items).root
        cursor = plan.next_cursor
    assert got == expected


def test_cursor_round_trips_and_refuses_other_window_sizes() -> None:
    log = Log()
    hours("00433", log, 0, T0, 30)
    cursor = run(log, Cursor.empty("t", 86_400)).next_cursor
    assert Cursor.from_json(json.loads(json.dumps(cursor.to_json()))) == cursor
    with pytest.raises(CursorError):
        cursor.check_compatible("t", 3600)
    with pytest.raises(CursorError):
        cursor.check_compatible("other", 86_400)


def test_merge_ranges_extends_to_cover_late_offsets() -> None:
    log = Log()
    hours("00433", log, 1, T0, 3)
    items = [
        c
        for c in (
            run(log, Cursor.empty("t", 86_400), PlanOptions(OPTS.spec, drain=True)).closing[0].items
        )
    ]
    assert merge_ranges({0: (5, 9)}, items) == {0: (5, 9), 1: (0, 3)}
    assert merge_ranges({1: (2, 4)}, items) == {1: (0, 4)}


backlogs = st.dictionaries(
    st.integers(0, 23),
    st.tuples(st.integers(0, 1_000), st.integers(0, 3_000)).map(lambda r: (r[0], r[0] + r[1])),
    max_size=24,
)


def _granted(ranges: dict, capped: dict) -> dict[int, int]:
    return {p: capped[p][1] - capped[p][0] for p in ranges}


@given(backlogs, st.integers(-5, 20_000), st.integers(1, 5_000), st.integers(0, 100))
def test_a_capped_read_takes_at_most_the_cap_from_the_start_of_each_range(
    ranges: dict, cap: int, min_share: int, turn: int
) -> None:
    capped = cap_ranges(ranges, cap, min_share=min_share, turn=turn)
    assert capped.keys() == ranges.keys()
    want = {p: e - s for p, (s, e) in ranges.items()}
    grant = _granted(ranges, capped)
    # every range keeps its start and only shrinks; nothing is read twice or skipped
    assert all(capped[p][0] == ranges[p][0] and 0 <= grant[p] <= want[p] for p in ranges)
    total = sum(want.values())
    assert sum(grant.values()) == (total if cap <= 0 else min(cap, total))
    if cap <= 0 or total <= cap:
        assert capped == ranges
    # whole shares: a range cut below min_share is at most the one where the cap ran out
    thin = [p for p in ranges if 0 < grant[p] < min(min_share, want[p])]
    assert len(thin) <= 1, (thin, grant)


@given(backlogs, st.integers(1, 20_000), st.integers(0, 100))
def test_with_min_share_one_the_cap_is_an_even_split(ranges: dict, cap: int, turn: int) -> None:
    """`min_share=1` is the even split of every backlog (the policy before whole shares):
    a range cut short got at most one offset less than the largest grant."""
    capped = cap_ranges(ranges, cap, min_share=1, turn=turn)
    want = {p: e - s for p, (s, e) in ranges.items()}
    grant = _granted(ranges, capped)
    cut = [p for p in ranges if grant[p] < want[p]]
    assert all(grant[p] >= max(grant.values()) - 1 for p in cut), grant
    if cap >= sum(1 for w in want.values() if w):  # room for every backlog: no turns
        assert capped == cap_ranges(ranges, cap, min_share=1, turn=0)


@given(st.integers(1, 24), st.integers(1, 10), st.integers(0, 50))
def test_every_partition_with_a_backlog_is_read_in_its_turn(
    partitions: int, pages: int, turn: int
) -> None:
    """With long backlogs and room for `pages` whole pages per run, each run reads
    min(pages, partitions) partitions, and ceil(partitions / pages) runs read them all."""
    page = 100
    ranges = {p: (0, 1_000_000) for p in range(partitions)}
    runs = -(-partitions // pages)
    read: set[int] = set()
    for t in range(turn, turn + runs):
        grant = _granted(ranges, cap_ranges(ranges, pages * page, min_share=page, turn=t))
        chosen = {p for p, g in grant.items() if g}
        assert len(chosen) == min(pages, partitions)
        assert all(grant[p] >= page for p in chosen)
        read |= chosen
    assert read == set(ranges)
