"""Time-zone periods of DWD ``Metadaten_Parameter_*`` files.

DWD states per station, parameter and period whether ``MESS_DATUM`` is "in MEZ" (UTC+1
all year), "in UTC", or in legal time (GZ/MESZ). `tasks.dwd` converts MEZ rows to UTC
with these periods and refuses rows no period (or disagreeing periods, or legal time)
covers; see its module docstring.

Metadata files come from the same archive as the data, so they are input like any
other: a line that is not a period row is skipped (legends and footers), a period row
with an impossible date or an oversized line is a `MetadataError` naming the line, never
a bare ``ValueError`` from ``strptime``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

_PERIOD_RE = re.compile(r"\s*([0-9]{1,5})\s*;\s*([0-9]{8})\s*;\s*([0-9]{8})?\s*;")
_ZONES = (("UTC", re.compile(r"\bUTC\b")), ("MEZ", re.compile(r"\bMEZ\b")))
_LEGAL_TIME = re.compile(r"\b(GZ|MESZ)\b")


class MetadataError(ValueError):
    """A Metadaten_Parameter line that cannot be read (1-based `line_number`, `reason`)."""

    def __init__(self, line_number: int, reason: str, detail: str, raw: str) -> None:
        super().__init__(f"line {line_number}: {reason}: {detail}")
        self.line_number = line_number
        self.reason = reason
        self.detail = detail
        self.raw = raw


@dataclass(frozen=True, slots=True)
class TimeZonePeriod:
    """One row of Metadaten_Parameter: for `parameter`, dates first..last are in `zone`."""

    station: int
    parameter: str
    first: date
    last: date | None
    zone: str | None  # "UTC", "MEZ", "GZ" (legal time, unsupported) or None (not stated)

    def covers(self, day: date) -> bool:
        return self.first <= day and (self.last is None or day <= self.last)


class TimeZoneTable:
    """The time-zone periods of Metadaten_Parameter files, queried per station and date."""

    def __init__(self, periods: Iterable[TimeZonePeriod]) -> None:
        self._by_station: dict[int, list[TimeZonePeriod]] = {}
        for p in periods:
            if p.zone is not None:
                self._by_station.setdefault(p.station, []).append(p)
        self._memo: dict[tuple[int, date, frozenset[str]], str] = {}

    def __bool__(self) -> bool:
        return bool(self._by_station)

    def zone_of(self, station: int, day: date, parameters: frozenset[str]) -> str:
        """ "UTC" or "MEZ" for the station's local date `day`; raises `LookupError` otherwise.

        A station without any period is UTC (see the tasks.dwd module docstring).
        """
        key = (station, day, parameters)
        zone = self._memo.get(key)
        if zone is None:
            zone = self._memo[key] = self._resolve(station, day, parameters)
        return zone

    def _resolve(self, station: int, day: date, parameters: frozenset[str]) -> str:
        periods = self._by_station.get(station)
        if not periods:
            return "UTC"
        relevant = [p for p in periods if p.parameter in parameters] or periods
        zones = {p.zone for p in relevant if p.covers(day)}
        if not zones:
            raise LookupError("time_zone_unknown", f"no metadata period covers {day.isoformat()}")
        if len(zones) > 1:
            raise LookupError(
                "time_zone_ambiguous", f"metadata periods disagree on {day}: {sorted(zones)}"
            )
        zone = zones.pop()
        if zone == "GZ":
            raise LookupError(
                "time_zone_unsupported", f"{day}: legal time (GZ/MESZ) cannot be converted"
            )
        return zone  # type: ignore[return-value]


def _zone_of_text(text: str) -> str | None:
    for zone, pattern in _ZONES:
        if pattern.search(text):
            return zone
    if _LEGAL_TIME.search(text):
        return "GZ"
    return None


def _date(text: str, number: int, line: str) -> date:
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError as exc:
        raise MetadataError(number, "bad_metadata_date", f"{text!r}: {exc}", line) from exc


def parse_parameter_metadata(text: str, *, max_line_chars: int = 4096) -> list[TimeZonePeriod]:
    """Time-zone periods of one Metadaten_Parameter_*.txt file (decoded text).

    Raises `MetadataError` for a line longer than `max_line_chars` or a period row with an
    impossible date.
    """
    lines = text.splitlines()
    if not lines:
        return []
    header = [h.strip().upper() for h in lines[0][: max_line_chars + 1].split(";")]
    try:
        param_col = header.index("PARAMETER")
    except ValueError:
        param_col = 4
    periods = []
    for number, line in enumerate(lines, start=1):
        if len(line) > max_line_chars:
            raise MetadataError(
                number, "line_too_long", f"{len(line)} characters, limit {max_line_chars}", ""
            )
        if number == 1:
            continue
        m = _PERIOD_RE.match(line)
        if not m:
            continue  # legend and footer lines
        fields = line.split(";")
        last = m.group(3)
        periods.append(
            TimeZonePeriod(
                station=int(m.group(1)),
                parameter=fields[param_col].strip().upper() if len(fields) > param_col else "",
                first=_date(m.group(2), number, line),
                last=_date(last, number, line) if last else None,
                zone=_zone_of_text(line),
            )
        )
    return periods
