"""Audit results: per window revision the six checks, per window the revisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.audit.core import CHECKS, CheckResult, Finding, worst
from tasks.window import WindowKey


@dataclass(slots=True)
class RevisionAudit:
    revision: int
    latest: bool
    checkpoint_digest: str | None
    checks: dict[str, CheckResult]

    @property
    def verdict(self) -> str:
        return worst(c.verdict for c in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "latest": self.latest,
            "checkpoint_digest": self.checkpoint_digest,
            "verdict": self.verdict,
            "checks": {name: self.checks[name].to_json() for name in CHECKS if name in self.checks},
        }


@dataclass(slots=True)
class WindowAudit:
    key: WindowKey
    topic: str
    revisions: list[RevisionAudit]
    aggregates: dict[str, Any] | None = None  # of the latest revision's checkpoint
    findings: list[Finding] = field(default_factory=list)  # about the window, not a revision
    timeline: dict[str, Any] | None = None  # closed_at -> anchored_at of the latest revision
    group: str | None = None  # the partition group whose log holds it (its own window)

    @property
    def window_id(self) -> str:
        return self.key.window_id

    @property
    def verdict(self) -> str:
        return worst([*(r.verdict for r in self.revisions), *(f.severity for f in self.findings)])

    @property
    def latest_revision(self) -> int | None:
        return max((r.revision for r in self.revisions), default=None)

    def check_verdict(self, name: str) -> str:
        """Worst verdict of one check over every revision of the window."""
        return worst(r.checks[name].verdict for r in self.revisions if name in r.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_id": self.window_id,
            "station_id": self.key.station_id,
            "start": self.key.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": self.key.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size_seconds": self.key.size_seconds,
            "verdict": self.verdict,
            "latest_revision": self.latest_revision,
            "aggregates": self.aggregates,
            "revisions": [r.to_json() for r in self.revisions],
            "findings": [f.to_json() for f in self.findings],
            "timeline": self.timeline,
            **({} if self.group is None else {"group": self.group}),
        }
