"""audit: the on-demand verification flow, and single-record proofs.

The flow fetches the evidence for the selected window revisions and hands it to the pure
checks of `tasks.audit`:

1. discover the selected windows from the receipts and checkpoints in the object store,
   and load those small documents;
2. read every partition of the topic **once** for the whole run, from the lowest offset
   any selected revision needs to the current high watermark, and classify each message
   once (the re-read of the offset ranges *and* the scan for late data come from this
   one read);
3. window by window, fetch the payload and the ledger entries (one lookup per batch,
   shared by its windows), run the checks, and drop the payload again;
4. publish the report: Prefect artifacts (markdown summary + table), optional JSON
   (`streamnotary.audit-report/1`) and HTML files.

All selected windows are audited before the flow fails; it then raises `AuditFailed`
(carrying the report) if any check failed. ``pending`` and ``not_checkable`` do not fail
the flow but are never reported as ``pass`` (the CLI exits 2 for them).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from storage import layout
from storage.kafka import KafkaLog, OffsetRangeUnavailable
from storage.ledger.base import EntryNotFound, Ledger, LedgerError, LedgerUnavailable
from storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError, open_store
from streamnotary.config import Settings, load_settings
from streamnotary.paths import resolve_output
from streamnotary.report import (
    build_report,
    render_html,
    render_markdown,
    report_table,
    validate_report,
)
from tasks.audit import (
    FAIL,
    Finding,
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    WindowAudit,
    audit_window,
    integrity_from_error,
)
from tasks.audit.documents import (
    CHECKPOINT_SCHEMA_FILE,
    KINDS,
    RECEIPT_SCHEMA_FILE,
    parse_object_name,
    parse_window_id,
    schema_problem,
)
from tasks.checkpoint import checkpoint_digest, ranges_of
from tasks.merkle import merkle_root
from tasks.message import classify
from tasks.payload import PayloadError, decode_payload
from tasks.proof_bundle import LedgerEvidence, make_bundle
from tasks.record import canonical_bytes
from tasks.window import WindowKey, WindowSpec, WindowSpecError


class AuditFailed(RuntimeError):
    """At least one check of one selected window failed; `report` holds the full report."""

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [w["window_id"] for w in report["windows"] if w["verdict"] == FAIL]
        super().__init__(
            f"audit failed for {len(failed)} window(s): {', '.join(failed[:10])}"
            + (" ..." if len(failed) > 10 else "")
        )
        self.report = report


class SelectionError(ValueError):
    """The window selection is empty or malformed."""


class ProofError(RuntimeError):
    """No proof can be produced for the requested record."""


# ---------------------------------------------------------------------------------------
# Window selection
# ---------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """Accept ``2019-09-07T17:00Z``, ``2019-09-07T17:00:00Z``, offsets, or a bare date (UTC)."""
    try:
        t = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise SelectionError(f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Selection:
    """Which windows to audit: ids, a station, a time range, the latest N, or all.

    Criteria combine (a station and a time range select that station's windows that
    overlap the range); `latest` then keeps the N windows that end last.
    """

    window_ids: tuple[str, ...] = ()
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    latest: int | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if not (
            self.window_ids or self.station or self.since or self.until or self.latest or self.all
        ):
            raise SelectionError(
                "select windows: ids, --station, --since/--until, --latest N or --all"
            )
        if self.latest is not None and self.latest < 1:
            raise SelectionError("--latest must be at least 1")
        for wid in self.window_ids:
            try:
                parse_window_id(wid)
            except WindowSpecError as exc:
                raise SelectionError(str(exc)) from exc

    def matches(self, key: WindowKey) -> bool:
        if self.window_ids and key.window_id not in self.window_ids:
            return False
        if self.station and key.station_id != self.station:
            return False
        if self.since and key.end <= self.since:
            return False
        return not (self.until and key.start >= self.until)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_ids": list(self.window_ids),
            "station": self.station,
            "since": _ts(self.since),
            "until": _ts(self.until),
            "latest": self.latest,
            "all": self.all,
        }


@dataclass
class Discovery:
    """Selected windows and their revisions, plus what the listing could not attribute.

    `window_findings` hold stray objects under a window's prefix (reported on that
    window); `run_findings` hold objects that name no window at all (reported on the run).
    """

    windows: dict[WindowKey, list[int]] = field(default_factory=dict)
    window_findings: dict[WindowKey, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)


def discover_windows(store: ObjectStore, topic: str, selection: Selection) -> Discovery:
    """Selected windows and their revisions, from receipts, checkpoints *and* payloads.

    All three are listed so that a checkpoint without a receipt (never anchored), a
    receipt whose checkpoint is gone and a lone payload are all audited, and all fail.
    Object names are hostile input: anything that does not follow `storage.layout` is a
    finding (`tasks.audit.documents.parse_object_name`), never an exception.
    """
    if selection.window_ids and not selection.all:
        suffixes = [
            layout.window_receipts_prefix(topic, parse_window_id(w)).removeprefix("receipts/")
            for w in selection.window_ids
        ]
    else:
        suffixes = [layout.receipts_prefix(topic, selection.station).removeprefix("receipts/")]
    found: dict[WindowKey, set[int]] = defaultdict(set)
    out = Discovery()
    for suffix in suffixes:
        for kind in KINDS:
            for k in store.list(f"{kind}/{suffix}"):
                name = parse_object_name(topic, k)
                if name.window is None:
                    out.run_findings.append(name.finding())
                    continue
                if not selection.matches(name.window):
                    continue
                found[name.window]  # a window named only by stray objects is still reported
                if name.revision is None:
                    out.window_findings.setdefault(name.window, []).append(name.finding())
                else:
                    found[name.window].add(name.revision)
    keys = sorted(found, key=lambda k: (k.start, k.station_id, k.size_seconds))
    if selection.latest is not None:
        keys = sorted(keys, key=lambda k: (k.end, k.station_id))[-selection.latest :]
        keys.sort(key=lambda k: (k.start, k.station_id, k.size_seconds))
    out.windows = {k: sorted(found[k]) for k in keys}
    return out


# ---------------------------------------------------------------------------------------
# Evidence fetching
# ---------------------------------------------------------------------------------------


def _load_json(store: ObjectStore, key: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = json.loads(store.get(key))
    except ObjectNotFound:
        return None, "missing from the object store"
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, None


@dataclass
class Documents:
    """The small documents of every selected revision, and the findings of discovery."""

    revisions: dict[WindowKey, list[RevisionInputs]]
    window_findings: dict[WindowKey, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)


def load_documents(store: ObjectStore, topic: str, discovery: Discovery) -> Documents:
    """Receipts and checkpoints of every selected revision (payloads come later)."""
    out: dict[WindowKey, list[RevisionInputs]] = {}
    for key, revisions in discovery.windows.items():
        items = []
        for rev in revisions:
            inp = RevisionInputs(
                revision=rev,
                receipt_key=layout.receipt_key(topic, key, rev),
                checkpoint_key=layout.checkpoint_key(topic, key, rev),
                payload_key=layout.payload_key(topic, key, rev),
            )
            inp.receipt, inp.receipt_problem = _load_json(store, inp.receipt_key)
            inp.checkpoint, inp.checkpoint_problem = _load_json(store, inp.checkpoint_key)
            items.append(inp)
        out[key] = items
    return Documents(out, discovery.window_findings, discovery.run_findings)


def read_partitions(
    kafka: KafkaLog,
    documents: dict[WindowKey, list[RevisionInputs]],
    timeout_s: float,
) -> KafkaView:
    """Read each partition once: from the lowest needed offset to the high watermark.

    Partitions that no selected range touches are read from their low watermark, so that
    late data produced into any partition is still found.
    """
    starts: dict[int, int] = {}
    for revisions in documents.values():
        for inp in revisions:
            if inp.checkpoint is None or schema_problem(inp.checkpoint, CHECKPOINT_SCHEMA_FILE):
                continue  # a hostile checkpoint must not steer the read
            ranges = ranges_of(inp.checkpoint)
            for p, (lo, _hi) in ranges.items():
                starts[p] = min(lo, starts.get(p, lo))
    sizes = sorted({k.size_seconds for k in documents})
    specs = [WindowSpec(s) for s in sizes]
    scans: list[PartitionScan] = []
    classified = []
    for p in kafka.partitions():
        low, high = kafka.watermarks(p)
        start = max(starts.get(p, low), low)
        if start >= high:
            scans.append(PartitionScan(p, start, high, low))
            continue
        try:
            messages = kafka.read_range(p, start, high, timeout_s=timeout_s)
        except OffsetRangeUnavailable as exc:
            scans.append(PartitionScan(p, start, high, low, error=str(exc)))
            continue
        scans.append(PartitionScan(p, start, high, low, messages=len(messages)))
        for spec in specs:
            classified.extend(
                c for c in (classify(m, spec) for m in messages) if c.window in documents
            )
    return KafkaView.of(scans, classified)


@dataclass
class LedgerReader:
    """Ledger lookups for an audit run, cached by key (all windows of a batch share one)."""

    ledger: Ledger
    cache: dict[str, LedgerObservation] = field(default_factory=dict)

    def observe(self, key: str) -> LedgerObservation:
        if key not in self.cache:
            self.cache[key] = self._observe(key)
        return self.cache[key]

    def _observe(self, key: str) -> LedgerObservation:
        try:
            ref = self.ledger.lookup(key)
            if ref is None:
                return LedgerObservation(key)
            return LedgerObservation(key, ref=ref, body=self.ledger.read(ref))
        except EntryNotFound:
            return LedgerObservation(key)
        except LedgerUnavailable as exc:
            return LedgerObservation(key, error=str(exc), unavailable=True)
        except LedgerError as exc:
            return LedgerObservation(key, error=f"{type(exc).__name__}: {exc}")

    def integrity(self) -> LedgerIntegrity:
        try:
            self.ledger.verify_integrity()
        except LedgerUnavailable as exc:
            return LedgerIntegrity(
                self.ledger.backend, ok=False, detail=f"unavailable: {exc}", seq=-1
            )
        except LedgerError as exc:
            return integrity_from_error(self.ledger.backend, exc)
        return LedgerIntegrity(self.ledger.backend)


def fetch_evidence(
    store: ObjectStore, reader: LedgerReader, topic: str, key: WindowKey, inp: RevisionInputs
) -> None:
    """Fill in the payload and the ledger observations of one revision."""
    try:
        inp.payload = store.get(inp.payload_key)
    except ObjectNotFound:
        inp.payload_problem = "missing from the object store"
    except ObjectStoreError as exc:
        inp.payload_problem = str(exc)
    inp.payload_uri = store.uri(inp.payload_key)
    rc = inp.receipt
    if rc is None:
        return
    try:
        inp.batch_entry = reader.observe(layout.batch_entry_key(topic, str(rc["batch"]["root"])))
    except (KeyError, TypeError):
        return
    if reader.ledger.supports_window_items or (rc.get("ledger") or {}).get("window") is not None:
        inp.window_entry = reader.observe(layout.window_entry_key(topic, key, inp.revision))


# ---------------------------------------------------------------------------------------
# One audit run without Prefect (the flow below wraps the same steps in tasks)
# ---------------------------------------------------------------------------------------


def audit_windows(
    store: ObjectStore,
    reader: LedgerReader,
    topic: str,
    documents: Documents,
    view: KafkaView,
    integrity: LedgerIntegrity,
) -> list[WindowAudit]:
    out = []
    for key, revisions in documents.revisions.items():
        for inp in revisions:
            fetch_evidence(store, reader, topic, key, inp)
        findings = documents.window_findings.get(key, [])
        out.append(audit_window(key, topic, revisions, view, integrity, findings))
        for inp in revisions:
            inp.payload = None  # keep memory bounded by one window
    return out


def run_audit(
    *,
    store: ObjectStore,
    ledger: Ledger,
    kafka: KafkaLog,
    topic: str,
    selection: Selection,
    read_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Audit the selected windows and return the report (`streamnotary.audit-report/1`)."""
    t0 = time.perf_counter()
    documents = load_documents(store, topic, discover_windows(store, topic, selection))
    view = (
        read_partitions(kafka, documents.revisions, read_timeout_s)
        if documents.revisions
        else KafkaView({})
    )
    reader = LedgerReader(ledger)
    integrity = reader.integrity()
    audits = audit_windows(store, reader, topic, documents, view, integrity)
    return build_report(
        audits,
        topic=topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=list(view.scans.values()),
        duration_seconds=time.perf_counter() - t0,
        findings=documents.run_findings,
    )


# ---------------------------------------------------------------------------------------
# Prefect flow
# ---------------------------------------------------------------------------------------


@task(name="discover-windows", cache_policy=NO_CACHE)
def discover_task(settings: Settings, selection: Selection) -> Documents:
    store = open_store(settings)
    return load_documents(store, settings.topic, discover_windows(store, settings.topic, selection))


@task(name="read-partitions-once", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_task(settings: Settings, documents: Documents) -> KafkaView:
    if not documents.revisions:
        return KafkaView({})
    with KafkaLog.from_settings(settings) as kafka:
        return read_partitions(kafka, documents.revisions, settings.read_timeout_seconds)


@task(name="check-windows", cache_policy=NO_CACHE)
def check_task(
    settings: Settings, documents: Documents, view: KafkaView
) -> tuple[list[WindowAudit], LedgerIntegrity]:
    from storage.ledger.factory import open_ledger

    store = open_store(settings)
    with open_ledger(settings) as ledger:
        reader = LedgerReader(ledger)
        integrity = reader.integrity()
        return audit_windows(store, reader, settings.topic, documents, view, integrity), integrity


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_task(report: dict[str, Any], json_path: str | None, html_path: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    slug = "".join(ch if ch.isalnum() else "-" for ch in report["topic"].lower()).strip("-")
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=f"audit-summary-{slug}"[:100],
        description=f"streamnotary audit of {report['topic']}: {report['verdict']}",
    )
    create_table_artifact(
        table=report_table(report),
        key=f"audit-windows-{slug}"[:100],
        description="verdict of every check, per window revision",
    )
    write_outputs(report, json_path, html_path)


def write_outputs(report: dict[str, Any], json_path: str | None, html_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if html_path:
        Path(html_path).write_text(render_html(report))


@flow(name="audit", log_prints=True)
def audit(
    window_ids: list[str] | None = None,
    station: str | None = None,
    since: str | None = None,
    until: str | None = None,
    latest: int | None = None,
    all_windows: bool = False,
    topic: str | None = None,
    json_path: str | None = None,
    html_path: str | None = None,
) -> dict[str, Any]:
    """Audit the selected windows; raise `AuditFailed` after all of them if any check failed."""
    t0 = time.perf_counter()
    settings = load_settings(topic=topic)
    # Parameters come from whoever may start a run: confine file outputs to report_dir.
    json_path, html_path = (
        str(resolve_output(settings.report_path, p)) if p else None for p in (json_path, html_path)
    )
    selection = Selection(
        window_ids=tuple(window_ids or ()),
        station=station,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        latest=latest,
        all=all_windows,
    )
    documents = discover_task(settings, selection)
    view = read_task(settings, documents)
    audits, integrity = check_task(settings, documents, view)
    report = build_report(
        audits,
        topic=settings.topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=list(view.scans.values()),
        duration_seconds=time.perf_counter() - t0,
        findings=documents.run_findings,
    )
    validate_report(report)
    publish_task(report, json_path, html_path)
    logger = get_run_logger()
    counts = report["summary"]["by_verdict"]
    logger.info("audit of %s: %s (%s)", settings.topic, report["verdict"], counts)
    if report["verdict"] == FAIL:
        raise AuditFailed(report)
    return report


# ---------------------------------------------------------------------------------------
# Proof of one record
# ---------------------------------------------------------------------------------------


def _revisions_of(store: ObjectStore, topic: str, key: WindowKey) -> list[int]:
    """Revisions with a receipt; stray objects in the window's prefix are ignored."""
    names = (
        parse_object_name(topic, k) for k in store.list(layout.window_receipts_prefix(topic, key))
    )
    return sorted(n.revision for n in names if n.revision is not None and n.window == key)


def _window_for(store: ObjectStore, topic: str, station: str, at: datetime, size: int) -> WindowKey:
    key = WindowSpec(size).key_of(station, at)
    if _revisions_of(store, topic, key):
        return key
    for k in store.list(layout.receipts_prefix(topic, station)):  # other window sizes
        other = parse_object_name(topic, k)
        if other.revision is not None and other.window and other.window.contains(at):
            return other.window
    raise ProofError(
        f"no anchored window of station {station} contains {_ts(at)} in topic {topic!r}"
    )


def prove_record(
    *,
    store: ObjectStore,
    ledger: Ledger,
    topic: str,
    station: str,
    at: datetime,
    window_seconds: int,
) -> dict[str, Any]:
    """Proof bundle of the record of `station` at `at`, in its window's latest revision.

    Every link is checked against the stored evidence before the bundle is written: a
    bundle is never issued from a payload or checkpoint that does not match the anchors.
    """
    key = _window_for(store, topic, station, at, window_seconds)
    rev = _revisions_of(store, topic, key)[-1]
    receipt, problem = _load_json(store, layout.receipt_key(topic, key, rev))
    checkpoint, cp_problem = _load_json(store, layout.checkpoint_key(topic, key, rev))
    if receipt is not None:
        problem = schema_problem(receipt, RECEIPT_SCHEMA_FILE)
    if checkpoint is not None:
        cp_problem = schema_problem(checkpoint, CHECKPOINT_SCHEMA_FILE)
    if receipt is None or checkpoint is None or problem or cp_problem:
        raise ProofError(
            f"{key.window_id} r{rev}: receipt {problem or 'ok'}, checkpoint {cp_problem or 'ok'}"
        )
    digest = checkpoint_digest(checkpoint)
    if digest != receipt["checkpoint_digest"]:
        raise ProofError(
            f"{key.window_id} r{rev}: stored checkpoint does not match the anchored digest"
        )
    try:
        records = decode_payload(store.get(layout.payload_key(topic, key, rev)))
    except (ObjectNotFound, PayloadError) as exc:
        raise ProofError(f"{key.window_id} r{rev}: payload unusable: {exc}") from exc
    leaves = [canonical_bytes(r) for r in records]
    if merkle_root(leaves).hex() != checkpoint["merkle"]["root"]:
        raise ProofError(f"{key.window_id} r{rev}: payload does not hash to the anchored root")
    index = next((i for i, r in enumerate(records) if r.observed_at == at), None)
    if index is None:
        raise ProofError(f"{key.window_id} r{rev} holds no record of {station} at {_ts(at)}")
    reader = LedgerReader(ledger)
    batch_obs = reader.observe(layout.batch_entry_key(topic, receipt["batch"]["root"]))
    if batch_obs.ref is None or batch_obs.body is None:
        raise ProofError(f"ledger entry {batch_obs.key} not found: {batch_obs.error or 'absent'}")
    window_ev = None
    if receipt["ledger"].get("window") is not None:
        w = reader.observe(layout.window_entry_key(topic, key, rev))
        if w.ref is None or w.body is None:
            raise ProofError(f"ledger entry {w.key} not found: {w.error or 'absent'}")
        window_ev = LedgerEvidence(w.ref.to_json(), w.body)
    return make_bundle(
        leaves=leaves,
        index=index,
        checkpoint=checkpoint,
        receipt=receipt,
        batch_entry=LedgerEvidence(batch_obs.ref.to_json(), batch_obs.body),
        window_entry=window_ev,
    )
