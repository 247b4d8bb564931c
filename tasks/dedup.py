"""Order-independent deduplication of observations.

Two deliveries of the same observation (retries, replays, re-published files) must not
change a window. The rule, applied per identity `(station_id, observed_at)`:

* byte-identical canonical records collapse to one; each extra copy counts as a
  *duplicate*;
* distinct versions of the same identity are *conflicts*: the version with the highest
  `quality_level` wins (DWD re-publishes hours after further quality control), ties are
  broken by the lexicographically greatest canonical bytes; each losing distinct version
  counts as one conflict.

The result depends only on the multiset of input records, never on their order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.record import Observation, canonical_bytes


@dataclass(frozen=True, slots=True)
class DedupResult:
    """Surviving records in canonical order, with their canonical bytes, and the counts."""

    records: list[Observation]
    leaves: list[bytes]
    duplicates: int
    conflicts: int


def deduplicate(observations: Iterable[Observation]) -> DedupResult:
    """Collapse duplicates and resolve conflicts; return records in canonical order.

    Canonical order is ascending canonical bytes, which (because `observed_at` is the first
    key and has a fixed width) is ascending time, then station.
    """
    versions: dict[tuple, dict[bytes, Observation]] = {}
    seen = 0
    for obs in observations:
        seen += 1
        versions.setdefault(obs.key, {}).setdefault(canonical_bytes(obs), obs)
    distinct = sum(len(v) for v in versions.values())
    winners: list[tuple[bytes, Observation]] = []
    for by_bytes in versions.values():
        if len(by_bytes) == 1:
            winners.append(next(iter(by_bytes.items())))
        else:
            winners.append(max(by_bytes.items(), key=lambda kv: (kv[1].quality_level, kv[0])))
    winners.sort(key=lambda kv: kv[0])
    return DedupResult(
        records=[o for _, o in winners],
        leaves=[b for b, _ in winners],
        duplicates=seen - distinct,
        conflicts=distinct - len(versions),
    )
