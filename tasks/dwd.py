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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import IO

from tasks.dwd_metadata import (
    MetadataError,
    TimeZonePeriod,
    TimeZoneTable,
    parse_parameter_metadata,
)
from tasks.record import Observation, RecordRejected, validate

__all__ = [
    "DwdFormatError",
    "DwdLimits",
    "TimeZonePeriod",
    "TimeZoneTable",
    "demo_files",
    "parse_parameter_metadata",
    "read_observations",
    "read_product_bytes",
]

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

# Full matches only, and ASCII digits only: str.isdigit() accepts "²" and int() accepts
# Arabic-Indic digits, so neither decides what a number is. Bounded digit counts keep
# int() far from its 4300-digit limit whatever the line length.
_NUMBER_RE = re.compile(r"([+-]?)([0-9]{1,9})(?:\.([0-9]{1,9}))?")
_INT_RE = re.compile(r"[+-]?[0-9]{1,9}")
_STATION_RE = re.compile(r"[0-9]{1,5}")
_STAMP_RE = {10: re.compile(r"[0-9]{10}"), 12: re.compile(r"[0-9]{12}")}


class DwdFormatError(ValueError):
    """A DWD product line that cannot be read; names the file and the 1-based line number."""

    def __init__(self, file: str, line_number: int, reason: str, detail: str, raw: str) -> None:
        super().__init__(f"{file}:{line_number}: {reason}: {detail}")
        self.file = file
        self.line_number = line_number
        self.reason = reason
        self.detail = detail
        self.raw = raw

    def to_json(self) -> dict[str, str]:
        """The skipped line as the ingest manifest records it (all strings, as read)."""
        return {
            "file": str(self.file),
            "line_number": str(self.line_number),
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
        }


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
class DwdLimits:
    """Size limits of what the reader accepts (settings `dwd_max_*`, docs/operations.md).

    A zip member is checked against its declared size before a byte is inflated; Python's
    zipfile never returns more than that declared size (and checks the CRC), so a zip bomb
    ends as `too_large` instead of filling memory. The largest real DWD product files (10-
    minute or hourly historical releases) expand to about 40 MB; metadata files to a few KB;
    rows are under 100 characters.
    """

    max_member_bytes: int = 64 << 20  # one product file (plain, or a zip member expanded)
    max_total_bytes: int = 128 << 20  # all members of one zip archive, expanded
    max_metadata_bytes: int = 1 << 20  # one Metadaten_* file
    max_line_chars: int = 1024  # one product or metadata line


def _parse_tenths(text: str) -> int | None:
    """Exact tenths of a DWD decimal text; None for the missing value -999."""
    m = _NUMBER_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not a decimal number: {text[:40]!r}")
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


def _bounded_lines(fh: IO[str], max_chars: int) -> Iterator[tuple[str, bool]]:
    """(line, too_long) pairs; an overlong line is cut at `max_chars` and its rest skipped,
    so a file without newlines never becomes one giant string."""
    while True:
        line = fh.readline(max_chars + 1)
        if not line:
            return
        if len(line) <= max_chars or line.endswith("\n"):
            yield line, len(line.rstrip("\r\n")) > max_chars
            continue
        rest = line
        while rest and not rest.endswith("\n"):
            rest = fh.readline(max_chars + 1)
        yield line[:max_chars], True


def _read_rows(
    name: str,
    fh: IO[str],
    zones: TimeZoneTable,
    lenient: bool,
    quarantine: Quarantine | None,
    limits: DwdLimits,
) -> Iterator[Observation]:
    it = _bounded_lines(fh, limits.max_line_chars)
    header, too_long = next(it, ("", False))
    if not header:
        raise DwdFormatError(name, 1, "empty_file", "no header line", "")
    product = None if too_long else _product_of(header)
    if product is None:
        raise DwdFormatError(
            name,
            1,
            "bad_header",
            f"expected {';'.join(HOURLY_COLUMNS)} or {';'.join(TEN_MINUTE_COLUMNS)}",
            header.rstrip("\r\n")[:200],
        )
    width = len(product.columns)
    for number, (raw_line, too_long) in enumerate(it, start=2):
        raw = raw_line.rstrip("\r\n")
        if not raw.strip():
            continue  # trailing blank lines carry nothing
        try:
            if too_long:
                raise DwdFormatError(
                    name, number, "line_too_long", f"limit {limits.max_line_chars}", raw[:200]
                )
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
        raise bad("missing_eor", f"row does not end with eor: {fields[-1][:40]!r}")
    station_text, stamp = fields[0], fields[1]
    if not _STATION_RE.fullmatch(station_text):
        raise bad("bad_station_id", f"station id {station_text[:40]!r} is not 1..5 digits")
    station = int(station_text)
    if not _STAMP_RE[product.timestamp_digits].fullmatch(stamp):
        raise bad(
            "bad_timestamp", f"MESS_DATUM {stamp[:40]!r} is not {product.timestamp_digits} digits"
        )
    try:
        local = datetime(
            int(stamp[0:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[8:10]),
            int(stamp[10:12]) if product.timestamp_digits == 12 else 0,
            tzinfo=UTC,
        )
        observed_at = local
        zone = zones.zone_of(station, local.date(), product.parameters)
        if zone == "MEZ":
            observed_at = local - MEZ_OFFSET
    except (ValueError, OverflowError) as exc:
        raise bad("bad_timestamp", f"MESS_DATUM {stamp!r}: {exc}") from exc
    except LookupError as exc:
        reason, detail = exc.args
        raise bad(reason, detail) from exc
    quality_text = fields[product.quality]
    if not _INT_RE.fullmatch(quality_text):
        raise bad("bad_quality_level", f"quality level {quality_text[:40]!r} is not an integer")
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


def _metadata(name: str, data: bytes, limits: DwdLimits) -> list[TimeZonePeriod]:
    try:
        return parse_parameter_metadata(data.decode(ENCODING), max_line_chars=limits.max_line_chars)
    except MetadataError as exc:
        raise DwdFormatError(name, exc.line_number, exc.reason, exc.detail, exc.raw) from exc


def _too_large(name: str, size: int, limit: int, what: str) -> DwdFormatError:
    return DwdFormatError(name, 0, "too_large", f"{what} is {size} bytes, limit {limit}", "")


def _metadata_from_dir(directory: Path, limits: DwdLimits) -> TimeZoneTable:
    periods: list[TimeZonePeriod] = []
    for meta in sorted(directory.glob("Metadaten_Parameter*.txt")):
        size = meta.stat().st_size
        if size > limits.max_metadata_bytes:
            raise _too_large(str(meta), size, limits.max_metadata_bytes, "metadata file")
        periods += _metadata(str(meta), meta.read_bytes(), limits)
    return TimeZoneTable(periods)


def _is_product(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return base.startswith("produkt_") and base.endswith(".txt")


def _is_parameter_metadata(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return base.startswith("Metadaten_Parameter") and base.endswith(".txt")


def read_observations(
    path: str | Path,
    *,
    lenient: bool = False,
    quarantine: Quarantine | None = None,
    limits: DwdLimits = DwdLimits(),
) -> Iterator[Observation]:
    """Yield the observations of a DWD product file or zip archive, in file order.

    See the module docstring for the accepted formats, the time-zone rule (MEZ periods
    are converted to UTC, no metadata means UTC) and the error/quarantine behaviour.
    With ``lenient=True`` and no ``quarantine`` callback, malformed rows are dropped.
    Every failure is a `DwdFormatError` with a reason; a file or archive beyond `limits`
    (``too_large``) or not readable as a zip (``bad_zip``) is fatal even when lenient.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        yield from _read_zip(str(path), path, lenient, quarantine, limits)
        return
    size = path.stat().st_size
    if size > limits.max_member_bytes:
        raise _too_large(str(path), size, limits.max_member_bytes, "product file")
    zones = _metadata_from_dir(path.parent, limits)
    with path.open("r", encoding=ENCODING, newline="") as fh:
        yield from _read_rows(str(path), fh, zones, lenient, quarantine, limits)


def read_product_bytes(
    name: str,
    data: bytes,
    *,
    lenient: bool = False,
    quarantine: Quarantine | None = None,
    limits: DwdLimits = DwdLimits(),
) -> Iterator[Observation]:
    """`read_observations` for a product file or zip archive held in memory as `data`.

    `name` only labels errors. A plain product file read this way has no metadata beside
    it, so its MESS_DATUM is UTC (module docstring); an archive brings its own.
    """
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        yield from _read_zip(name, buffer, lenient, quarantine, limits)
        return
    if len(data) > limits.max_member_bytes:
        raise _too_large(name, len(data), limits.max_member_bytes, "product file")
    text = io.TextIOWrapper(io.BytesIO(data), encoding=ENCODING, newline="")
    yield from _read_rows(name, text, TimeZoneTable(()), lenient, quarantine, limits)


def _read_zip(
    path: str,
    source: Path | IO[bytes],
    lenient: bool,
    quarantine: Quarantine | None,
    limits: DwdLimits,
) -> Iterator[Observation]:
    try:
        archive = zipfile.ZipFile(source)
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,  # "zip file version 23.2" in a forged central directory
    ) as exc:
        raise DwdFormatError(str(path), 0, "bad_zip", str(exc), "") from exc
    with archive:
        infos = sorted(archive.infolist(), key=lambda i: i.filename)
        wanted = [i for i in infos if _is_product(i.filename) or _is_parameter_metadata(i.filename)]
        total = sum(i.file_size for i in wanted)
        if total > limits.max_total_bytes:
            raise _too_large(str(path), total, limits.max_total_bytes, "expanded archive")
        for info in wanted:
            limit = (
                limits.max_member_bytes if _is_product(info.filename) else limits.max_metadata_bytes
            )
            if info.file_size > limit:
                raise _too_large(f"{path}!{info.filename}", info.file_size, limit, "member")
        try:
            periods: list[TimeZonePeriod] = []
            for info in wanted:
                if _is_parameter_metadata(info.filename):
                    name = f"{path}!{info.filename}"
                    periods += _metadata(name, archive.read(info), limits)
            zones = TimeZoneTable(periods)
            products = [i for i in wanted if _is_product(i.filename)]
            if not products:
                raise DwdFormatError(
                    str(path), 0, "no_product", "zip holds no produkt_*.txt file", ""
                )
            for info in products:
                with archive.open(info) as raw:
                    text = io.TextIOWrapper(raw, encoding=ENCODING, newline="")
                    name = f"{path}!{info.filename}"
                    yield from _read_rows(name, text, zones, lenient, quarantine, limits)
        except DwdFormatError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            ValueError,  # e.g. a member offset that seeks before the start of the file
            NotImplementedError,  # unsupported compression method
            RuntimeError,  # encrypted member
        ) as exc:
            raise DwdFormatError(str(path), 0, "bad_zip", str(exc), "") from exc


def demo_files() -> list[Path]:
    """The two real hourly DWD product files shipped in the package (00427 and 00433).

    Their Metadaten_* files lie beside them, so the time-zone rule applies as for any
    product file; see streamnotary/demo_data/PROVENANCE.md for origin and license.
    """
    root = Path(str(resources.files("streamnotary").joinpath("demo_data")))
    return sorted(root.glob("stundenwerte_TU_*_akt/produkt_tu_stunde_*.txt"))
