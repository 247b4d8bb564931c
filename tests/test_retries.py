"""Retries that match reality: one table (tasks/retries.py), the docs, and real outages.

* docs/operations.md carries the table generated from the code, byte for byte;
* each dependency made unreachable for real (nothing listens on its port) raises an error
  the table calls transient, and a permanent failure (404, bad credentials) does not;
* through Prefect's task engine, a task whose dependency comes back after its first
  failure succeeds on its first retry (run_count 2), for the download host, S3, Kafka
  and the ledger node; a permanent failure is not retried (run_count 1).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, tags

from flows.ingest_dwd import INGEST_SCHEMA, Source, fetch_source, manifest_key, produce_sources
from storage.kafka import KafkaLog
from storage.ledger.base import LedgerUnavailable
from storage.ledger.evm import EvmLedger
from storage.objectstore import (
    ObjectStoreError,
    ObjectStoreUnavailable,
    S3ObjectStore,
    open_store,
)
from storage.sources import (
    FetchLimits,
    SourceError,
    SourceUnavailable,
    fetch_url,
    retrying_session,
)
from streamnotary.config import Settings
from streamnotary.services import free_port, start_kafka_server, stop_process
from tasks import retries, steps
from tasks.canonical import parse_document
from tasks.planner import Cursor
from tasks.revision import document_bytes
from tests.dwd_data import product_file
from tests.outage import Forwarder, restore_when_retrying, task_runs

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- retries:begin (generated: python -m tasks.retries) -->\n"
END = "<!-- retries:end -->"


def test_operations_guide_states_the_retry_table_of_the_code() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    assert BEGIN in text and END in text, "docs/operations.md lost its generated retry table"
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert documented == retries.render_markdown(retries.all_tasks())
    # the numbers the prose quotes are the ones the tasks declare
    assert steps.IO_RETRIES["retries"] == 3 and steps.IO_RETRIES["retry_delay_seconds"] == [
        2,
        10,
        30,
    ]
    assert "retries=3, retry_delay_seconds=[2, 10, 30]" in text
    for step in (steps.load_cursor, steps.anchor_head, fetch_source, produce_sources):
        t = getattr(step, "task", step)  # steps.unwalked wraps the Task
        assert (t.retries, t.retry_delay_seconds) == (3, [2, 10, 30]), t.name
        assert t.retry_condition_fn is retries.retry_condition


# -- classification of real failures -------------------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    """200 with a DWD product file at /ok.txt; 404 elsewhere; 503 at /busy."""

    def do_GET(self) -> None:
        if self.path == "/ok.txt":
            body = product_file("00433").read_bytes()
            self.send_response(200)
        else:
            body = b"no"
            self.send_response(503 if self.path == "/busy" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(port: int) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def http_host() -> Iterator[str]:
    server = _serve(free_port())
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _raised(fn: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_unreachable_download_host_is_transient_and_a_404_permanent(http_host: str) -> None:
    fast = functools.partial(fetch_url, session=retrying_session(retries=1, backoff_seconds=0.01))
    refused = _raised(lambda: fast(f"http://127.0.0.1:{free_port()}/x.zip"))
    no_dns = _raised(lambda: fast("http://streamnotary-outage-test.invalid/x.zip"))
    busy = _raised(lambda: fast(f"{http_host}/busy"))
    missing = _raised(lambda: fast(f"{http_host}/gone.zip"))
    for exc in (refused, no_dns, busy):
        assert isinstance(exc, SourceUnavailable), exc
        assert retries.classify(exc) == "transient"
    assert type(missing) is SourceError and retries.classify(missing) == "permanent"


def test_unreachable_s3_is_transient_and_bad_credentials_permanent(s3_server: Any) -> None:
    bucket = s3_server.new_bucket()
    down = S3ObjectStore(
        bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="a",
        secret_access_key="b",
        max_attempts=1,
    )
    exc = _raised(lambda: down.get("k"))
    assert isinstance(exc, ObjectStoreUnavailable) and retries.classify(exc) == "transient"
    wrong = S3ObjectStore(
        bucket,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key="not-the-secret",
        max_attempts=1,
    )
    exc = _raised(lambda: wrong.put("k", b"v"))
    assert isinstance(exc, ObjectStoreError) and not isinstance(exc, ObjectStoreUnavailable)
    assert retries.classify(exc) == "permanent"


def test_unreachable_ledger_node_is_transient(tmp_path: Path) -> None:
    node = EvmLedger(
        f"http://127.0.0.1:{free_port()}",
        retries=1,
        timeout=1,
        deployments_file=tmp_path / "evm.json",
    )
    exc = _raised(lambda: node.sender)
    assert isinstance(exc, LedgerUnavailable) and retries.classify(exc) == "transient"


def test_bad_data_and_conflicts_are_permanent() -> None:
    from storage.ledger.base import AnchorConflict
    from storage.objectstore import ObjectConflict
    from tasks.dwd import DwdFormatError
    from tasks.planner import CursorError

    for exc in (
        AnchorConflict("k"),
        ObjectConflict("k"),
        CursorError("c"),
        DwdFormatError("f", 1, "bad", "x", "raw"),
        KeyError("a bug"),
    ):
        assert retries.classify(exc) == "permanent", exc


# -- real outages through Prefect's retries ------------------------------------------------


def _run_tagged(fn: Any) -> tuple[str, Any]:
    """Run `fn` inside a flow with a unique tag; return the tag and the result."""
    tag = f"outage-{uuid.uuid4().hex[:10]}"

    @flow(name="retry-drill")
    def drill() -> Any:
        with tags(tag):
            return fn()

    return tag, drill()


def _attempts(tag: str) -> list[tuple[str, int, str]]:
    return [(r.name.rsplit("-", 1)[0], r.run_count, r.state.name) for r in task_runs(tag)]


def _check_watcher(watcher: threading.Thread) -> None:
    watcher.join(timeout=5)
    assert not watcher.errors, watcher.errors  # type: ignore[attr-defined]


@pytest.mark.usefixtures("prefect_harness")
def test_download_outage_is_retried_until_the_host_is_back(tmp_path: Path) -> None:
    port = free_port()
    servers: list[http.server.ThreadingHTTPServer] = []
    try:
        tag, path = _with_watcher(
            lambda: servers.append(_serve(port)),
            lambda: fetch_source(f"http://127.0.0.1:{port}/ok.txt", str(tmp_path), FetchLimits()),
        )
    finally:
        for s in servers:
            s.shutdown()
    assert path.read_bytes() == product_file("00433").read_bytes()
    assert _attempts(tag) == [("fetch-source", 2, "Completed")]


@pytest.mark.usefixtures("prefect_harness")
def test_permanent_download_failure_is_not_retried(http_host: str, tmp_path: Path) -> None:
    tag = f"outage-{uuid.uuid4().hex[:10]}"

    @flow(name="retry-drill")
    def drill() -> Any:
        with tags(tag):
            state = fetch_source(
                f"{http_host}/gone.zip", str(tmp_path), FetchLimits(), return_state=True
            )
            return state.is_failed()

    assert drill() is True
    assert _attempts(tag) == [("fetch-source", 1, "Failed")]


def _with_watcher(restore: Any, fn: Any) -> tuple[str, Any]:
    holder: dict[str, threading.Thread] = {}

    def body() -> Any:
        from prefect.context import TagsContext

        (tag,) = [t for t in TagsContext.get().current_tags if t.startswith("outage-")]
        holder["w"] = restore_when_retrying(tag, restore)
        return fn()

    tag, result = _run_tagged(body)
    _check_watcher(holder["w"])
    return tag, result


@pytest.mark.usefixtures("prefect_harness")
def test_s3_outage_is_retried_until_the_store_is_back(s3_server: Any, tmp_path: Path) -> None:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = Forwarder(host, int(port))
    settings = Settings(
        home=str(tmp_path),
        store_uri=f"s3://{s3_server.new_bucket()}",
        s3_endpoint_url=proxy.url,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
    )
    try:
        tag, cursor = _with_watcher(proxy.start, lambda: steps.load_cursor(settings))
    finally:
        proxy.stop()
    assert cursor == Cursor.empty(settings.topic, settings.window_seconds)
    assert _attempts(tag) == [("load-cursor", 2, "Completed")]


@pytest.mark.usefixtures("prefect_harness")
def test_ledger_node_outage_is_retried_until_the_node_is_back(
    anvil_node: Any, tmp_path: Path
) -> None:
    from tasks.run_log import head_entry

    proxy = Forwarder("127.0.0.1", anvil_node.port)
    settings = Settings(home=str(tmp_path), ledger="evm", ledger_url=proxy.url)
    entry = head_entry(f"t{uuid.uuid4().hex[:8]}", 3, "ab" * 32, 0)
    try:
        tag, ref = _with_watcher(proxy.start, lambda: steps.anchor_head(settings, entry))
    finally:
        proxy.stop()
    assert ref.backend == "evm" and ref.digest == entry.digest
    assert _attempts(tag) == [("anchor-head", 2, "Completed")]


@pytest.mark.usefixtures("prefect_harness")
def test_kafka_outage_is_retried_and_the_retry_skips_sources_already_produced(
    tmp_path: Path,
) -> None:
    port = free_port()
    brokers: list[Any] = []
    settings = Settings(
        home=str(tmp_path),
        kafka_bootstrap=f"127.0.0.1:{port}",
        topic="t.outage",
        partitions=1,
        store_uri=(tmp_path / "objects").as_uri(),
    )

    def start_broker() -> None:
        brokers.append(start_kafka_server(tmp_path / "kafka", tmp_path / "kafka.log", port=port))

    # the failed attempt had produced 00427 and written its manifest: the retry skips it
    sources = [
        Source(str(p), p, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (product_file("00427"), product_file("00433"))
    ]
    manifest = {"schema": INGEST_SCHEMA, "sha256": sources[0].sha256, "records": 13_200}
    store = open_store(settings)
    store.put_once(manifest_key(settings.topic, sources[0].sha256), document_bytes(manifest))
    try:
        tag, counts = _with_watcher(start_broker, lambda: produce_sources(settings, sources, False))
        with KafkaLog(settings.kafka_bootstrap, settings.topic) as log:
            assert log.watermarks(0)[1] == 13_200  # 00433's observations, once
        assert [c["records"] for c in counts] == [13_200, 13_200]
        written = parse_document(store.get(manifest_key(settings.topic, sources[1].sha256)))
        assert written["records"] == 13_200 and written["stations"] == ["00433"]
    finally:
        for b in brokers:
            stop_process(b.process)
    assert _attempts(tag) == [("produce-sources", 2, "Completed")]
