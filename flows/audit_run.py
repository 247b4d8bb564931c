"""One audit run without Prefect, step by step; the flow in flows/audit.py wraps the same
steps in tasks. Includes the anchor-log side (`LogAudit`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flows.audit_evidence import (
    READ_CONCURRENCY,
    Documents,
    LedgerReader,
    fetch_payload,
    load_documents,
    load_packed_checkpoints,
    observe_entries,
    read_partitions,
)
from flows.audit_log import (
    LogFetch,
    TrustPolicy,
    fetch_log,
    head_anchor_records,
    ledger_head,
    ledger_still_extends,
    load_state,
    observe_heads,
    receipt_notes,
    save_state,
)
from flows.audit_select import Selection, discover_windows, parse_time
from storage.kafka import KafkaLog
from storage.ledger.base import Ledger
from storage.objectstore import ObjectStore
from streamnotary.report import (
    build_report,
)
from tasks.audit import (
    FAIL,
    INFO,
    PASS,
    CheckResult,
    Finding,
    KafkaView,
    LedgerIntegrity,
    RevisionInputs,
    WindowAudit,
    audit_window,
    worst,
)
from tasks.audit.coverage import Accounting, LogIndex, PartitionCoverage, check_entries, index_log
from tasks.audit.log import RememberedHead, check_log
from tasks.groups import LogScope
from tasks.tlog.checkpoint import LogCheckpoint
from tasks.tlog.note import Verifier
from tasks.window import WindowKey

# Windows whose payloads are fetched ahead of the one being checked.
PAYLOAD_LOOKAHEAD = 32

# ---------------------------------------------------------------------------------------
# One audit run without Prefect (the flow below wraps the same steps in tasks)
# ---------------------------------------------------------------------------------------


@dataclass
class LogAudit:
    """The anchor log side of one audit run (see `tasks.audit.log`, `tasks.audit.coverage`)."""

    origin: str
    pinned: bool
    topic: str = ""
    fetch: LogFetch | None = None
    index: LogIndex | None = None
    accounting: Accounting | None = None
    window_findings: dict[str, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)
    check: CheckResult | None = None
    head: LogCheckpoint | None = None
    ledger_head: dict[str, Any] | None = None
    head_anchors: list[dict[str, Any]] = field(default_factory=list)  # `head_anchor_records`

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
    out = LogAudit(origin, trust is not None, topic)
    fetch = fetch_log(store, topic, origin, verifier, {}, remembered)
    fetch.evidence.remembered_problem = problem
    fetch.evidence.ledger_problem = ledger_still_extends(reader.ledger, remembered)
    out.fetch, out.ledger_head = fetch, ledger_head(reader.ledger)
    if fetch.evidence.checkpoint_note is None and trust is None and remembered is None:
        return out  # no log and nobody pinned one: audit from the bucket, as before the log
    out.head_anchors = head_anchor_records(store, topic, fetch.evidence)
    out.index = index_log(fetch.entries)
    out.window_findings, out.run_findings = check_entries(out.index)
    out.accounting = Accounting(out.index)
    return out


def finish_log(
    log: LogAudit, documents: Documents, verifier: Verifier | None, reader: LedgerReader
) -> None:
    """Once the receipts are loaded (they carry older signed heads and where each head
    entry sits on the ledger): look the heads up and run the log check."""
    if log.fetch is None or (log.index is None and log.fetch.evidence.checkpoint_note is None):
        return
    receipts = [inp.receipt for revs in documents.revisions.values() for inp in revs]
    receipts += log.head_anchors
    observe_heads(log.fetch.evidence, reader.observe, log.topic, receipts)
    notes = receipt_notes(receipts)
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
            if items:
                inp.log_index = items[-1][0]
                run = log.index.run_after(inp.log_index)
                if run is not None:
                    inp.log_size = run[0] + 1
                    inp.receipt_expected = run[1].get("layout", "per_window") == "per_window"
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
    group: str | None = None,
) -> list[WindowAudit]:
    """Audit every window of `documents`, which must name `topic`; with `group` (a
    partition group's name) their keys are the group's, ``<topic>/<group>``."""
    scope = topic if group is None else LogScope(topic, group).name
    out = []
    times = log.run_times() if log else {}
    for key, revisions in prefetched_payloads(store, scope, documents):
        for inp in revisions:
            observe_entries(reader, scope, key, inp)
        findings = list(documents.window_findings.get(key, []))
        if log is not None:
            findings += log.window_findings.get(key.window_id, [])
            if log.accounting is not None:
                findings += log.accounting.window_findings.get(key.window_id, [])
        audit = audit_window(key, topic, revisions, view, integrity, findings)
        audit.timeline = _timeline(revisions, times)
        audit.group = group
        out.append(audit)
        for inp in revisions:
            inp.payload = None  # keep memory bounded by one window
    return out


def prefetched_payloads(
    store: ObjectStore, scope: str, documents: Documents
) -> Iterator[tuple[WindowKey, list[RevisionInputs]]]:
    """The windows of `documents` in order, each with its revisions' payloads fetched.

    Payloads are fetched on `READ_CONCURRENCY` threads, at most `PAYLOAD_LOOKAHEAD`
    windows ahead of the one being checked: one ranged GET at a time left the audit
    waiting on the store, and the lookahead keeps memory bounded by a few windows.
    """

    def fetch(key: WindowKey, revisions: list[RevisionInputs]) -> None:
        for inp in revisions:
            fetch_payload(store, scope, key, inp)

    ahead: deque[tuple[WindowKey, list[RevisionInputs], Future[None]]] = deque()
    windows = iter(documents.revisions.items())
    with ThreadPoolExecutor(max_workers=READ_CONCURRENCY) as pool:
        while True:
            while len(ahead) < PAYLOAD_LOOKAHEAD:
                nxt = next(windows, None)
                if nxt is None:
                    break
                ahead.append((nxt[0], nxt[1], pool.submit(fetch, *nxt)))
            if not ahead:
                return
            key, revisions, done = ahead.popleft()
            done.result()
            yield key, revisions


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
    verifier = trust.verifier if trust else (fallback or (origin, None))[1]
    view = tie_and_read(store, kafka, reader, topic, log, documents, verifier, read_timeout_s)
    coverage = coverage_of(log, view)
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


def tie_and_read(
    store: ObjectStore,
    kafka: KafkaLog,
    reader: LedgerReader,
    scope: str,
    log: LogAudit,
    documents: Documents,
    verifier: Verifier | None,
    read_timeout_s: float,
    partitions: Collection[int] | None = None,
) -> KafkaView:
    """Tie the documents to the signed log (and its packed checkpoints), then read Kafka
    once for every revision and the log's accounting: one log's evidence, whole. `scope`
    names the keys (the topic, or a partition group's ``<topic>/<group>``); `partitions`
    are those the log covers (a group's; all without)."""
    finish_log(log, documents, verifier, reader)
    attach_log(log, documents)
    load_packed_checkpoints(store, scope, documents)
    if not (documents.revisions or log.accounting):
        return KafkaView({})
    return read_partitions(kafka, documents.revisions, read_timeout_s, log.accounting, partitions)


def coverage_of(log: LogAudit, view: KafkaView) -> list[PartitionCoverage]:
    if log.accounting is None:
        return []
    readable = {p: (s.start, s.end) for p, s in view.scans.items() if s.error is None}
    return log.accounting.finish(readable)
