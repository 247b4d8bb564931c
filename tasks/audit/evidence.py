"""Inputs of the audit checks, as fetched by `flows/audit.py` (None = absent).

The checks never fetch anything themselves: they compare these already-fetched documents,
bytes, Kafka messages and ledger observations, so that each verdict is reproducible from
the evidence recorded in the report.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.message import Classified
from tasks.window import WindowKey


@dataclass(frozen=True, slots=True)
class LedgerObservation:
    """What the ledger returned for one entry key: a fresh reference and the committed body.

    `unavailable` is set when the ledger could not be asked (the check is then
    not_checkable); `error` for any other failure of lookup/read.
    """

    key: str
    ref: Any | None = None  # storage.ledger.base.AnchorRef (kept duck-typed: pure module)
    body: dict[str, Any] | None = None
    error: str | None = None
    unavailable: bool = False
    # Entries under the key by writers the ledger does not trust (MultiChain publishers
    # other than the pinned/operator address): ignored by lookup, reported as `info`.
    foreign: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerIntegrity:
    """Result of the ledger's own integrity check (embedded ledger: hash chain)."""

    backend: str
    ok: bool = True
    detail: str = ""
    seq: int | None = None  # the first broken entry, when the backend names it

    def touches(self, ref: Any | None) -> bool:
        """Whether the broken entry is this reference's (or cannot be attributed at all)."""
        if self.ok or ref is None:
            return False
        if self.seq is None:
            return True
        return _locator_seq(ref) == self.seq


def _locator_seq(ref: Any) -> int | None:
    locator = getattr(ref, "locator", None) or {}
    for name in ("seq", "sequence", "row"):
        if isinstance(locator.get(name), int):
            return int(locator[name])
    return None


SEQ_IN_MESSAGE = re.compile(r"\bseq(?:uence)?\s*[=#:]?\s*(\d+)", re.IGNORECASE)


def integrity_from_error(backend: str, exc: BaseException | None) -> LedgerIntegrity:
    """Turn the outcome of `Ledger.verify_integrity()` into a `LedgerIntegrity`."""
    if exc is None:
        return LedgerIntegrity(backend)
    seq = getattr(exc, "seq", None)
    if not isinstance(seq, int):
        m = SEQ_IN_MESSAGE.search(str(exc))
        seq = int(m.group(1)) if m else None
    return LedgerIntegrity(backend, ok=False, detail=str(exc), seq=seq)


@dataclass(slots=True)
class RevisionInputs:
    """The stored documents of one window revision, as fetched (None = absent)."""

    revision: int
    receipt_key: str
    checkpoint_key: str
    payload_key: str
    receipt: dict[str, Any] | None = None
    receipt_problem: str | None = None
    receipt_invalid: bool = False  # present but not a receipt v1 (see documents.py)
    checkpoint: dict[str, Any] | None = None
    checkpoint_problem: str | None = None
    checkpoint_invalid: bool = False  # present but not a checkpoint v1
    payload: bytes | None = None
    payload_problem: str | None = None
    payload_uri: str | None = None  # what the store calls payload_key
    batch_entry: LedgerObservation | None = None
    window_entry: LedgerObservation | None = None
    log_entry: dict[str, Any] | None = None  # its window entry in the anchor log, if logged
    log_index: int | None = None  # that entry's leaf index
    log_size: int | None = None  # size of the log head its run anchored (run entry index + 1)
    # False when the run that logged it wrote no receipts (its run entry says layout "pack"):
    # the signed log, not the bucket, decides whether a missing receipt is a finding
    receipt_expected: bool = True


@dataclass(frozen=True, slots=True)
class PartitionScan:
    """One bounded read of a partition: offsets [start, end) were read (end = high watermark).

    `low` is the low watermark at read time: offsets below it were removed by retention.
    `error` is set when the read failed (the range is then not checkable).
    """

    partition: int
    start: int
    end: int
    low: int
    error: str | None = None
    messages: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "read_start": self.start,
            "read_end": self.end,
            "low_watermark": self.low,
            "messages": self.messages,
            "error": self.error,
        }


@dataclass(slots=True)
class KafkaView:
    """All messages read for an audit run, classified once and grouped by window."""

    scans: dict[int, PartitionScan]
    by_window: dict[WindowKey, list[Classified]] = field(default_factory=dict)
    # per partition the offsets [first, last) the anchor log's runs read: coverage
    # (tasks.audit.coverage) accounts for those, the late-data scan only for what follows
    log_extent: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, scans: Iterable[PartitionScan], classified: Iterable[Classified]) -> KafkaView:
        groups: dict[WindowKey, list[Classified]] = defaultdict(list)
        for c in classified:
            if c.window is not None:
                groups[c.window].append(c)
        return cls({s.partition: s for s in scans}, dict(groups))


def foreign_writers(items: Sequence[dict[str, Any]]) -> list[str]:
    """Who wrote a ledger's foreign entries: MultiChain `publishers`, EVM `sender`."""
    return sorted(
        {str(w) for item in items for w in (item.get("publishers") or [item.get("sender")]) if w}
    )
