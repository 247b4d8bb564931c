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

from flows.audit_log import (
    LogFetch,
    TrustPolicy,
    fetch_log,
    ledger_head,
    ledger_still_extends,
    load_state,
    receipt_notes,
    save_state,
)
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
    INFO,
    PASS,
    CheckResult,
    Finding,
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    WindowAudit,
    audit_window,
    integrity_from_error,
    worst,
)
from tasks.audit.coverage import Accounting, LogIndex, PartitionCoverage, check_entries, index_log
from tasks.audit.documents import (
    CHECKPOINT_SCHEMA_FILE,
    KINDS,
    RECEIPT_SCHEMA_FILE,
    parse_object_name,
    parse_window_id,
    schema_problem,
)
from tasks.audit.log import RememberedHead, check_log
from tasks.canonical import parse_document
from tasks.checkpoint import checkpoint_digest, ranges_of
from tasks.merkle import merkle_root
from tasks.message import classify
from tasks.payload import PayloadError, decode_payload
from tasks.proof_bundle import LedgerEvidence, make_bundle
from tasks.record import canonical_bytes
from tasks.tlog.checkpoint import LogCheckpoint
from tasks.tlog.note import Verifier
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


def discover_windows(
    store: ObjectStore,
    topic: str,
    selection: Selection,
    logged: dict[str, list[int]] | None = None,
) -> Discovery:
    """Selected windows and their revisions, from receipts, checkpoints *and* payloads.

    All three are listed so that a checkpoint without a receipt (never anchored), a
    receipt whose checkpoint is gone and a lone payload are all audited, and all fail.
    `logged` (window id -> revisions, from the anchor log) adds every logged revision, so
    a window whose objects were all deleted is still audited, and fails by name.
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
    for window_id, revisions in (logged or {}).items():  # the log is the authority
        try:
            key = parse_window_id(window_id)
        except WindowSpecError:
            out.run_findings.append(
                Finding(FAIL, "log_window_invalid", f"the log names window {window_id!r}")
            )
            continue
        if selection.matches(key):
            found[key].update(revisions)
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
        doc = parse_document(store.get(key))
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
    accounting: Accounting | None = None,
) -> KafkaView:
    """Read each partition once, up to the high watermark, classifying each message once.

    Without an anchor log: from the lowest offset any selected revision needs (partitions
    no range touches from their low watermark, so late data is still found). With one
    (`accounting`): every partition from its low watermark, so that coverage can account
    for every offset the log says was consumed, and see messages before the log's start.
    """
    starts: dict[int, int] = {}
    for revisions in documents.values():
        for inp in revisions:
            if inp.checkpoint is None or schema_problem(inp.checkpoint, CHECKPOINT_SCHEMA_FILE):
                continue  # a hostile checkpoint must not steer the read
            for p, (lo, _hi) in ranges_of(inp.checkpoint).items():
                starts[p] = min(lo, starts.get(p, lo))
    sizes = {k.size_seconds for k in documents}
    if accounting is not None:
        starts = {}
        sizes.update(accounting.index.window_sizes())
    specs = [WindowSpec(s) for s in sorted(sizes)]
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
        for m in messages:
            per_size = [classify(m, spec) for spec in specs]
            if accounting is not None and per_size:
                accounting.add(per_size)
            classified.extend(c for c in per_size if c.window in documents)
    view = KafkaView.of(scans, classified)
    if accounting is not None:
        view.log_extent = dict(accounting.extent)
    return view


@dataclass
class LedgerReader:
    """Ledger lookups for an audit run, cached by key (all windows of a batch share one)."""

    ledger: Ledger
    cache: dict[str, LedgerObservation] = field(default_factory=dict)

    def observe(self, key: str, locator: dict[str, Any] | None = None) -> LedgerObservation:
        """The entry under `key`; with the receipt's `locator` the ledger looks there (the
        Bitcoin family finds anchors by txid, without the writer's wallet)."""
        if key not in self.cache:
            self.cache[key] = self._observe(key, locator)
        return self.cache[key]

    def _observe(self, key: str, locator: dict[str, Any] | None) -> LedgerObservation:
        try:
            ref = (
                self.ledger.locate(key, locator)
                if isinstance(locator, dict)
                else self.ledger.lookup(key)
            )
            foreign = tuple(self.ledger.foreign_entries(key))
            if ref is None:
                return LedgerObservation(key, foreign=foreign)
            return LedgerObservation(key, ref=ref, body=self.ledger.read(ref), foreign=foreign)
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
        inp.batch_entry = reader.observe(
            layout.batch_entry_key(topic, str(rc["batch"]["root"])),
            ((rc.get("ledger") or {}).get("batch") or {}).get("locator"),
        )
    except (KeyError, TypeError):
        return
    if reader.ledger.supports_window_items or (rc.get("ledger") or {}).get("window") is not None:
        inp.window_entry = reader.observe(layout.window_entry_key(topic, key, inp.revision))


# ---------------------------------------------------------------------------------------
# One audit run without Prefect (the flow below wraps the same steps in tasks)
# ---------------------------------------------------------------------------------------


@dataclass
class LogAudit:
    """The anchor log side of one audit run (see `tasks.audit.log`, `tasks.audit.coverage`)."""

    origin: str
    pinned: bool
    fetch: LogFetch | None = None
    index: LogIndex | None = None
    accounting: Accounting | None = None
    window_findings: dict[str, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)
    check: CheckResult | None = None
    head: LogCheckpoint | None = None
    ledger_head: dict[str, Any] | None = None

    @property
    def logged(self) -> dict[str, list[int]]:
        if self.index is None:
            return {}
        return {w: sorted(revs) for w, revs in self.index.revisions.items()}

    def run_times(self) -> dict[int, str]:
        return {e["run"]: e["anchored_at"] for _, e in (self.index.runs if self.index else [])}


def open_log(
    store: ObjectStore,
    reader: LedgerReader,
    topic: str,
    trust: TrustPolicy | None,
    fallback: tuple[str, Verifier | None],
    state_dir: str | None,
) -> LogAudit:
    """Fetch and index the log; a topic without a log (older deployments) gives no index."""
    origin, verifier = (trust.origin, trust.verifier) if trust else fallback
    remembered, problem = load_state(state_dir, origin)
    out = LogAudit(origin, trust is not None)
    fetch = fetch_log(store, reader.observe, topic, origin, verifier, {}, remembered)
    fetch.evidence.remembered_problem = problem
    fetch.evidence.ledger_problem = ledger_still_extends(reader.ledger, remembered)
    out.fetch, out.ledger_head = fetch, ledger_head(reader.ledger)
    if fetch.evidence.checkpoint_note is None and trust is None and remembered is None:
        return out  # no log and nobody pinned one: audit from the bucket, as before the log
    out.index = index_log(fetch.entries)
    out.window_findings, out.run_findings = check_entries(out.index)
    out.accounting = Accounting(out.index)
    return out


def finish_log(log: LogAudit, documents: Documents, verifier: Verifier | None) -> None:
    """Run the log check once the receipts (which carry older signed heads) are loaded."""
    if log.fetch is None or (log.index is None and log.fetch.evidence.checkpoint_note is None):
        return
    notes = receipt_notes([inp.receipt for revs in documents.revisions.values() for inp in revs])
    for h in log.fetch.evidence.heads:
        h.notes = notes.get(h.size, [])
    log.check, log.head = check_log(log.fetch.evidence, verifier)


def attach_log(log: LogAudit, documents: Documents) -> None:
    """Give each revision its log entry; windows the log does not know are findings."""
    if log.index is None:
        return
    for key, revisions in documents.revisions.items():
        logged = log.index.revisions.get(key.window_id, {})
        for inp in revisions:
            items = logged.get(inp.revision)
            inp.log_entry = items[-1][1] if items else None
        unlogged = [inp for inp in revisions if inp.log_entry is None]
        for inp in unlogged:
            claims = isinstance((inp.receipt or {}).get("log"), dict)
            documents.window_findings.setdefault(key, []).append(
                Finding(
                    FAIL if claims else INFO,
                    "not_in_log",
                    f"r{inp.revision} is in the bucket but not in the anchor log"
                    + (" although its receipt claims a log inclusion proof" if claims else ""),
                )
            )


def audit_windows(
    store: ObjectStore,
    reader: LedgerReader,
    topic: str,
    documents: Documents,
    view: KafkaView,
    integrity: LedgerIntegrity,
    log: LogAudit | None = None,
) -> list[WindowAudit]:
    out = []
    times = log.run_times() if log else {}
    for key, revisions in documents.revisions.items():
        for inp in revisions:
            fetch_evidence(store, reader, topic, key, inp)
        findings = list(documents.window_findings.get(key, []))
        if log is not None:
            findings += log.window_findings.get(key.window_id, [])
            if log.accounting is not None:
                findings += log.accounting.window_findings.get(key.window_id, [])
        audit = audit_window(key, topic, revisions, view, integrity, findings)
        audit.timeline = _timeline(revisions, times)
        out.append(audit)
        for inp in revisions:
            inp.payload = None  # keep memory bounded by one window
    return out


def _timeline(revisions: list[RevisionInputs], times: dict[int, str]) -> dict[str, Any] | None:
    entry = max(
        (inp.log_entry for inp in revisions if inp.log_entry is not None),
        key=lambda e: e["revision"],
        default=None,
    )
    if entry is None:
        return None
    closed, anchored = entry["closed_at"], times.get(entry["run"])
    delay = None
    if anchored is not None:
        delay = (parse_time(anchored) - parse_time(closed)).total_seconds()
    return {
        "revision": entry["revision"],
        "run": entry["run"],
        "closed_at": closed,
        "anchored_at": anchored,
        "seconds": delay,
    }


def log_report(log: LogAudit | None, coverage: list[PartitionCoverage]) -> dict[str, Any] | None:
    """The report's `log` member: the log check, the anchored heads, coverage per partition."""
    if log is None or log.check is None:
        return None
    check = log.check
    return {
        "origin": log.origin,
        "key_pinned": log.pinned,
        "size": None if log.head is None else log.head.size,
        "root": None if log.head is None else log.head.root.hex(),
        "anchored_heads": [h.size for h in (log.fetch.evidence.heads if log.fetch else [])],
        "verdict": check.verdict,
        "findings": [f.to_json() for f in check.findings + log.run_findings],
        "verified_head": None
        if log.head is None or check.verdict == FAIL
        else RememberedHead(
            log.origin, log.head.size, log.head.root.hex(), log.ledger_head
        ).to_json(),
        "coverage": {
            "verdict": worst([c.verdict for c in coverage]) if coverage else PASS,
            "partitions": [c.to_json() for c in coverage],
        },
    }


def remember(log: LogAudit | None, state_dir: str | None) -> str | None:
    """Save the verified head for the next audit (never a head whose log check failed)."""
    if not state_dir or log is None or log.check is None or log.head is None:
        return None
    if log.check.verdict == FAIL:
        return None
    head = RememberedHead(log.origin, log.head.size, log.head.root.hex(), log.ledger_head)
    return str(save_state(state_dir, head))


def run_audit(
    *,
    store: ObjectStore,
    ledger: Ledger,
    kafka: KafkaLog,
    topic: str,
    selection: Selection,
    read_timeout_s: float = 30.0,
    trust: TrustPolicy | None = None,
    fallback: tuple[str, Verifier | None] | None = None,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Audit the selected windows and return the report (`streamnotary.audit-report/1`).

    `trust` pins the log key and origin; without it `fallback` (origin, verifier or None)
    is used and the report notes that nothing was pinned.
    """
    t0 = time.perf_counter()
    reader = LedgerReader(ledger)
    origin = fallback[0] if fallback else f"streamnotary/{topic}"
    log = open_log(store, reader, topic, trust, fallback or (origin, None), state_dir)
    discovery = discover_windows(store, topic, selection, log.logged)
    documents = load_documents(store, topic, discovery)
    finish_log(log, documents, trust.verifier if trust else (fallback or (origin, None))[1])
    attach_log(log, documents)
    view = (
        read_partitions(kafka, documents.revisions, read_timeout_s, log.accounting)
        if documents.revisions or log.accounting
        else KafkaView({})
    )
    coverage = _coverage(log, view)
    integrity = reader.integrity()
    audits = audit_windows(store, reader, topic, documents, view, integrity, log)
    report = build_report(
        audits,
        topic=topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=list(view.scans.values()),
        duration_seconds=time.perf_counter() - t0,
        findings=documents.run_findings,
        log=log_report(log, coverage),
    )
    remember(log, state_dir)
    return report


def _coverage(log: LogAudit, view: KafkaView) -> list[PartitionCoverage]:
    if log.accounting is None:
        return []
    readable = {p: (s.start, s.end) for p, s in view.scans.items() if s.error is None}
    return log.accounting.finish(readable)


# ---------------------------------------------------------------------------------------
# Prefect flow
# ---------------------------------------------------------------------------------------


def trust_of(
    settings: Settings, trust_path: str | None
) -> tuple[TrustPolicy | None, tuple[str, Verifier | None]]:
    """The pinned policy (`--trust FILE` or setting `audit_trust_path`), and the fallback:
    the operator's own log key from settings, for audits run on the operator's machine."""
    from storage.logkey import LogKeyError, log_origin, log_verifier

    path = trust_path or settings.audit_trust_path
    trust = TrustPolicy.load(path) if path else None
    try:
        verifier: Verifier | None = log_verifier(settings)
    except LogKeyError:
        verifier = None
    return trust, (log_origin(settings), verifier)


@task(name="load-log-and-documents", cache_policy=NO_CACHE)
def documents_task(
    settings: Settings, selection: Selection, trust_path: str | None, state_dir: str | None
) -> tuple[Documents, LogAudit]:
    """The anchor log (and its anchored heads), then the windows it and the bucket name."""
    from storage.ledger.factory import open_ledger

    trust, fallback = trust_of(settings, trust_path)
    store = open_store(settings)
    with open_ledger(settings, trusted_identity=trust.ledger if trust else None) as ledger:
        log = open_log(store, LedgerReader(ledger), settings.topic, trust, fallback, state_dir)
    documents = load_documents(
        store, settings.topic, discover_windows(store, settings.topic, selection, log.logged)
    )
    finish_log(log, documents, trust.verifier if trust else fallback[1])
    attach_log(log, documents)
    return documents, log


@task(name="read-partitions-once", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_task(
    settings: Settings, documents: Documents, log: LogAudit
) -> tuple[KafkaView, list[PartitionCoverage]]:
    if not documents.revisions and log.accounting is None:
        return KafkaView({}), []
    if log.index is not None:
        log.accounting = Accounting(log.index)  # a retry starts the accounting afresh
    with KafkaLog.from_settings(settings) as kafka:
        view = read_partitions(
            kafka, documents.revisions, settings.read_timeout_seconds, log.accounting
        )
    return view, _coverage(log, view)


@task(name="check-windows", cache_policy=NO_CACHE)
def check_task(
    settings: Settings,
    documents: Documents,
    view: KafkaView,
    log: LogAudit,
    trust_path: str | None,
) -> tuple[list[WindowAudit], LedgerIntegrity]:
    from storage.ledger.factory import open_ledger

    trust, _ = trust_of(settings, trust_path)
    store = open_store(settings)
    with open_ledger(settings, trusted_identity=trust.ledger if trust else None) as ledger:
        reader = LedgerReader(ledger)
        integrity = reader.integrity()
        audits = audit_windows(store, reader, settings.topic, documents, view, integrity, log)
        return audits, integrity


@task(name="remember-verified-head", cache_policy=NO_CACHE)
def remember_task(log: LogAudit, state_dir: str | None) -> str | None:
    return remember(log, state_dir)


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
    trust_path: str | None = None,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Audit the selected windows; raise `AuditFailed` after all of them if any check failed.

    `trust_path` (default: setting `audit_trust_path`) pins the log key, origin and ledger
    identity; `state_dir` (default: setting `audit_state_dir`) holds the last verified
    head, which this audit must extend and then replaces.
    """
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
    state_dir = state_dir or settings.audit_state_dir or None
    documents, log = documents_task(settings, selection, trust_path, state_dir)
    view, coverage = read_task(settings, documents, log)
    audits, integrity = check_task(settings, documents, view, log, trust_path)
    report = build_report(
        audits,
        topic=settings.topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=list(view.scans.values()),
        duration_seconds=time.perf_counter() - t0,
        findings=documents.run_findings,
        log=log_report(log, coverage),
    )
    validate_report(report)
    remember_task(log, state_dir)
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
    batch_obs = reader.observe(
        layout.batch_entry_key(topic, receipt["batch"]["root"]),
        ((receipt.get("ledger") or {}).get("batch") or {}).get("locator"),
    )
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
