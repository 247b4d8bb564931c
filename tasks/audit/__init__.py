"""Audit checks of anchored window revisions, on inputs that were already fetched.

The auditor trusts neither the operator nor the pipeline: every figure in a checkpoint is
recomputed from independent evidence (the stored payload bytes, the Kafka log, the
ledger) with the same pure functions the pipeline used (`tasks.window_content.build_window`,
`tasks.payload`, `tasks.aggregates`). This package holds only those comparisons, one
module per check family; the fetching lives in `flows/audit.py`, so that each check can be
tested on hand-made inputs and every verdict is reproducible from the evidence recorded in
the report.

Checks, reported separately for every window revision (see docs/audit.md):

    anchored       (anchored.py)      the checkpoint digest is committed by the ledger
    payload        (payload.py)       SHA-256 and size of the stored payload equal the checkpoint's
    canonical      (canonical.py)     the payload re-serializes to the anchored leaves and root
    analytics      (analytics.py)     recomputed aggregates equal the anchored ones
    completeness   (completeness.py)  re-reading the offset ranges from Kafka reproduces the window
    revisions      (revisions.py)     the supersedes chain is complete; only the latest counts

Hostile or stray documents never raise: `documents.py` screens object names and document
shapes first and turns every problem into a finding (see docs/audit.md, "Robustness").
"""

from tasks.audit.analytics import check_analytics
from tasks.audit.anchored import check_anchored
from tasks.audit.canonical import check_canonical
from tasks.audit.completeness import check_completeness
from tasks.audit.core import (
    CHECKS,
    FAIL,
    INFO,
    NOT_CHECKABLE,
    PASS,
    PENDING,
    VERDICTS,
    CheckResult,
    Finding,
    worst,
)
from tasks.audit.evidence import (
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    integrity_from_error,
)
from tasks.audit.payload import check_payload
from tasks.audit.results import RevisionAudit, WindowAudit
from tasks.audit.revisions import check_revisions
from tasks.audit.window import audit_window

__all__ = [
    "CHECKS",
    "FAIL",
    "INFO",
    "NOT_CHECKABLE",
    "PASS",
    "PENDING",
    "VERDICTS",
    "CheckResult",
    "Finding",
    "KafkaView",
    "LedgerIntegrity",
    "LedgerObservation",
    "PartitionScan",
    "RevisionAudit",
    "RevisionInputs",
    "WindowAudit",
    "audit_window",
    "check_analytics",
    "check_anchored",
    "check_canonical",
    "check_completeness",
    "check_payload",
    "check_revisions",
    "integrity_from_error",
    "worst",
]
