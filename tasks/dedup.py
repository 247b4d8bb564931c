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

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import compress, islice
from operator import ne

from tasks.gc_pause import cyclic_gc_paused
from tasks.record import Observation, canonical_leaves


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
    key and has a fixed width) is ascending time first.

    The common case (no conflicts) runs at C speed: `canonical_leaves` gives each message
    its canonical bytes and an integer identity standing for `(station_id, observed_at)`.
    A stable sort of the positions by leaf puts byte-identical copies side by side, so the
    last copy of each run survives (as in a dict keyed by leaves) and the others are
    duplicates; one set of the integer identities tells whether any conflict exists, and
    only then are the conflicting identities resolved one by one.
    """
    records = observations if isinstance(observations, list) else list(observations)
    with cyclic_gc_paused():  # a million leaves would trigger full collections: ~20 %
        leaves, identities = canonical_leaves(records)
        order = sorted(range(len(leaves)), key=leaves.__getitem__)
        ordered = list(map(leaves.__getitem__, order))
        # keep a position unless the next one in canonical order has the same leaf
        unique = list(map(ne, ordered, islice(ordered, 1, None)))
        unique.append(True)
        order = list(compress(order, unique))
        ordered = list(compress(ordered, unique))
        duplicates = len(leaves) - len(order)
        conflicts = len(order) - len(set(identities))
        if conflicts:
            order = _drop_losers(order, records, leaves, identities)
            ordered = list(map(leaves.__getitem__, order))
        winners = list(map(records.__getitem__, order))
    return DedupResult(
        records=winners,
        leaves=ordered,
        duplicates=duplicates,
        conflicts=conflicts,
    )


def _drop_losers(
    order: list[int], records: list[Observation], leaves: list[bytes], identities: list[Hashable]
) -> list[int]:
    """`order` (positions of distinct leaves) without the losing versions of any identity."""
    versions: dict[Hashable, list[int]] = {}
    for position in order:
        versions.setdefault(identities[position], []).append(position)
    losers: set[int] = set()
    for group in versions.values():
        if len(group) > 1:
            winner = max(group, key=lambda p: (records[p].quality_level, leaves[p]))
            losers.update(p for p in group if p != winner)
    return [p for p in order if p not in losers]
