"""The catch-up's read-ahead (flows/read_ahead.py) on the real broker.

A run takes what its predecessor read ahead only for exactly its own offset ranges and
log scope; a read-ahead of other ranges, of another scope or one that failed is dropped
and the run reads for itself. Outside a catch-up nothing is read ahead. (That a catch-up
anchors the same roots with it: tests/test_backlog.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows import read_ahead
from tasks import steps
from tests.pipeline_env import PipelineEnv, demo_observations, make_env


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, s3_server: Any
) -> PipelineEnv:
    env = make_env(Path(tmp_path_factory.mktemp("read-ahead")), kafka_bootstrap, s3_server)
    env.produce_observations(demo_observations(days=3))
    return env


def whole(ends: dict[int, int]) -> dict[int, tuple[int, int]]:
    return {p: (0, end) for p, end in ends.items()}


def test_a_run_takes_the_read_ahead_of_exactly_its_ranges(env: PipelineEnv) -> None:
    settings = env.settings()
    ranges = whole(steps.end_offsets(settings))
    assert sum(end for _, end in ranges.values()) == 144  # 3 days x 24 hours x 2 stations
    with read_ahead.read_ahead() as ahead:
        read_ahead.start(settings, whole)
        taken = read_ahead.take(settings, ranges)
        assert taken == steps.read_pages(settings, ranges)
        assert ahead.taken == 1
        assert read_ahead.take(settings, ranges) is None  # taken once: the next run reads


def test_other_ranges_another_scope_or_a_failed_read_are_not_taken(
    env: PipelineEnv, tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    settings = env.settings()
    ranges = whole(steps.end_offsets(settings))
    shorter = {p: (lo, hi - 1) for p, (lo, hi) in ranges.items()}
    other = make_env(tmp_path, kafka_bootstrap, s3_server)
    with read_ahead.read_ahead() as ahead:
        read_ahead.start(settings, whole)
        assert read_ahead.take(settings, shorter) is None  # the run's ranges differ
        read_ahead.start(settings, whole)
        assert read_ahead.take(other.settings(), ranges) is None  # another topic's run
        assert read_ahead.take(settings, ranges) is not None  # still there for its own
        # ranges beyond the high watermark: the read fails, the run reads for itself
        beyond = {p: (lo, hi + 5) for p, (lo, hi) in ranges.items()}
        read_ahead.start(settings, lambda ends: beyond)
        assert read_ahead.take(settings, beyond) is None
        assert ahead.taken == 1


def test_nothing_is_read_ahead_outside_a_catch_up(env: PipelineEnv) -> None:
    settings = env.settings()
    ranges = whole(steps.end_offsets(settings))
    read_ahead.start(settings, whole)  # no catch-up: nothing starts
    with read_ahead.read_ahead():
        assert read_ahead.take(settings, ranges) is None
