"""Helpers for end-to-end tests: a pipeline environment on the real session servers.

A `PipelineEnv` is a fresh topic, a fresh S3 bucket and a fresh embedded ledger, exposed
as the STREAMNOTARY_* environment variables the flows read, so a test exercises the same
configuration path an operator uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import layout
from storage.kafka import KafkaLog
from storage.objectstore import ObjectStore, open_store
from streamnotary.config import Settings, load_settings
from tasks.dwd import demo_files, read_observations
from tasks.record import Observation, canonical_bytes


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Poll `predicate` (50 ms steps) until it holds; AssertionError naming `what` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class PipelineEnv:
    home: Path
    kafka_bootstrap: str
    topic: str
    bucket: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    object_layout: str | None = None  # None: the configured default

    @property
    def env(self) -> dict[str, str]:
        layout_env = (
            {"STREAMNOTARY_OBJECT_LAYOUT": self.object_layout} if self.object_layout else {}
        )
        return {
            **layout_env,
            "STREAMNOTARY_HOME": str(self.home),
            "STREAMNOTARY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "STREAMNOTARY_TOPIC": self.topic,
            "STREAMNOTARY_STORE_URI": f"s3://{self.bucket}",
            "STREAMNOTARY_S3_ENDPOINT_URL": self.endpoint_url,
            "STREAMNOTARY_S3_ACCESS_KEY_ID": self.access_key_id,
            "STREAMNOTARY_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "STREAMNOTARY_LEDGER": "local",
            "STREAMNOTARY_READ_TIMEOUT_SECONDS": "30",
            # the test's own temporary directory is where its DWD files are written
            "STREAMNOTARY_INGEST_ROOTS": str(self.home.parent),
        }

    @contextmanager
    def active(self) -> Iterator[Settings]:
        """Set the environment for in-process flow calls, restoring it afterwards."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield load_settings()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run_cli(self, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
        """`streamnotary <args>` as a real process on this environment, reporting to the
        session's Prefect test server; with `kill_at` it SIGKILLs itself at that point."""
        from prefect.settings import PREFECT_API_URL

        child_env = {**os.environ, **self.env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        child_env.pop("STREAMNOTARY_KILL_AT", None)
        if kill_at:
            child_env["STREAMNOTARY_KILL_AT"] = kill_at
        return subprocess.run(
            [sys.executable, "-m", "streamnotary.cli", *args],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def settings(self) -> Settings:
        with self.active() as s:
            return s

    def store(self) -> ObjectStore:
        return open_store(self.settings())

    def log_entries(self, scope: str | None = None) -> list[dict[str, Any]]:
        """Every entry of the anchor log of `scope` (default: the topic's), as signed."""
        from storage.tlog import LogReader

        reader = LogReader(self.store(), scope or self.topic)
        head = reader.checkpoint()
        assert head is not None, f"no log at {scope or self.topic}"
        return list(reader.entries(0, head.size))

    def produce(self, messages: Iterable[tuple[bytes | None, bytes, int]]) -> int:
        with KafkaLog(self.kafka_bootstrap, self.topic) as log:
            log.ensure_topic(3)
            return log.produce(messages)  # type: ignore[arg-type]

    def produce_observations(self, observations: Iterable[Observation]) -> int:
        return self.produce(
            (o.station_id.encode(), canonical_bytes(o), int(o.observed_at.timestamp() * 1000))
            for o in observations
        )

    def checkpoints(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every stored checkpoint: per-window objects, and those in checkpoint packs
        (layout pack), found where the log entries locate them."""
        from storage.checkpoint_store import PackReader
        from storage.tlog import LogReader

        store = self.store()
        out = {}
        for key in store.list(f"checkpoints/{self.topic}/"):
            doc = json.loads(store.get(key))
            out[(doc["window"]["id"], doc["revision"])] = doc
        reader = LogReader(store, self.topic)
        head = reader.checkpoint()
        packs = PackReader(store, self.topic)
        for e in [] if head is None else reader.entries(0, head.size):
            if e["type"] == "window" and e.get("checkpoint") is not None:
                out[(e["window_id"], e["revision"])] = packs.of_entry(e)
        return out

    def roots(self) -> set[tuple[str, int, str]]:
        """(window id, revision, Merkle root) of every anchored revision: logged, and with a
        receipt unless its run's log entry says layout pack (which writes none)."""
        from storage.checkpoint_store import PackReader
        from storage.tlog import LogReader
        from tasks.window import WindowKey

        store = self.store()
        reader = LogReader(store, self.topic)
        head = reader.checkpoint()
        if head is None:
            return set()
        entries = list(reader.entries(0, head.size))
        packs = PackReader(store, self.topic)
        packed = {e["run"] for e in entries if e["type"] == "run" and e.get("layout") == "pack"}
        out = set()
        for e in entries:
            if e["type"] != "window":
                continue
            key, rev = WindowKey.parse(e["window_id"]), e["revision"]
            if (
                e["run"] not in packed
                and store.head(layout.receipt_key(self.topic, key, rev)) is None
            ):
                continue
            cp = packs.of_entry(e) or json.loads(
                store.get(layout.checkpoint_key(self.topic, key, rev))
            )
            out.add((e["window_id"], rev, cp["merkle"]["root"]))
        return out


def make_env(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, object_layout: str | None = None
) -> PipelineEnv:
    env = PipelineEnv(
        home=tmp_path / "home",
        kafka_bootstrap=kafka_bootstrap,
        topic=f"dwd.{uuid.uuid4().hex[:12]}",
        bucket=s3_server.new_bucket(),
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        object_layout=object_layout,
    )
    env.home.mkdir(parents=True)
    return env


def demo_observations(days: int | None = None) -> list[Observation]:
    """The shipped DWD observations of both stations, optionally only the first `days` days."""
    out: list[Observation] = []
    for path in demo_files():
        rows = list(read_observations(path))
        out += rows if days is None else rows[: 24 * days]
    return out
