"""Bounded work per run, on the real broker and S3 server.

* A station that reports once and falls silent keeps its window open; its messages are
  held in the bucket, so the messages read from Kafka per run stay flat (they grew
  101 -> 201 -> 301 when the open window pinned the resume offset).
* A backlog larger than one run's cap is anchored run by run, in pages, with the same
  roots as one unbounded run.
* The held copy is a cache: a missing or altered copy makes the run re-read from Kafka,
  with the same result.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.catch_up import anchor_until_caught_up
from storage import layout
from streamnotary.commands.pipeline import emit_runs
from tasks.planner import Cursor
from tasks.record import Observation
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

HARNESS = pytest.mark.usefixtures("prefect_harness")

OBS = demo_observations(days=12)
SILENT = next(o for o in OBS if o.station_id == "00433")
BUSY = [o for o in OBS if o.station_id == "00427"]


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def cursor_of(env: PipelineEnv) -> Cursor:
    return Cursor.from_json(json.loads(env.store().get(layout.cursor_key(env.topic))))


def anchored_reference_and_unread_copy(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, observations: list[Observation]
) -> tuple[PipelineEnv, PipelineEnv]:
    """Two topics with the same observations: the first anchored in one unbounded run, the
    second not yet read (for the capped runs under test)."""
    reference = make_env(tmp_path / "ref", kafka_bootstrap, s3_server)
    capped = make_env(tmp_path / "capped", kafka_bootstrap, s3_server)
    for e in (reference, capped):
        e.produce_observations(observations)
    with reference.active():
        anchor_windows()
    return reference, capped


@HARNESS
def test_reads_per_run_stay_flat_while_a_silent_station_s_window_is_open(
    env: PipelineEnv,
) -> None:
    reads, held = [], []
    with env.active():
        for run in range(4):
            batch = BUSY[run * 60 : (run + 1) * 60]
            env.produce_observations(([SILENT] if run == 0 else []) + batch)
            summary = anchor_windows()
            reads.append(summary["messages_read"])
            held.append(summary["messages_held"])
    assert reads == [61, 60, 60, 60], reads
    # The silent station's one message is held the whole time, with the busy station's
    # still-open day; the Kafka read never goes back to it.
    cursor = cursor_of(env)
    assert cursor.held is not None and cursor.held.messages == held[-1]
    assert all(h >= 1 for h in held)
    # (the resume offset stays pinned at the silent message, ready for a fallback re-read)
    assert any(c.resume < c.read_end for c in cursor.partitions.values())
    assert list(env.store().list(f"state/{env.topic}/held/")) == [cursor.held.key]  # old ones gone


@HARNESS
def test_a_backlog_beyond_the_cap_is_anchored_run_by_run_with_the_same_roots(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    observations = demo_observations(days=5)
    reference, capped = anchored_reference_and_unread_copy(
        tmp_path, kafka_bootstrap, s3_server, observations
    )
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "100")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "40")
    # the operator's catch-up: one process, one flow run per capped run, until no backlog
    done = capped.run_cli("anchor", "--until-caught-up", "--json")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    backlogs = [r["backlog"] for r in runs]
    reads = [r["messages_read"] for r in runs]
    assert max(reads) <= 100 and sum(reads) == len(observations)
    assert backlogs == sorted(backlogs, reverse=True) and len(backlogs) >= len(observations) // 100
    assert backlogs[-1] == 0 and len(set(backlogs)) == len(backlogs)
    assert len({r["timings"]["call_s"] for r in runs}) == len(runs)  # each run timed alone
    assert capped.roots() == reference.roots()


@HARNESS
def test_a_catch_up_split_over_processes_anchors_the_same_roots(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--max-runs` bounds a catch-up process (its RSS rises run after run); the next
    process resumes where it stopped, and the roots are those of one unbounded run."""
    observations = demo_observations(days=5)
    reference, capped = anchored_reference_and_unread_copy(
        tmp_path, kafka_bootstrap, s3_server, observations
    )
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "70")
    refused = capped.run_cli("anchor", "--max-runs", "2")
    assert refused.returncode == 2 and "--max-runs needs --until-caught-up" in refused.stderr
    processes: list[list[dict[str, Any]]] = []
    while not processes or processes[-1][-1]["backlog"]:
        done = capped.run_cli("anchor", "--until-caught-up", "--max-runs", "2", "--json")
        assert done.returncode == 0, done.stderr
        processes.append(json.loads(done.stdout)["runs"])
        assert len(processes) <= 3
    assert [len(runs) for runs in processes] == [2, 2]  # 240 messages, 70 a run: 4 runs
    assert sum(r["messages_read"] for runs in processes for r in runs) == len(observations)
    assert capped.roots() == reference.roots()


@HARNESS
def test_catching_up_stops_when_producers_outpace_the_cap(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backlog that grows between runs (producers faster than the cap) ends the catch-up
    after the first run that did not shrink it: it would never end; the schedule goes on."""
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "50")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "20")
    more = iter([BUSY[120:240], BUSY[240:360], BUSY[360:480]])
    env.produce_observations(BUSY[:120])
    with env.active():
        runs = anchor_until_caught_up(after_run=lambda _run: env.produce_observations(next(more)))
    backlogs = [r["backlog"] for r in runs]
    assert backlogs == [70, 140], backlogs  # 120 - 50; then 70 + 120 - 50 > 70: stop
    assert [r["messages_read"] for r in runs] == [50, 50]
    # what `streamnotary anchor --until-caught-up` prints for people: a line per run
    capsys.readouterr()
    assert emit_runs(runs, as_json=False) == 0
    out = capsys.readouterr().out
    assert "run 1: 50 message(s) read" in out and "backlog 140" in out
    assert "2 run(s): " in out and "140 offset(s) of backlog left" in out


def _stations(count: int, days: int) -> list[Observation]:
    start = datetime(2019, 9, 7, tzinfo=UTC)
    return [
        Observation(f"{20_000 + s:05d}", start + timedelta(hours=h), 100 + s, 800, 3)
        for h in range(24 * days)
        for s in range(count)
    ]


def read_ends(env: PipelineEnv) -> dict[int, int]:
    return {p: c.read_end for p, c in cursor_of(env).partitions.items()}


@HARNESS
def test_a_backlog_thinner_than_a_page_per_partition_is_read_a_partition_at_a_time(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cap 300, page 200, 3 partitions: an even split (100 each) would be thinner than a
    page, so each run reads 300 offsets of one partition, the partitions in turn, and the
    roots are those of one unbounded run."""
    observations = _stations(30, 3)
    reference, capped = anchored_reference_and_unread_copy(
        tmp_path, kafka_bootstrap, s3_server, observations
    )
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "300")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "200")
    advanced: list[set[int]] = []
    backlog, reads = 1, 0
    with capped.active():
        while backlog:
            before = read_ends(capped) if advanced else {}  # no cursor before the first run
            summary = anchor_windows()
            after = read_ends(capped)
            advanced.append({p for p in after if after[p] > before.get(p, 0)})
            backlog, reads = summary["backlog"], reads + summary["messages_read"]
            assert summary["messages_read"] <= 300 and len(advanced) < 20
    assert reads == len(observations)
    # one partition per run while every partition has a backlog, and each in its turn
    assert all(len(a) == 1 for a in advanced[:3]), advanced
    assert set().union(*advanced[:3]) == {0, 1, 2}, advanced
    assert capped.roots() == reference.roots()


@HARNESS
def test_an_altered_held_copy_is_ignored_and_kafka_re_read(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    first, second = BUSY[:60], BUSY[60:120]
    env = make_env(tmp_path / "altered", kafka_bootstrap, s3_server)
    with env.active():
        env.produce_observations([SILENT, *first])
        anchor_windows()
        cursor = cursor_of(env)
        assert cursor.held is not None
        env.store().put(cursor.held.key, b'{"schema":"streamnotary.held/1","messages":[]}')
        env.produce_observations(second)
        summary = anchor_windows()
    # re-read from the silent station's resume offset instead of trusting the copy
    assert summary["messages_read"] > len(second)
    reference = make_env(tmp_path / "reference", kafka_bootstrap, s3_server)
    with reference.active():
        reference.produce_observations([SILENT, *first])
        anchor_windows()
        reference.produce_observations(second)
        anchor_windows()
    assert env.roots() == reference.roots()


def test_the_cap_is_shared_by_partitions_with_a_backlog() -> None:
    from tasks.planner import cap_ranges

    ranges = {0: (100, 100), 1: (0, 10), 2: (50, 1050), 3: (7, 507)}
    capped = cap_ranges(ranges, 300)
    assert capped == {0: (100, 100), 1: (0, 10), 2: (50, 195), 3: (7, 152)}
    assert sum(e - s for s, e in capped.values()) == 300
    assert cap_ranges(ranges, 0) == ranges  # 0: no cap
    assert cap_ranges(ranges, 10_000) == ranges
    # whole shares: 300 / 3 backlogs < 200, so one partition per run, in turn; what a
    # short one leaves goes to the next
    whole = {t: cap_ranges(ranges, 300, min_share=200, turn=t) for t in range(4)}
    assert whole[0] == {0: (100, 100), 1: (0, 10), 2: (50, 340), 3: (7, 7)}
    assert whole[1] == {0: (100, 100), 1: (0, 0), 2: (50, 350), 3: (7, 7)}
    assert whole[2] == {0: (100, 100), 1: (0, 0), 2: (50, 50), 3: (7, 307)}
    assert whole[3] == whole[0]
