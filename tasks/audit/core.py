"""Verdicts, findings and per-check results: the vocabulary every audit check speaks.

Verdicts: ``pass``; ``fail`` (evidence contradicts the checkpoint); ``pending`` (anchored
but not yet final on the ledger); ``not_checkable`` (the evidence is gone, e.g. Kafka
retention removed the offsets, or the ledger is unreachable). ``not_checkable`` and
``pending`` are never reported as ``pass``. ``info`` is a finding severity only: noted,
never changes a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PASS = "pass"
FAIL = "fail"
PENDING = "pending"
NOT_CHECKABLE = "not_checkable"
INFO = "info"

VERDICTS = (PASS, PENDING, NOT_CHECKABLE, FAIL)  # in increasing severity
_RANK = {PASS: 0, INFO: 0, PENDING: 1, NOT_CHECKABLE: 2, FAIL: 3}

CHECKS = ("anchored", "payload", "canonical", "analytics", "completeness", "revisions")


def worst(verdicts: Iterable[str]) -> str:
    """The most severe verdict (fail > not_checkable > pending > pass)."""
    out = PASS
    for v in verdicts:
        if _RANK[v] > _RANK[out]:
            out = v
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation of a check; `partition`/`offset` locate it in Kafka when known."""

    severity: str
    code: str
    message: str
    partition: int | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }
        if self.partition is not None:
            out["partition"] = self.partition
        if self.offset is not None:
            out["offset"] = self.offset
        return out


@dataclass(slots=True)
class CheckResult:
    """Outcome of one check of one revision: its verdict is the worst of its findings."""

    name: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return worst(f.severity for f in self.findings)

    def add(self, severity: str, code: str, message: str, **where: int) -> None:
        self.findings.append(Finding(severity, code, message, **where))

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "findings": [f.to_json() for f in self.findings]}
