"""ingest-dwd: DWD product files (path, zip archive or URL) → Kafka.

Each observation is produced with key = station id, timestamp = observation time and
value = its canonical JSON, by the idempotent producer. Re-running is harmless: a
source whose bytes were ingested completely before (an `ingest/` manifest exists for
its SHA-256) is skipped; a run that died half-way re-produces the file, and the copies
collapse in the windows' deduplication (counted as duplicates, never double-counted).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.runtime import task_run

from storage.kafka import KafkaLog, shared_producers
from storage.objectstore import ObjectNotFound, ObjectStore, open_store
from storage.sources import FetchLimits, fetch_url
from streamnotary.config import Settings, load_settings
from streamnotary.masking import mask_text
from streamnotary.paths import check_source
from tasks.canonical import parse_document
from tasks.dwd import DwdFormatError, read_observations
from tasks.record import canonical_bytes
from tasks.revision import document_bytes
from tasks.steps import IO_RETRIES, report_progress

INGEST_SCHEMA = "streamnotary.ingest/1"


def manifest_prefix(topic: str) -> str:
    return f"ingest/{topic}/"


def manifest_key(topic: str, sha256: str) -> str:
    return f"{manifest_prefix(topic)}{sha256}.json"


def source_path(source: str, workdir: str, limits: FetchLimits) -> Path:
    """A local path for `source`: a local file as it is, a URL through `fetch_source`.

    Only a download is a task (and a task run in the UI): a local file needs no retries,
    and a backfill of thousands of archives would otherwise send the Prefect server a
    task run per file for nothing.
    """
    if source.startswith(("http://", "https://")):
        return fetch_source(source, workdir, limits)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such DWD file: {source}")
    return path


@task(name="fetch-source", **IO_RETRIES)
def fetch_source(source: str, workdir: str, limits: FetchLimits) -> Path:
    """A local path for `source`; URLs (DWD open data serves zip archives) are downloaded.

    The HTTP session itself retries connection errors and 429/5xx answers with backoff
    (storage.sources); the task-level retries cover longer outages.
    """
    if not source.startswith(("http://", "https://")):
        return source_path(source, workdir, limits)
    name = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    target = Path(workdir) / name
    target.write_bytes(fetch_url(source, limits=limits))
    return target


@task(name="list-ingested", **IO_RETRIES)
def ingested_sources(settings: Settings) -> frozenset[str]:
    """The SHA-256 of every source with an ingest manifest in this topic: one listing
    instead of a lookup (and a task run) per source."""
    prefix, suffix = manifest_prefix(settings.topic), ".json"
    stems = (
        key[len(prefix) : -len(suffix)]
        for key in open_store(settings).list(prefix)
        if key.endswith(suffix)
    )
    # a backfill's start markers (`<sha256>.started.json`) are not manifests
    return frozenset(stem for stem in stems if "/" not in stem and "." not in stem)


@dataclass(frozen=True)
class Source:
    """A source to produce: as given (`name`), as a local file (`path`), and its SHA-256."""

    name: str
    path: Path
    sha256: str


# Sources are produced in batches, one `produce-sources` task run per batch: a task run
# costs Prefect ~20 ms (its states and events), which a backfill of thousands of small
# archives paid per file on top of ~20 ms of real work. A batch ends at BATCH_SOURCES
# sources or BATCH_BYTES of source files, so a task run stays a unit an operator can
# follow and retry, and a batch of downloads stays bounded on disk.
BATCH_SOURCES = 64
BATCH_BYTES = 64 << 20
MANIFEST_WRITERS = 4


def read_manifest(store: ObjectStore, key: str) -> Any:
    try:
        return parse_document(store.get(key))
    except ObjectNotFound:
        return None


def manifest_records(manifest: Any) -> int | None:
    """The manifest's record count; None when it has none (a bucket writer may put anything
    under `ingest/`: it is shown as unknown, never a traceback)."""
    records = manifest.get("records") if isinstance(manifest, dict) else None
    return records if type(records) is int and records >= 0 else None


@task(name="check-ingested", **IO_RETRIES)
def already_ingested(settings: Settings, shas: list[str]) -> dict[str, Any]:
    """The ingest manifests of `shas` (each listed as ingested), read in parallel."""
    store = open_store(settings)
    with ThreadPoolExecutor(MANIFEST_WRITERS) as pool:
        docs = pool.map(lambda sha: store.get(manifest_key(settings.topic, sha)), shas)
        return {sha: parse_document(doc) for sha, doc in zip(shas, docs, strict=True)}


@task(name="produce-sources", **IO_RETRIES)
def produce_sources(
    settings: Settings, sources: list[Source], lenient: bool
) -> list[dict[str, Any]]:
    """Produce every observation of each source, then write its manifest; one manifest
    per source, each written only once all of that source's messages are acknowledged
    (the manifest is what makes a re-run skip the source).

    A manifest's PUT overlaps the next source's produce. A retry skips the sources whose
    manifests the failed attempt wrote; a source it had produced only in part is produced
    again, and the copies collapse in the windows' deduplication.
    """
    store = open_store(settings)
    retrying = (task_run.run_count or 1) > 1
    results: list[dict[str, Any]] = []
    with (
        KafkaLog.from_settings(settings) as log,
        ThreadPoolExecutor(MANIFEST_WRITERS) as writers,
    ):
        log.ensure_topic(settings.partitions)
        written: list[Future[Any]] = []
        for source in sources:
            key = manifest_key(settings.topic, source.sha256)
            if retrying and (done := read_manifest(store, key)) is not None:
                results.append({"records": manifest_records(done) or 0, "skipped": False})
                continue
            manifest = produce_file(settings, log, source, lenient)
            written.append(
                writers.submit(store.put_once, key, document_bytes(manifest), "application/json")
            )
            results.append({"records": manifest["records"], "skipped": False})
        for future in written:
            future.result()
    return results


def produce_file(
    settings: Settings, log: KafkaLog, source: Source, lenient: bool
) -> dict[str, Any]:
    """Read the file, produce every observation and return its `streamnotary.ingest/1`
    manifest."""
    rejected: list[dict[str, Any]] = []

    def quarantine(error: DwdFormatError) -> None:
        rejected.append(error.to_json())

    observations = list(
        read_observations(
            source.path, lenient=lenient, quarantine=quarantine, limits=settings.dwd_limits
        )
    )
    total = len(observations)
    messages = (
        (o.station_id.encode(), canonical_bytes(o), int(o.observed_at.timestamp() * 1000))
        for o in observations
    )
    done = 0

    def progress(increment: int) -> None:
        nonlocal done
        done += increment
        report_progress(f"produce:{source.path.name}", done, total)

    produced = log.produce(messages, on_progress=progress)
    return {
        "schema": INGEST_SCHEMA,
        "source": mask_text(source.name),  # a signed URL's query is a credential
        "file": source.path.name,
        "sha256": source.sha256,
        "topic": settings.topic,
        "records": produced,
        "stations": sorted({o.station_id for o in observations}),
        "first_observed_at": _iso(min((o.observed_at for o in observations), default=None)),
        "last_observed_at": _iso(max((o.observed_at for o in observations), default=None)),
        "rejected_lines": rejected,
    }


@flow(name="ingest-dwd", log_prints=True)
def ingest_dwd(
    sources: Sequence[str], topic: str | None = None, lenient: bool = False
) -> dict[str, Any]:
    """Produce DWD observation files into Kafka; returns per-source counts."""
    settings = load_settings(topic=topic)
    # Sources come from whoever may start a run: only configured roots and URL prefixes.
    roots = [str(r) for r in settings.ingest_root_paths]
    for source in sources:
        check_source(source, roots, settings.ingest_url_prefixes)
    results: dict[str, Any] = {}
    with (
        shared_producers(),  # one producer for every file, not a new one per file
        tempfile.TemporaryDirectory(prefix="streamnotary-ingest-") as workdir,
    ):
        ingested = ingested_sources(settings)
        produced: set[str] = set()  # this run's: a file given twice is produced once
        for batch in batches(sources, workdir, FetchLimits.from_settings(settings)):
            done = [s for s in batch if s.sha256 in ingested]
            todo: list[Source] = []
            for source in batch:
                if source.sha256 not in ingested and source.sha256 not in produced:
                    todo.append(source)
                    produced.add(source.sha256)
            manifests = already_ingested(settings, [s.sha256 for s in done]) if done else {}
            counts = produce_sources(settings, todo, lenient) if todo else []
            made = {id(s): c for s, c in zip(todo, counts, strict=True)}
            for source in batch:
                if source.path.parent == Path(workdir):  # a download is kept only this long
                    source.path.unlink(missing_ok=True)
                shown, sha = mask_text(source.name), source.sha256
                if id(source) in made:
                    records = made[id(source)]["records"]
                    print(f"{shown}: produced {records} observations to {settings.topic}")
                    results[source.name] = {"records": records, "skipped": False, "sha256": sha}
                    continue
                if sha in manifests:
                    records = manifest_records(manifests[sha])
                    told = "an unknown number of" if records is None else records
                    print(f"{shown}: already ingested ({told} records), skipped")
                else:
                    print(f"{shown}: the same file as an earlier source of this run, skipped")
                results[source.name] = {"records": 0, "skipped": True, "sha256": sha}
    return results


def batches(sources: Sequence[str], workdir: str, limits: FetchLimits) -> Iterator[list[Source]]:
    """The sources, as local files with their SHA-256, in batches (BATCH_SOURCES,
    BATCH_BYTES); a URL is downloaded when its batch is being filled."""
    batch: list[Source] = []
    size = 0
    for name in sources:
        path = source_path(name, workdir, limits)
        data = path.read_bytes()
        batch.append(Source(name, path, hashlib.sha256(data).hexdigest()))
        size += len(data)
        if len(batch) >= BATCH_SOURCES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _iso(t: Any) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")
