"""A run's lists split over run_part entries when they outgrow one log entry (pure).

A log entry fits a C2SP entry bundle (65,535 bytes); a run's quarantined, unattributable
and held-open lists need not (a flood of junk, a thousand stations each holding a window
open). `split_run_entry` moves them into run_part entries before the run entry; the
auditor joins them back (`index_log`) and fails a run whose parts are lost, extra, moved
or borrowed from another run. The drills on the real services are in
tests/test_poison_messages.py and tests/test_many_open_windows.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.audit.coverage import Accounting, check_entries, index_log
from tasks.audit.documents import schema_problem
from tasks.message import SourceMessage, classify
from tasks.record import Observation, canonical_bytes
from tasks.tlog.entries import (
    LogEntryError,
    entry_bytes,
    entry_order,
    merge_run_parts,
    parse_entry,
    run_entry,
    run_parts_problem,
    split_run_entry,
    window_entry,
)
from tasks.tlog.tiles import MAX_ENTRY_SIZE, EntryTooLarge
from tasks.window import WindowSpec

TOPIC = "dwd.observations"
SPEC = WindowSpec(86_400)
DAY = datetime(2019, 9, 7, tzinfo=UTC)


def _run(run: int = 1, read: tuple[int, int] = (0, 1), **lists: Any) -> dict[str, Any]:
    return run_entry(
        topic=TOPIC,
        run=run,
        read={0: read},
        quarantined=lists.get("quarantined", {}),
        unattributable=lists.get("unattributable", {}),
        held_open=lists.get("held_open", {}),
        cursor_digest="cd" * 32,
        anchored_at="2026-12-02T12:00:00Z",
    )


def _held(stations: int, ranges: int = 1) -> dict[str, dict[int, list[tuple[int, int]]]]:
    """One open window per station, each with `ranges` ranges on partition 0."""
    return {
        f"{s:05d}-20260101T000000Z-86400s": {
            0: [
                (1_000_000 + 10 * (s * ranges + r), 1_000_000 + 10 * (s * ranges + r) + 3)
                for r in range(ranges)
            ]
        }
        for s in range(stations)
    }


def _lists(entry: dict[str, Any]) -> tuple[Any, Any, Any]:
    return entry["quarantined"], entry["unattributable"], entry["held_open"]


def test_a_run_entry_that_fits_is_not_split() -> None:
    entry = _run(quarantined={0: [5]}, held_open=_held(3))
    assert split_run_entry(entry) == [entry]
    assert "parts" not in entry


def test_two_thousand_open_windows_split_into_parts_that_each_fit() -> None:
    entry = _run(held_open=_held(2_000))
    with pytest.raises(EntryTooLarge, match="exceeds"):
        entry_bytes(entry)  # what the 10M backfill met at ~1,000 stations
    *parts, head = split_run_entry(entry)
    assert len(parts) >= 2 and head["parts"] == len(parts)
    assert _lists(head) == ({}, {}, {})
    for i, part in enumerate(parts):
        data = entry_bytes(part)
        assert parse_entry(data) == part and part["part"] == i
        assert schema_problem(part, "log_entry.schema.json") is None
    assert schema_problem(head, "log_entry.schema.json") is None
    # parts are filled, not one window each: at most one more than the bytes need
    total = sum(len(entry_bytes(p)) for p in parts)
    assert len(parts) <= total // MAX_ENTRY_SIZE + 1
    assert run_parts_problem(head, parts) is None
    assert merge_run_parts(head, parts) == entry
    assert split_run_entry(entry) == [*parts, head]  # deterministic: a resumed run agrees


def test_one_window_with_more_ranges_than_an_entry_holds_continues_in_the_next_part() -> None:
    entry = _run(held_open=_held(1, ranges=9_000), quarantined={0: list(range(3))})
    *parts, head = split_run_entry(entry)
    assert len(parts) >= 3
    (window,) = entry["held_open"]
    assert sum(window in p["held_open"] for p in parts) >= 2
    assert merge_run_parts(head, parts) == entry


offsets = st.lists(st.integers(0, 2**40), unique=True, max_size=3_000).map(sorted)


@settings(max_examples=30, deadline=None)
@given(
    quarantined=st.dictionaries(st.integers(0, 11), offsets, max_size=3),
    unattributable=st.dictionaries(st.integers(0, 11), offsets, max_size=3),
    stations=st.integers(0, 1_500),
    ranges=st.integers(1, 4),
)
def test_split_and_merge_round_trip_and_every_part_fits(
    quarantined: dict[int, list[int]],
    unattributable: dict[int, list[int]],
    stations: int,
    ranges: int,
) -> None:
    entry = _run(
        quarantined=quarantined, unattributable=unattributable, held_open=_held(stations, ranges)
    )
    *parts, head = split_run_entry(entry)
    for part in parts:
        entry_bytes(part)  # EntryTooLarge if the size bound under-counted
        assert any(_lists(part))  # no empty part
    entry_bytes(head)
    assert run_parts_problem(head, parts) is None
    assert merge_run_parts(head, parts) == {k: v for k, v in entry.items() if k != "parts"}
    window = window_entry(
        topic=TOPIC,
        window_id="00433-20260101T000000Z-86400s",
        revision=0,
        checkpoint_digest="ab" * 32,
        ranges={0: [(0, 1)]},
        supersedes=None,
        closed_at="2026-12-02T12:00:00Z",
        run=1,
    )
    assert entry_order([head, *reversed(parts), window]) == [window, *parts, head]


def test_entry_order_refuses_parts_that_do_not_match_their_run() -> None:
    *parts, head = split_run_entry(_run(held_open=_held(2_000)))
    with pytest.raises(LogEntryError, match="names 2 part"):
        entry_order([head, parts[0]])
    with pytest.raises(LogEntryError, match="belongs to run 2"):
        entry_order([head, parts[0], {**parts[1], "run": 2}])


# -- the auditor's side: index_log joins the parts and fails a run whose parts are wrong --


def _msgs(n: int, junk_from: int) -> list[SourceMessage]:
    """`n` messages on partition 0: hourly records of station 00433 on 2019-09-07 up to
    `junk_from`, then junk that names no window."""
    out = []
    for o in range(n):
        if o < junk_from:
            at = DAY + timedelta(hours=o)
            obs = Observation("00433", at, 150 + o, 800, 3)
            ts = int(at.timestamp() * 1000)
            out.append(SourceMessage(TOPIC, 0, o, b"00433", canonical_bytes(obs), ts))
        else:
            out.append(SourceMessage(TOPIC, 0, o, None, b"{broken", None))
    return out


def _logged_run(junk: int) -> tuple[list[dict[str, Any]], list[SourceMessage]]:
    """A run that read 20 records of one window (held open) and `junk` junk messages."""
    msgs = _msgs(20 + junk, 20)
    window = SPEC.key_of("00433", DAY).window_id
    entry = _run(
        read=(0, 20 + junk),
        unattributable={0: list(range(20, 20 + junk))},
        held_open={window: {0: [(0, 20)]}},
    )
    return split_run_entry(entry), msgs


def _audit(entries: list[dict[str, Any]], msgs: list[SourceMessage]) -> tuple[list[str], Any]:
    index = index_log(entries)
    _, run_findings = check_entries(index)
    acc = Accounting(index)
    for m in msgs:
        acc.add([classify(m, SPEC)])
    (cov,) = acc.finish({0: (0, len(msgs))})
    return [f.code for f in run_findings], cov


def test_the_auditor_accounts_for_offsets_listed_in_run_parts() -> None:
    entries, msgs = _logged_run(15_000)
    assert len(entries) >= 3  # two parts at least
    codes, cov = _audit(entries, msgs)
    assert codes == [] and cov.verdict == "pass"
    assert (cov.held_open, cov.unattributable) == (20, 15_000)


@pytest.mark.parametrize(
    ("tamper", "also_unaccounted"),
    [
        (lambda e: [*e[:1], *e[2:]], True),  # a part dropped
        (lambda e: [e[1], e[0], *e[2:]], False),  # parts swapped
        (lambda e: [e[0], *e], False),  # a part repeated
        (lambda e: [{**e[0], "run": 7}, *e[1:]], False),  # a part of another run
        (lambda e: [*e, e[0]], False),  # parts after the last run entry
    ],
    ids=["dropped", "swapped", "repeated", "foreign", "trailing"],
)
def test_a_run_whose_parts_were_tampered_with_fails(tamper: Any, also_unaccounted: bool) -> None:
    entries, msgs = _logged_run(15_000)
    codes, cov = _audit(tamper(entries), msgs)
    assert "run_parts_mismatch" in codes
    assert any(f.code == "offset_unaccounted" for f in cov.findings) == also_unaccounted


def test_a_window_entry_between_parts_and_their_run_fails() -> None:
    entries, _ = _logged_run(15_000)
    window = window_entry(
        topic=TOPIC,
        window_id="00433-20190906T000000Z-86400s",
        revision=0,
        checkpoint_digest="ab" * 32,
        ranges={},
        supersedes=None,
        closed_at="2026-12-02T12:00:00Z",
        run=1,
    )
    index = index_log([entries[0], window, *entries[1:]])
    assert any("window entry follows run parts" in why for _, why in index.part_problems)
