"""One window: every check on every revision, from already-fetched evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tasks.audit.analytics import check_analytics
from tasks.audit.anchored import check_anchored
from tasks.audit.canonical import check_canonical
from tasks.audit.completeness import check_completeness
from tasks.audit.core import PASS, Finding
from tasks.audit.documents import CHECKPOINT_SCHEMA_FILE, RECEIPT_SCHEMA_FILE, schema_problem
from tasks.audit.evidence import KafkaView, LedgerIntegrity, RevisionInputs
from tasks.audit.payload import check_payload
from tasks.audit.results import RevisionAudit, WindowAudit
from tasks.audit.revisions import check_revisions
from tasks.window import WindowKey


def screen(inp: RevisionInputs) -> RevisionInputs:
    """A copy in which a document that does not conform to its schema counts as absent.

    The checks index into checkpoints and receipts freely; screening first is what lets a
    checkpoint ``{}`` fail its window (anchored: checkpoint_invalid) instead of raising.
    """
    out = replace(inp)
    if out.checkpoint is not None:
        problem = schema_problem(out.checkpoint, CHECKPOINT_SCHEMA_FILE)
        if problem is not None:
            out.checkpoint, out.checkpoint_problem, out.checkpoint_invalid = None, problem, True
    if out.receipt is not None:
        problem = schema_problem(out.receipt, RECEIPT_SCHEMA_FILE)
        if problem is not None:
            out.receipt, out.receipt_problem, out.receipt_invalid = None, problem, True
    return out


def audit_window(
    key: WindowKey,
    topic: str,
    revisions: Sequence[RevisionInputs],
    view: KafkaView,
    integrity: LedgerIntegrity,
    findings: Sequence[Finding] = (),
) -> WindowAudit:
    """Run every check on every revision of one window; `findings` are about the window.

    A window named only by stray objects has no revision: it is reported with its
    findings (never raised), so every other window is still audited.
    """
    if not revisions:
        return WindowAudit(key, topic, [], None, list(findings))
    revisions = [screen(r) for r in revisions]
    latest = max(r.revision for r in revisions)
    links = check_revisions(revisions)
    audits: list[RevisionAudit] = []
    for inp in sorted(revisions, key=lambda r: r.revision):
        anchored, digest = check_anchored(key, topic, inp, integrity)
        payload = check_payload(inp)
        canonical, records = check_canonical(key, inp)
        trusted = records if canonical.verdict == PASS else None
        analytics = check_analytics(inp, records)
        completeness = check_completeness(
            key, inp, view, anchored_records=trusted, latest=inp.revision == latest
        )
        checks = {
            "anchored": anchored,
            "payload": payload,
            "canonical": canonical,
            "analytics": analytics,
            "completeness": completeness,
            "revisions": links[inp.revision],
        }
        audits.append(RevisionAudit(inp.revision, inp.revision == latest, digest, checks))
    latest_cp = next((r.checkpoint for r in revisions if r.revision == latest), None)
    aggregates = latest_cp.get("aggregates") if isinstance(latest_cp, dict) else None
    return WindowAudit(key, topic, audits, aggregates, list(findings))
