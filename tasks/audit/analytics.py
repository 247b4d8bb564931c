"""(d) analytics: aggregates recomputed from the payload equal the anchored ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.aggregates import window_aggregates
from tasks.audit.core import FAIL, NOT_CHECKABLE, CheckResult
from tasks.audit.evidence import RevisionInputs
from tasks.record import Observation


def check_analytics(inp: RevisionInputs, records: Sequence[Observation] | None) -> CheckResult:
    """Recompute the aggregates from the decoded payload records."""
    res = CheckResult("analytics")
    cp = inp.checkpoint
    if cp is None or records is None:
        res.add(NOT_CHECKABLE, "input_missing", "no decodable payload or checkpoint")
        return res
    got = window_aggregates(records)
    want = cp["aggregates"]
    for path in _diff_paths(got, want):
        res.add(
            FAIL,
            "aggregate_mismatch",
            f"{path}: recomputed {_at(got, path)!r}, anchored {_at(want, path)!r}",
        )
    if want.get("records") != cp["counts"]["records"]:
        res.add(FAIL, "record_count_inconsistent", "aggregates.records differs from counts.records")
    return res


def _diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(a.keys() | b.keys()):
            out += _diff_paths(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix or "."]


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc
