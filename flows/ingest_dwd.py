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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task

from storage.kafka import KafkaLog, shared_producers
from storage.objectstore import ObjectNotFound, open_store
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


@task(name="check-ingested", **IO_RETRIES)
def already_ingested(settings: Settings, sha256: str) -> dict[str, Any] | None:
    try:
        return parse_document(open_store(settings).get(manifest_key(settings.topic, sha256)))
    except ObjectNotFound:
        return None


@task(name="produce-observations", **IO_RETRIES)
def produce_observations(settings: Settings, path: Path, lenient: bool) -> dict[str, Any]:
    """Read the file and produce every observation; returns counts for the manifest."""
    rejected: list[dict[str, Any]] = []

    def quarantine(error: DwdFormatError) -> None:
        rejected.append(error.to_json())

    observations = list(
        read_observations(path, lenient=lenient, quarantine=quarantine, limits=settings.dwd_limits)
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
        report_progress(f"produce:{path.name}", done, total)

    with KafkaLog.from_settings(settings) as log:
        log.ensure_topic(settings.partitions)
        produced = log.produce(messages, on_progress=progress)
    return {
        "records": produced,
        "stations": sorted({o.station_id for o in observations}),
        "first_observed_at": min((o.observed_at for o in observations), default=None),
        "last_observed_at": max((o.observed_at for o in observations), default=None),
        "rejected_lines": rejected,
    }


@task(name="write-ingest-manifest", **IO_RETRIES)
def write_manifest(settings: Settings, sha256: str, manifest: dict[str, Any]) -> None:
    open_store(settings).put_once(
        manifest_key(settings.topic, sha256), document_bytes(manifest), "application/json"
    )


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
        for source in sources:
            path = source_path(source, workdir, FetchLimits.from_settings(settings))
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            done = already_ingested(settings, sha) if sha in ingested else None
            if done is not None:
                print(f"{mask_text(source)}: already ingested ({done['records']} records), skipped")
                results[source] = {"records": 0, "skipped": True, "sha256": sha}
                continue
            counts = produce_observations(settings, path, lenient)
            manifest = {
                "schema": INGEST_SCHEMA,
                "source": mask_text(source),  # a signed URL's query is a credential
                "file": path.name,
                "sha256": sha,
                "topic": settings.topic,
                "records": counts["records"],
                "stations": counts["stations"],
                "first_observed_at": _iso(counts["first_observed_at"]),
                "last_observed_at": _iso(counts["last_observed_at"]),
                "rejected_lines": counts["rejected_lines"],
            }
            write_manifest(settings, sha, manifest)
            shown = mask_text(source)
            print(f"{shown}: produced {counts['records']} observations to {settings.topic}")
            results[source] = {"records": counts["records"], "skipped": False, "sha256": sha}
    return results


def _iso(t: Any) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")
