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

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.audit_evidence import (
    Documents,
    LedgerReader,
    load_documents,
    load_packed_checkpoints,
    read_partitions,
)
from flows.audit_log import (
    TrustPolicy,
)
from flows.audit_run import (  # noqa: F401
    LogAudit,
    attach_log,
    audit_windows,
    coverage_of,
    finish_log,
    log_report,
    open_log,
    remember,
    run_audit,
)
from flows.audit_select import (  # noqa: F401
    Discovery,
    Selection,
    SelectionError,
    discover_windows,
    parse_time,
)
from flows.prove import ProofError, prove_record  # noqa: F401
from storage.kafka import KafkaLog
from storage.objectstore import open_store
from streamnotary.config import Settings, load_settings
from streamnotary.paths import resolve_output
from streamnotary.report import (
    audit_headline,
    build_report,
    validate_report,
)
from tasks.audit import (
    FAIL,
    KafkaView,
    LedgerIntegrity,
    WindowAudit,
)
from tasks.audit.coverage import Accounting, PartitionCoverage
from tasks.audit_artifacts import final_state, publish_task
from tasks.steps import unwalked
from tasks.tlog.note import Verifier


class AuditFailed(RuntimeError):
    """At least one check of one selected window failed; `report` holds the full report."""

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [w["window_id"] for w in report["windows"] if w["verdict"] == FAIL]
        super().__init__(
            f"{audit_headline(report)}; failed: {', '.join(failed[:10])}"
            + (" ..." if len(failed) > 10 else "")
        )
        self.report = report


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
        reader = LedgerReader(ledger)
        log = open_log(store, reader, settings.topic, trust, fallback, state_dir)
        documents = load_documents(
            store, settings.topic, discover_windows(store, settings.topic, selection, log.logged)
        )
        finish_log(log, documents, trust.verifier if trust else fallback[1], reader)
    attach_log(log, documents)
    load_packed_checkpoints(store, settings.topic, documents)
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
    return view, coverage_of(log, view)


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


@task(name="audit-partition-groups", cache_policy=NO_CACHE)
def groups_task(
    settings: Settings, selection: Selection, trust: TrustPolicy, state_dir: str | None
) -> dict[str, Any]:
    """A topic anchored in partition groups: every group's log, then the windows
    (`flows.audit_groups`); each verified group head is remembered in `state_dir`."""
    from flows.audit_groups import run_group_audit
    from storage.ledger.factory import open_ledger

    with (
        open_ledger(settings, trusted_identity=trust.ledger) as ledger,
        KafkaLog.from_settings(settings) as kafka,
    ):
        return run_group_audit(
            store=open_store(settings),
            ledger=ledger,
            kafka=kafka,
            topic=settings.topic,
            selection=selection,
            trust=trust,
            read_timeout_s=settings.read_timeout_seconds,
            state_dir=state_dir,
        )


@task(name="remember-verified-head", cache_policy=NO_CACHE)
def remember_task(log: LogAudit, state_dir: str | None) -> str | None:
    return remember(log, state_dir)


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
    # A parameter names a directory the audit writes to: confine it like the report paths;
    # the setting `audit_state_dir` (operator's configuration, the CLI's --state) is not.
    if state_dir:
        state_dir = str(resolve_output(settings.report_path, state_dir))
    state_dir = state_dir or settings.audit_state_dir or None
    trust, _ = trust_of(settings, trust_path)
    if trust is not None and trust.groups:
        report = unwalked(groups_task)(settings, selection, trust, state_dir)
    else:
        # The evidence (documents, the Kafka view, the log) is passed from task to task
        # unwalked: Prefect would otherwise visit every document and message it holds
        # (a third of an audit's time, measured on the demo's 1,100 windows).
        documents, log = unwalked(documents_task)(settings, selection, trust_path, state_dir)
        view, coverage = unwalked(read_task)(settings, documents, log)
        audits, integrity = unwalked(check_task)(settings, documents, view, log, trust_path)
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
        unwalked(remember_task)(log, state_dir)
    validate_report(report)
    stored = unwalked(publish_task)(settings, report, json_path, html_path)
    logger = get_run_logger()
    counts = report["summary"]["by_verdict"]
    logger.info("audit of %s: %s (%s)", settings.topic, report["verdict"], counts)
    if report["verdict"] == FAIL:
        raise AuditFailed(report)
    return final_state(report, stored)
