"""Reader for DWD Climate Data Center air-temperature product files.

Two products are understood, recognised by their header line (not by file name):

* hourly ``produkt_tu_stunde_*``: ``STATIONS_ID;MESS_DATUM;QN_9;TT_TU;RF_TU;eor`` with
  ``MESS_DATUM`` as ``YYYYMMDDHH``;
* 10-minute ``produkt_zehn_min_tu_*``:
  ``STATIONS_ID;MESS_DATUM;QN;PP_10;TT_10;TM5_10;RF_10;TD_10;eor`` with ``MESS_DATUM`` as
  ``YYYYMMDDHHMM`` (only TT_10 and RF_10 are kept).

A product is given either as the plain text file or as DWD's zip archive
(``stundenwerte_TU_<id>_akt.zip``, ``10minutenwerte_TU_<id>_*.zip``) holding the
``produkt_*.txt`` file and the ``Metadaten_*`` files. Files are latin-1, fields are
``;``-separated with or without space padding, every row ends with ``eor``.

Values become exact integer tenths by parsing their decimal text (``8.7`` -> 87, ``89``
-> 890); a float never touches them. ``-999`` is DWD's missing value: the field becomes
``None`` and the row is kept.

Time zone. DWD's ``Metadaten_Parameter_*`` file (beside the product file, or inside the
zip) says per period whether ``MESS_DATUM`` is "in MEZ" (UTC+1 all year) or "in UTC".
Rows whose date falls in an MEZ period are **converted** to UTC by subtracting one hour;
rows in UTC periods are taken as they are. A date covered by no period of its station, or
by periods that disagree, or by a period in legal time (GZ/MESZ, which has DST and cannot
be converted without ambiguity) is a malformed row (reasons ``time_zone_unknown``,
``time_zone_ambiguous``, ``time_zone_unsupported``): the reader never guesses a shift.
When no metadata is available for the station at all (a bare product file), MESS_DATUM is
**assumed to be UTC**, which DWD guarantees for data since 2001 (all "recent" and "now"
releases).

A malformed row raises `DwdFormatError` naming file and line number. With
``lenient=True`` the error is instead handed to the ``quarantine`` callback (it carries
file, line number, reason and the raw line) and the row is skipped. A broken header is
always fatal, because no row of such a file can be read.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

from tasks.record import Observation, RecordRejected, validate

ENCODING = "latin-1"
MISSING = -999
MEZ_OFFSET = timedelta(hours=1)

HOURLY_COLUMNS = ("STATIONS_ID", "MESS_DATUM", "QN_9", "TT_TU", "RF_TU", "EOR")
TEN_MINUTE_COLUMNS = (
    "STATIONS_ID",
    "MESS_DATUM",
    "QN",
    "PP_10",
    "TT_10",
    "TM5_10",
    "RF_10",
    "TD_10",
    "EOR",
)

_NUMBER_RE = re.compile(r"^([+-]?)([0-9]+)(?:\.([0-9]+))?$")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_PERIOD_RE = re.compile(r"^\s*([0-9]+)\s*;\s*([0-9]{8})\s*;\s*([0-9]{8})?\s*;")


class DwdFormatError(ValueError):
    """A DWD product line that cannot be read; names the file and the 1-based line number."""

    def __init__(self, file: str, line_number: int, reason: str, detail: str, raw: str) -> None:
        super().__init__(f"{file}:{line_number}: {reason}: {detail}")
        self.file = file
        self.line_number = line_number
        self.reason = reason
        self.detail = detail
        self.raw = raw


Quarantine = Callable[[DwdFormatError], None]


@dataclass(frozen=True, slots=True)
class _Product:
    """Column layout of one product: where the fields are and how wide MESS_DATUM is."""

    name: str
    columns: tuple[str, ...]
    quality: int
    temperature: int
    humidity: int
    timestamp_digits: int
    parameters: frozenset[str]


_PRODUCTS = (
    _Product("hourly", HOURLY_COLUMNS, 2, 3, 4, 10, frozenset({"TT_TU", "RF_TU"})),
    _Product("10_minutes", TEN_MINUTE_COLUMNS, 2, 4, 6, 12, frozenset({"TT_10", "RF_10"})),
)


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

        A station without any period is UTC (see the module docstring).
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
    if re.search(r"\bUTC\b", text):
        return "UTC"
    if re.search(r"\bMEZ\b", text):
        return "MEZ"
    if re.search(r"\b(GZ|MESZ)\b", text):
        return "GZ"
    return None


def parse_parameter_metadata(text: str) -> list[TimeZonePeriod]:
    """Time-zone periods of one Metadaten_Parameter_*.txt file (decoded text)."""
    lines = text.splitlines()
    if not lines:
        return []
    header = [h.strip().upper() for h in lines[0].split(";")]
    try:
        param_col = header.index("PARAMETER")
    except ValueError:
        param_col = 4
    periods = []
    for line in lines[1:]:
        m = _PERIOD_RE.match(line)
        if not m:
            continue  # legend and footer lines
        fields = line.split(";")
        last = m.group(3)
        periods.append(
            TimeZonePeriod(
                station=int(m.group(1)),
                parameter=fields[param_col].strip().upper() if len(fields) > param_col else "",
                first=datetime.strptime(m.group(2), "%Y%m%d").date(),
                last=datetime.strptime(last, "%Y%m%d").date() if last else None,
                zone=_zone_of_text(line),
            )
        )
    return periods


def _parse_tenths(text: str) -> int | None:
    """Exact tenths of a DWD decimal text; None for the missing value -999."""
    m = _NUMBER_RE.match(text)
    if not m:
        raise ValueError(f"not a decimal number: {text!r}")
    sign, whole, frac = m.groups()
    frac = frac or ""
    if sign == "-" and int(whole) == -MISSING and not frac.strip("0"):
        return None
    if frac[1:].strip("0"):
        raise ValueError(f"{text!r} is more precise than tenths")
    tenths = int(whole) * 10 + (int(frac[0]) if frac else 0)
    return -tenths if sign == "-" else tenths


def _product_of(header_line: str) -> _Product | None:
    columns = tuple(c.strip().upper() for c in header_line.strip().rstrip(";").split(";"))
    for product in _PRODUCTS:
        if columns == product.columns:
            return product
    return None


def _read_rows(
    name: str,
    lines: Iterable[str],
    zones: TimeZoneTable,
    lenient: bool,
    quarantine: Quarantine | None,
) -> Iterator[Observation]:
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise DwdFormatError(name, 1, "empty_file", "no header line", "")
    product = _product_of(header)
    if product is None:
        raise DwdFormatError(
            name,
            1,
            "bad_header",
            f"expected {';'.join(HOURLY_COLUMNS)} or {';'.join(TEN_MINUTE_COLUMNS)}",
            header.rstrip("\r\n"),
        )
    width = len(product.columns)
    for number, raw_line in enumerate(it, start=2):
        raw = raw_line.rstrip("\r\n")
        if not raw.strip():
            continue  # trailing blank lines carry nothing
        try:
            yield _parse_row(name, number, raw, product, width, zones)
        except DwdFormatError as exc:
            if not lenient:
                raise
            if quarantine is not None:
                quarantine(exc)


def _parse_row(
    name: str, number: int, raw: str, product: _Product, width: int, zones: TimeZoneTable
) -> Observation:
    def bad(reason: str, detail: str) -> DwdFormatError:
        return DwdFormatError(name, number, reason, detail, raw)

    fields = [f.strip() for f in raw.split(";")]
    if len(fields) == width + 1 and fields[-1] == "":
        fields.pop()  # a trailing ';' after eor
    if len(fields) != width:
        raise bad("bad_field_count", f"expected {width} fields, got {len(fields)}")
    if fields[-1].lower() != "eor":
        raise bad("missing_eor", f"row does not end with eor: {fields[-1]!r}")
    station_text, stamp = fields[0], fields[1]
    if not station_text.isdigit() or len(station_text) > 5:
        raise bad("bad_station_id", f"station id {station_text!r} is not 1..5 digits")
    station = int(station_text)
    if len(stamp) != product.timestamp_digits or not stamp.isdigit():
        raise bad("bad_timestamp", f"MESS_DATUM {stamp!r} is not {product.timestamp_digits} digits")
    try:
        local = datetime(
            int(stamp[0:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[8:10]),
            int(stamp[10:12]) if product.timestamp_digits == 12 else 0,
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise bad("bad_timestamp", f"MESS_DATUM {stamp!r}: {exc}") from exc
    try:
        zone = zones.zone_of(station, local.date(), product.parameters)
    except LookupError as exc:
        reason, detail = exc.args
        raise bad(reason, detail) from exc
    observed_at = local - MEZ_OFFSET if zone == "MEZ" else local
    quality_text = fields[product.quality]
    if not _INT_RE.match(quality_text):
        raise bad("bad_quality_level", f"quality level {quality_text!r} is not an integer")
    try:
        temperature = _parse_tenths(fields[product.temperature])
        humidity = _parse_tenths(fields[product.humidity])
    except ValueError as exc:
        raise bad("bad_number", str(exc)) from exc
    try:
        return validate(
            Observation(f"{station:05d}", observed_at, temperature, humidity, int(quality_text))
        )
    except RecordRejected as exc:
        raise bad(exc.reason, exc.detail) from exc


def _metadata_from_dir(directory: Path) -> TimeZoneTable:
    periods: list[TimeZonePeriod] = []
    for meta in sorted(directory.glob("Metadaten_Parameter*.txt")):
        periods += parse_parameter_metadata(meta.read_text(ENCODING))
    return TimeZoneTable(periods)


def _is_product(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return base.startswith("produkt_") and base.endswith(".txt")


def read_observations(
    path: str | Path, *, lenient: bool = False, quarantine: Quarantine | None = None
) -> Iterator[Observation]:
    """Yield the observations of a DWD product file or zip archive, in file order.

    See the module docstring for the accepted formats, the time-zone rule (MEZ periods
    are converted to UTC, no metadata means UTC) and the error/quarantine behaviour.
    With ``lenient=True`` and no ``quarantine`` callback, malformed rows are dropped.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        yield from _read_zip(path, lenient, quarantine)
        return
    zones = _metadata_from_dir(path.parent)
    with path.open("r", encoding=ENCODING, newline="") as fh:
        yield from _read_rows(str(path), fh, zones, lenient, quarantine)


def _read_zip(path: Path, lenient: bool, quarantine: Quarantine | None) -> Iterator[Observation]:
    with zipfile.ZipFile(path) as archive:
        members = sorted(archive.namelist())
        periods: list[TimeZonePeriod] = []
        for member in members:
            base = member.rsplit("/", 1)[-1]
            if base.startswith("Metadaten_Parameter") and base.endswith(".txt"):
                periods += parse_parameter_metadata(archive.read(member).decode(ENCODING))
        zones = TimeZoneTable(periods)
        products = [m for m in members if _is_product(m)]
        if not products:
            raise DwdFormatError(str(path), 0, "no_product", "zip holds no produkt_*.txt file", "")
        for member in products:
            with archive.open(member) as raw:
                text = io.TextIOWrapper(raw, encoding=ENCODING, newline="")
                yield from _read_rows(f"{path}!{member}", text, zones, lenient, quarantine)


def demo_files() -> list[Path]:
    """The two real hourly DWD product files shipped in the package (00427 and 00433).

    Their Metadaten_* files lie beside them, so the time-zone rule applies as for any
    product file; see streamnotary/demo_data/PROVENANCE.md for origin and license.
    """
    root = Path(str(resources.files("streamnotary").joinpath("demo_data")))
    return sorted(root.glob("stundenwerte_TU_*_akt/produkt_tu_stunde_*.txt"))
