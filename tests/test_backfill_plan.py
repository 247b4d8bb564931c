"""tasks/backfill_plan.py: verdicts against anchored windows, exact resume of a killed produce."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from tasks.backfill_plan import (
    CONFLICT,
    NEW,
    SKIPPED,
    Rate,
    classify,
    group_windows,
    in_range,
    resume_remainder,
    window_root,
)
from tasks.message import Classified, SourceMessage
from tasks.message import classify as classify_message
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowSpec
from tasks.window_content import build_window

T0 = datetime(2019, 3, 1, tzinfo=UTC)
SPEC = WindowSpec(86_400)


def obs(station: str, hour: int, temp: int | None = 100, quality: int = 3) -> Observation:
    return Observation(station, T0 + timedelta(hours=hour), temp, 700, quality)


def msg(o: Observation) -> tuple[bytes, bytes, int]:
    return (o.station_id.encode(), canonical_bytes(o), int(o.observed_at.timestamp() * 1000))


def delivered(messages, partition_of, offset0=0, foreign=()):  # type: ignore[no-untyped-def]
    """The topic's messages after producing `messages` (plus foreign ones), per partition."""
    out = []
    offsets: dict[int, int] = {}
    for key, value, ts in [*messages, *foreign]:
        p = partition_of(key)
        offsets[p] = offsets.get(p, offset0) + 1
        out.append(SourceMessage("t", p, offsets[p], key, value, ts))
    return sorted(out, key=lambda m: (m.partition, m.offset))


def test_window_root_is_the_root_anchor_windows_computes() -> None:
    rows = [obs("00001", h, 100 + h) for h in range(24)]
    rows += [rows[3], obs("00001", 5, 7, quality=5)]  # a duplicate and a conflicting row
    items: list[Classified] = [
        classify_message(SourceMessage("t", 0, i, b"00001", canonical_bytes(o), None), SPEC)
        for i, o in enumerate(rows)
    ]
    content = build_window(SPEC.key_of("00001", T0), items)
    assert window_root(list(reversed(rows))) == content.root.hex()


def test_classify_new_skipped_and_conflicting_windows() -> None:
    rows = [obs(s, h) for s in ("00001", "00002", "00003") for h in range(48)]
    windows = group_windows(SPEC, rows)
    assert len(windows) == 6
    keys = sorted(windows)
    anchored = {
        keys[0].window_id: (0, window_root(windows[keys[0]])),  # identical
        keys[1].window_id: (2, window_root(windows[keys[1]][:-1])),  # one hour fewer
    }
    verdicts = classify(windows, anchored)
    assert verdicts.verdicts[keys[0]] == SKIPPED
    assert verdicts.verdicts[keys[1]] == CONFLICT
    assert verdicts.count(NEW) == 4 and verdicts.produce(keys[2]) and not verdicts.produce(keys[1])
    (conflict,) = verdicts.conflicts
    assert conflict["window_id"] == keys[1].window_id and conflict["anchored_revision"] == 2
    assert conflict["recomputed_root"] == window_root(windows[keys[1]])


def test_resume_remainder_produces_exactly_what_a_killed_producer_did_not_deliver() -> None:
    rng = random.Random(5)
    rows = [obs(f"{s:05d}", h, rng.randint(-50, 300)) for h in range(30) for s in (1, 2, 3, 4)]
    rows += rows[:7]  # DWD duplicates: identical messages later in the file
    messages = [msg(o) for o in rows]

    def partition_of(key: bytes) -> int:
        return int(key) % 3

    undisturbed = delivered(messages, partition_of)
    for cut in (0, 1, 40, 77, len(messages)):
        # the killed producer delivered, per partition, a prefix of its messages
        prefix = {p: [m for m in messages[:cut] if partition_of(m[0]) == p] for p in range(3)}
        present = [
            m
            for p, ms in prefix.items()
            for m in delivered(ms, partition_of, foreign=[(b"99999", b"x", 0)])
            if m.partition == p
        ]
        rest = resume_remainder(messages, present)
        assert rest == messages[cut:]
        resumed = [
            (m.partition, m.key, m.value) for m in delivered([*messages[:cut], *rest], partition_of)
        ]
        assert resumed == [(m.partition, m.key, m.value) for m in undisturbed]


def test_time_range_and_rate_line() -> None:
    o = obs("00001", 5)
    assert in_range(o, None, None) and in_range(o, o.observed_at, None)
    assert not in_range(o, None, o.observed_at)
    rate = Rate(started=0.0, done=50, total=150)
    assert rate.line(10.0, "windows") == "50/150 windows (5.0 windows/s, ETA 20 s)"
    assert "ETA ?" in Rate(started=0.0).line(1.0, "records")
