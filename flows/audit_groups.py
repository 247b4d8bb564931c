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
* no window object lies outside every group's keys (`ungrouped_objects`).

A window is per group: its objects are under the group's keys and its entry in the
group's log, so one station's window split across two groups' partitions (a producer
that does not key by station) is two windows, one per group, each complete for its
group's partitions. Offsets, not windows, are what the assignment divides: each is
covered by exactly one group's log.

The assignment comes from the auditor's policy only; the bucket never says which
partitions a group owns.
"""

from __future__ import annotations

import time
from typing import Any

from flows.audit_evidence import LedgerReader, load_documents
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
from flows.audit_select import Selection, discover_windows
from storage.kafka import KafkaLog
from storage.ledger.base import Ledger
from storage.objectstore import ObjectStore
from streamnotary.report import build_report
from tasks.audit import FAIL, Finding, WindowAudit
from tasks.audit.documents import KINDS, parse_object_name
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


def ungrouped_objects(
    store: ObjectStore, topic: str, groups: list[str], selection: Selection
) -> list[Finding]:
    """Window objects of a grouped topic outside every group's keys.

    Each group's windows live under ``<kind>/<topic>/<group>/`` (storage/layout.py); no
    writer of a grouped topic puts one under ``<kind>/<topic>/<station>/`` or under a group
    the policy does not name. Such a revision was never anchored by a group: FAIL, as a
    checkpoint without an anchor is in a topic's audit; anything else stray is noted.
    Costs one more listing of the topic's window objects: none in layout pack, three per
    window revision in layout per_window.
    """
    station = f"{selection.station}/" if selection.station else ""
    inside = tuple(f"{topic}/{g}/" for g in groups)
    findings: list[Finding] = []
    for kind in KINDS:
        for k in store.list(f"{kind}/{topic}/{station}"):
            if k.removeprefix(f"{kind}/").startswith(inside):
                continue
            name = parse_object_name(topic, k)
            if name.window is not None and name.revision is not None:
                findings.append(
                    Finding(
                        FAIL,
                        "ungrouped_object",
                        f"{k} names {name.window.window_id} r{name.revision} outside every "
                        "partition group's keys: no group anchored it",
                    )
                )
            else:
                findings.append(name.finding())
    return findings


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
    findings += ungrouped_objects(store, topic, [g.name for g in trust.groups], selection)
    audits: list[WindowAudit] = []
    sections: list[dict[str, Any]] = []
    scans = []
    integrity = reader.integrity()
    run_findings: list[Finding] = []
    for g in trust.groups:
        # a group's windows are its own (a station's window may be split across groups
        # by a producer that does not key by station): found under the group's keys and
        # in the group's log only, audited against the topic's records of its partitions
        scope, log = LogScope(topic, g.name).name, logs[g.name]
        discovery = discover_windows(store, scope, selection, log.logged)
        documents = load_documents(store, scope, discovery)
        view = tie_and_read(
            store, kafka, reader, scope, log, documents, g.verifier, read_timeout_s, g.partitions
        )
        coverage = coverage_of(log, view)
        audits += audit_windows(store, reader, topic, documents, view, integrity, log, g.name)
        scans += list(view.scans.values())
        run_findings += documents.run_findings
        section = log_report(log, coverage)
        sections.append({"name": g.name, "partitions": list(g.partitions), "log": section})
        remember(log, state_dir)
    audits.sort(key=lambda a: (*_order(a.key), a.group or ""))
    return build_report(
        audits,
        topic=topic,
        selection=selection.to_json(),
        integrity=integrity,
        scans=scans,
        duration_seconds=time.perf_counter() - t0,
        findings=[*findings, *run_findings],
        groups=sections,
    )


def _order(key: WindowKey) -> tuple[Any, ...]:
    return (key.start, key.station_id, key.size_seconds)
