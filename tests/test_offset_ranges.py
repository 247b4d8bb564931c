"""Offset spans of a late-window rebuild: the union read once, split by this run's read."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tasks.message import SourceMessage
from tasks.offset_ranges import (
    bridge,
    covers,
    messages_in,
    span_length,
    split_by_read,
    station_keys,
    union_ranges,
)
from tasks.window import WindowKey

window_ranges = st.lists(
    st.dictionaries(
        st.integers(0, 3),
        st.tuples(st.integers(0, 60), st.integers(0, 60)).map(lambda r: (min(r), max(r))),
        max_size=4,
    ),
    max_size=8,
)


@given(window_ranges)
def test_the_union_of_window_ranges_covers_each_offset_once(windows: list) -> None:
    union = union_ranges(windows)
    for p, spans in union.items():
        # disjoint, sorted, no empty or touching spans: every offset is read once
        assert all(lo < hi for lo, hi in spans)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
        covered = {o for lo, hi in spans for o in range(lo, hi)}
        wanted = {o for w in windows if p in w for o in range(*w[p])}
        assert covered == wanted
    assert set(union) == {p for w in windows for p, (lo, hi) in w.items() if hi > lo}


def test_overlapping_and_touching_window_ranges_are_read_as_one_span() -> None:
    windows = [{0: (10, 20), 1: (5, 6)}, {0: (15, 30)}, {0: (30, 31)}, {0: (40, 41), 2: (7, 7)}]
    assert union_ranges(windows) == {0: [(10, 31), (40, 41)], 1: [(5, 6)]}


reads = st.dictionaries(
    st.integers(0, 3),
    st.tuples(st.integers(0, 60), st.integers(0, 60)).map(lambda r: (min(r), max(r))),
    max_size=4,
)


def offsets(spans: dict[int, list[tuple[int, int]]]) -> set[tuple[int, int]]:
    return {(p, o) for p, parts in spans.items() for lo, hi in parts for o in range(lo, hi)}


@given(window_ranges, reads)
def test_split_by_read_keeps_every_offset_once_and_only_the_read_inside(
    windows: list, read: dict
) -> None:
    union = union_ranges(windows)
    outside, inside = split_by_read(union, read)
    assert offsets(outside) | offsets(inside) == offsets(union)
    assert not offsets(outside) & offsets(inside)
    assert span_length(outside) + span_length(inside) == span_length(union)
    in_read = {(p, o) for p, (lo, hi) in read.items() for o in range(lo, hi)}
    assert offsets(inside) == offsets(union) & in_read
    for parts in [*outside.values(), *inside.values()]:
        assert all(lo < hi for lo, hi in parts)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(parts))


def test_a_late_window_range_is_read_again_only_before_this_run_read() -> None:
    # the window's first message at 100 (an earlier run), its late one at 530; this run
    # read [500, 600) of partition 0 and nothing of partition 1
    outside, inside = split_by_read({0: [(100, 531)], 1: [(7, 9)]}, {0: (500, 600)})
    assert outside == {0: [(100, 500)], 1: [(7, 9)]}
    assert inside == {0: [(500, 531)]}


@given(window_ranges, st.integers(0, 20))
def test_bridged_spans_cover_every_offset_and_pass_over_short_gaps_only(
    windows: list, max_gap: int
) -> None:
    for parts in union_ranges(windows).values():
        joined = bridge(parts, max_gap)
        wanted = {o for lo, hi in parts for o in range(lo, hi)}
        read = {o for lo, hi in joined for o in range(lo, hi)}
        assert wanted <= read
        # the extra offsets are exactly the gaps that were short enough to bridge
        gaps = {
            o
            for a, b in itertools.pairwise(parts)
            if b[0] - a[1] <= max_gap
            for o in range(a[1], b[0])
        }
        assert read - wanted == gaps
        assert all(b[0] - a[1] > max_gap for a, b in itertools.pairwise(joined))
        # and `covers` tells the wanted offsets from the bridged ones
        starts = [lo for lo, _ in parts]
        assert {o for o in read if covers(parts, starts, o)} == wanted


def test_spans_a_short_gap_apart_are_read_as_one() -> None:
    assert bridge([(0, 10), (15, 20), (40, 50)], max_gap=5) == [(0, 20), (40, 50)]
    assert bridge([(0, 10), (15, 20), (40, 50)], max_gap=4) == [(0, 10), (15, 20), (40, 50)]
    assert bridge([], max_gap=5) == []


def message(partition: int, offset: int, key: bytes) -> SourceMessage:
    return SourceMessage("t", partition, offset, key, b"{}", None)


def test_messages_in_keeps_the_spans_and_keys_of_each_partition() -> None:
    held = [message(p, o, k) for p in (0, 1) for o in range(10) for k in (b"00433", b"00427")]
    kept = messages_in(held, {0: [(2, 4), (8, 9)], 1: [(0, 1)]}, {0: {b"00433"}, 1: {b"00427"}})
    assert [(m.partition, m.offset, m.key) for m in kept] == [
        (0, 2, b"00433"),
        (0, 3, b"00433"),
        (0, 8, b"00433"),
        (1, 0, b"00427"),
    ]


def test_station_keys_name_each_partition_stations() -> None:
    a = WindowKey.parse("00433_20190907T000000Z_86400s")
    b = WindowKey.parse("00427_20190907T000000Z_86400s")
    assert station_keys({a: {0: (1, 2), 1: (3, 4)}, b: {1: (5, 6)}}) == {
        0: {b"00433"},
        1: {b"00433", b"00427"},
    }
