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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tasks.record import STATION_ID_RE, Observation, RecordRejected, decode_record
from tasks.window import WindowKey, WindowSpec


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One Kafka message at a known position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
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
    try:
        record = decode_record(msg.value)
    except RecordRejected as exc:
        return _rejected(msg, spec, exc.reason, exc.detail)
    return Classified(msg, spec.key_of(record.station_id, record.observed_at), record)


def _rejected(msg: SourceMessage, spec: WindowSpec, reason: str, detail: str) -> Classified:
    return Classified(msg, envelope_window(msg, spec), None, reason, detail)


def envelope_window(msg: SourceMessage, spec: WindowSpec) -> WindowKey | None:
    """The window named by the message key (station id) and timestamp, if both are usable."""
    if msg.key is None or msg.timestamp_ms is None or msg.timestamp_ms < 0:
        return None
    try:
        station = msg.key.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not STATION_ID_RE.match(station):
        return None
    t = datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC)
    return spec.key_of(station, t)
