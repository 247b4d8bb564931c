"""Window analytics with exact, reproducible arithmetic.

Values are integer tenths, sums are Python integers (exact, order-independent), and the
mean is rounded once, half to even, to hundredths, using integer arithmetic only. The
result is written as decimal strings so that no float ever reaches a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.record import Observation


def _tenths_str(v: int) -> str:
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), 10)
    return f"{sign}{q}.{r}"


def mean_hundredths(total_tenths: int, count: int) -> int:
    """round_half_even(total_tenths / count * 10): the mean in hundredths, exactly."""
    q, r = divmod(total_tenths * 10, count)  # floor division, r in [0, count)
    if 2 * r > count or (2 * r == count and q & 1):
        q += 1
    return q


def _hundredths_str(v: int) -> str:
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), 100)
    return f"{sign}{q}.{r:02d}"


def _summary(present: Sequence[int], missing: int) -> dict[str, Any]:
    if not present:
        return {
            "count": 0,
            "missing": missing,
            "min": None,
            "max": None,
            "mean": None,
            "sum_tenths": 0,
        }
    total = sum(present)
    return {
        "count": len(present),
        "missing": missing,
        "min": _tenths_str(min(present)),
        "max": _tenths_str(max(present)),
        "mean": _hundredths_str(mean_hundredths(total, len(present))),
        "sum_tenths": total,
    }


def window_aggregates(records: Sequence[Observation]) -> dict[str, Any]:
    """Aggregates bound into the checkpoint: record count, per-variable statistics."""
    temps = [r.temperature_tenths for r in records]
    hums = [r.humidity_tenths for r in records]
    t_present = [v for v in temps if v is not None]
    h_present = [v for v in hums if v is not None]
    return {
        "records": len(records),
        "temperature_c": _summary(t_present, len(temps) - len(t_present)),
        "relative_humidity_pct": _summary(h_present, len(hums) - len(h_present)),
    }
