"""Kafka messages as the pipeline sees them, and their attribution to windows.

`classify` is the one rule, shared by the anchoring pipeline and the auditor, that says
which window a message belongs to and whether it is a valid record:

* a message whose value decodes to a valid observation belongs to the window of
  `(record.station_id, record.observed_at)`;
* a malformed message is *rejected* with a reason and still attributed, through its
  envelope, to the window of `(key as station id, message timestamp)`, so that it is
  counted in that window's checkpoint;
* a malformed message with no usable key or timestamp is *unattributable*; it is
  quarantined and counted in the run summary.

A valid record whose Kafka key is not its station id is rejected (`key_mismatch`): the
producer contract is key = station id, and partitioning, compaction and the envelope
attribution of the station's malformed messages all rely on it.

`classify` is total: any key, value and timestamp (negative, beyond year 9999, absent)
yields a `Classified`, never an exception, because an exception here happens before the
write-ahead plan, so the cursor would never move past the message and every later run
would fail on it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tasks.record import (
    OBSERVED_AT_RANGE,
    STATION_ID_RE,
    Observation,
    RecordRejected,
    decode_record,
)
from tasks.record_fast import decode_canonical
from tasks.window import WindowKey, WindowSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An envelope timestamp is usable from the epoch (Kafka reserves negative values: -1 is
# "no timestamp") to the end of the record time range (year 2200); outside that span a
# message is unattributable, rather than a datetime overflow.
_TIMESTAMP_MS_END = (OBSERVED_AT_RANGE[1] - _EPOCH) // timedelta(milliseconds=1)


# Not frozen, by measure: built once per message (10.8M in the 10M benchmark), and a frozen
# dataclass's __init__ sets each field through object.__setattr__ (~4x slower: ~0.8 us a
# message each; docs/benchmarks.md, "Session 26"). Treated as immutable; hashable as before.
@dataclass(slots=True, unsafe_hash=True)
class SourceMessage:
    """One Kafka message at a known position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


# Not frozen, by measure, like `SourceMessage`.
@dataclass(slots=True, unsafe_hash=True)
class Classified:
    """A message with its window (None if unattributable) and its record or reject reason."""

    message: SourceMessage
    window: WindowKey | None
    record: Observation | None
    reason: str | None = None
    detail: str | None = None

    @property
    def rejected(self) -> bool:
        return self.record is None


def classify(msg: SourceMessage, spec: WindowSpec) -> Classified:
    """Decode `msg` and attribute it to a window (see module docstring)."""
    if msg.value is None:
        return _rejected(msg, spec, "tombstone", "message has no value")
    record = decode_canonical(msg.value)  # the producer's byte layout, or None: unsure
    if record is None:
        try:
            record = decode_record(msg.value)
        except RecordRejected as exc:
            return _rejected(msg, spec, exc.reason, exc.detail)
    if msg.key != record.station_id.encode("ascii"):
        return _rejected(
            msg,
            spec,
            "key_mismatch",
            f"Kafka key {_show(msg.key)} is not the record's station id {record.station_id}",
        )
    return Classified(msg, spec.key_of(record.station_id, record.observed_at), record)


def _show(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    return repr(key[:40]) + ("..." if len(key) > 40 else "")


def _rejected(msg: SourceMessage, spec: WindowSpec, reason: str, detail: str) -> Classified:
    return Classified(msg, envelope_window(msg, spec), None, reason, detail)


def envelope_window(msg: SourceMessage, spec: WindowSpec) -> WindowKey | None:
    """The window named by the message key (station id) and timestamp, if both are usable."""
    ts = msg.timestamp_ms
    if msg.key is None or type(ts) is not int:
        return None
    if not 0 <= ts < _TIMESTAMP_MS_END:
        return None
    try:
        station = msg.key.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not STATION_ID_RE.fullmatch(station):
        return None
    return spec.key_of(station, _EPOCH + timedelta(milliseconds=ts))
