"""The audit of a topic anchored in partition groups (trust policy `streamnotary.trust/v2`).

Each group has its own log (`log/<topic>/<group>/`, origin and key pinned per group), so
each is checked as a topic's log is: signature and origin, anchored heads, consistency,
the remembered head (``--state``, one file per origin), and coverage of the offsets its
runs read. On top, what only groups can get wrong:

* the assignment pinned in the policy must be the topic's partitions, each exactly once
  (`tasks.groups.assignment_problems`): a partition in no group is never anchored, one
  in two groups is anchored twice into two logs that each look complete;
* every entry of a group's log names only that group's partitions
  (`tasks.groups.foreign_entries`): a window anchored, or offsets read, in the wrong group;
* a window is in at most one group's log.

The assignment comes from the auditor's policy only; the bucket never says which
partitions a group owns.
"""

from __future__ import annotations

import time
from typing import Any

from flows.audit_evidence import (
    Documents,
    LedgerReader,
    load_documents,
)
from flows.audit_log import TrustPolicy
from flows.audit_run import (
    LogAudit,
    audit_windows,
    coverage_of,
    log_report,
    open_log,
    remember,
    tie_and_read,
)
from flows.audit_select import Discovery, Selection, discover_windows
from storage.kafka import KafkaLog
from storage.ledger.base import Ledger
from storage.objectstore import ObjectStore
from streamnotary.report import build_report
from tasks.audit import FAIL, Finding, WindowAudit
from tasks.groups import LogScope, assignment_problems, foreign_entries
from tasks.window import WindowKey


def group_findings(log: LogAudit, partitions: tuple[int, ...]) -> list[Finding]:
    """FAIL for each entry of the group's log naming a partition of another group."""
    entries = log.fetch.entries if log.fetch else []
    return [
        Finding(
            FAIL,
            "wrong_group",
            f"log entry {i} ({entries[i]['type']} "
            f"{entries[i].get('window_id', 'run ' + str(entries[i].get('run')))}) names "
            f"partition(s) {sorted(foreign)}, which group {log.topic!r} does not own",
        )
        for i, foreign in foreign_entries(entries, partitions)
    ]


def split_discovery(
    discovery: Discovery, logs: dict[str, LogAudit], first: str
) -> tuple[dict[str, Discovery], list[Finding]]:
    """Each window to the group whose log holds it; windows no log holds to `first` (their
    `not_in_log` finding is the same in any group). A window in two logs is a FAIL."""
    out = {g: Discovery() for g in logs}
    findings: list[Finding] = []
    for key, revisions in discovery.windows.items():
        holders = [g for g, log in logs.items() if key.window_id in log.logged]
        if len(holders) > 1:
            findings.append(
                Finding(FAIL, "window_in_two_groups", f"{key.window_id} is logged by {holders}")
            )
        for g in holders or [first]:
            out[g].windows[key] = revisions
            if key in discovery.window_findings:
                out[g].window_findings[key] = discovery.window_findings[key]
    out[first].run_findings = list(discovery.run_findings)
    return out, findings


def run_group_audit(
    *,
    store: ObjectStore,
    ledger: Ledger,
    kafka: KafkaLog,
    topic: str,
    selection: Selection,
    trust: TrustPolicy,
    read_timeout_s: float = 30.0,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Audit every group's log and the selected windows; one `audit-report/1` with a
    `groups` member (each group's log section) instead of `log`."""
    t0 = time.perf_counter()
    reader = LedgerReader(ledger)
    findings = [
        Finding(FAIL, "group_assignment", problem)
        for problem in assignment_problems(
            {g.name: g.partitions for g in trust.groups}, kafka.partitions()
        )
    ]
    if trust.topic != topic:
        findings.append(
            Finding(FAIL, "group_assignment", f"the trust policy is for topic {trust.topic!r}")
        )
    logs: dict[str, LogAudit] = {}
    for g in trust.groups:
        scope = LogScope(topic, g.name).name
        log = open_log(store, reader, scope, trust.for_group(g), (g.origin, None), state_dir)
        log.run_findings += group_findings(log, g.partitions)
        logs[g.name] = log
    logged: dict[str, list[int]] = {}
    for log in logs.values():
        for window_id, revs in log.logged.items():
            logged[window_id] = sorted({*logged.get(window_id, []), *revs})
    discovery = discover_windows(store, topic, selection, logged)
    parts, two = split_discovery(discovery, logs, trust.groups[0].name)
    findings += two
    audits: list[WindowAudit] = []
    sections: list[dict[str, Any]] = []
    scans = []
    integrity = reader.integrity()
    all_documents = Documents({})
    for g in trust.groups:
        log = logs[g.name]
        documents = load_documents(store, topic, parts[g.name])
        view = tie_and_read(store, kafka, reader, topic, log, documents, g.verifier, read_timeout_s)
        coverage = coverage_of(log, view)
        audits += audit_windows(store, reader, topic, documents, view, integrity, log)
        scans += [s for p, s in view.scans.items() if p in g.partitions]
        all_documents.run_findings += documents.run_findings
        section = log_report(log, coverage)
        sections.append({"name": g.name, "partitions": list(g.partitions), "log": section})
        remember(log, state_dir)
    audits.sort(key=lambda a: _order(a.key))
    return build_report(
        audits,
        topic=topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=scans,
        duration_seconds=time.perf_counter() - t0,
        findings=[*findings, *all_documents.run_findings],
        groups=sections,
    )


def _order(key: WindowKey) -> tuple[Any, ...]:
    return (key.start, key.station_id, key.size_seconds)
