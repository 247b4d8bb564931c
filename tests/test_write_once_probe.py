"""The startup probe refuses an S3 server that does not honour conditional writes.

Positive case on the real SeaweedFS; negative case on a real (deliberately naive) HTTP
server speaking S3 that ignores If-None-Match and If-Match (tests/naive_s3.py). The CLI
drill shows a run refusing such a store before it writes anything but the probe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.localstore import LocalObjectStore
from storage.objectstore import S3ObjectStore
from storage.writeonce import PROBE_PREFIX, WriteOnceNotEnforced, check_write_once
from streamnotary.commands.pipeline import EXIT_STORE_UNSAFE
from tests.naive_s3 import NaiveS3

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def naive() -> Iterator[NaiveS3]:
    with NaiveS3() as server:
        yield server


def naive_store(server: NaiveS3, **kwargs: object) -> S3ObjectStore:
    return S3ObjectStore(
        "naive-bucket",
        endpoint_url=server.url,
        access_key_id="naive",
        secret_access_key="naive-secret",
        max_attempts=1,
        **kwargs,  # type: ignore[arg-type]
    )


def test_seaweedfs_honours_conditional_writes(s3_store: S3ObjectStore) -> None:
    assert check_write_once(s3_store) == "if-none-match"
    assert list(s3_store.list(PROBE_PREFIX)) == []  # the probe cleans up after itself


def test_a_server_that_ignores_if_none_match_is_refused(naive: NaiveS3) -> None:
    with pytest.raises(WriteOnceNotEnforced, match="If-None-Match") as err:
        check_write_once(naive_store(naive))
    assert "naive-bucket" in str(err.value) and "Object Lock" in str(err.value)
    assert naive.writes and all(k.startswith(PROBE_PREFIX) for k in naive.writes)


def test_object_lock_covers_a_server_without_conditional_writes() -> None:
    with NaiveS3(object_lock=True) as server:
        assert check_write_once(naive_store(server, object_lock_days=1)) == "object-lock"
        with pytest.raises(WriteOnceNotEnforced):  # Object Lock on, but not used by writes
            check_write_once(naive_store(server, object_lock_days=0))


def test_local_directories_enforce_write_once_by_link(tmp_path: Path) -> None:
    assert check_write_once(LocalObjectStore(tmp_path)) == "link"


@pytest.mark.usefixtures("prefect_harness")
def test_anchor_refuses_to_run_on_a_store_that_overwrites(naive: NaiveS3, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAMNOTARY_HOME": str(tmp_path / "home"),
        "STREAMNOTARY_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # never reached: refused before
        "STREAMNOTARY_STORE_URI": "s3://naive-bucket",
        "STREAMNOTARY_S3_ENDPOINT_URL": naive.url,
        "STREAMNOTARY_S3_ACCESS_KEY_ID": "naive",
        "STREAMNOTARY_S3_SECRET_ACCESS_KEY": "naive-secret",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", "anchor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == EXIT_STORE_UNSAFE, done.stderr[-3000:]
    assert "does not honour conditional writes" in done.stderr
    assert all(k.startswith(PROBE_PREFIX) for k in naive.writes), naive.writes
