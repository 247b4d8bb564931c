"""Seeded synthetic DWD history: many stations x years in DWD's exact file format.

Tests and benchmarks need far more history than the two real station files, with the
quirks the real archive has, so that backfills, revisions and deduplication are exercised
at realistic scale. This module is pure (no I/O): it yields archives as
`SyntheticArchive` values (zip base name, member files as bytes, the counts of every quirk
injected), and the `streamnotary generate` command writes them as DWD zip archives that
`tasks.dwd.read_observations` reads like the real ones.

Format, as DWD writes it (see ../shared/data/dwd/README.md and tasks/dwd.py):

* hourly ``produkt_tu_stunde_<from>_<to>_<id>.txt`` rows
  ``        433;2019052017;    3;  18.0;-999;eor`` (station right-aligned in 11 columns,
  quality level in 5, values ``%6.1f``, the missing value ``-999`` unpadded);
* 10-minute ``produkt_zehn_min_tu_<from>_<to>_<id>.txt`` with
  ``STATIONS_ID;MESS_DATUM;  QN;PP_10;TT_10;TM5_10;RF_10;TD_10;eor``;
* ``Metadaten_Parameter_*`` beside the product says per period whether MESS_DATUM is in
  MEZ (UTC+1) or UTC; rows before `SynthOptions.utc_from` are written in MEZ.

Quirks, each counted in `SyntheticArchive.quirks`: runs of ``-999`` (sensor outages),
absent rows (station outages), quality-level changes (3 during quality-controlled
history, 1 for the last weeks, as in the real "recent" files), exact duplicate rows,
late rows (written at the end of the file, out of time order), and a re-publication
archive (``..._akt``) of the last weeks with a higher quality level and some corrected
values, so that the same station-hour arrives twice with different content (conflicts).

Every station draws from its own `random.Random` seeded by (seed, station), so a station's
files do not depend on how many other stations are generated, and generation can run in
parallel.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from tasks.record import Observation

MEZ = timedelta(hours=1)
DEFAULT_REPUBLISH_DAYS = 30
EXCLUDED_STATIONS = frozenset({427, 433})  # the real demo stations keep their own ids

HOURLY = "hourly"
TEN_MINUTES = "10_minutes"
_STEP = {HOURLY: timedelta(hours=1), TEN_MINUTES: timedelta(minutes=10)}
_HEADER = {
    HOURLY: "STATIONS_ID;MESS_DATUM;QN_9;TT_TU;RF_TU;eor",
    TEN_MINUTES: "STATIONS_ID;MESS_DATUM;  QN;PP_10;TT_10;TM5_10;RF_10;TD_10;eor",
}
_PARAMETERS = {HOURLY: ("RF_TU", "TT_TU"), TEN_MINUTES: ("RF_10", "TT_10")}
_PERIOD_SOURCE = "Daten aus synthetischer Erzeugung (streamnotary tasks/synth.py)"


class SynthOptionsError(ValueError):
    """Generator options that describe no valid history."""


@dataclass(frozen=True, slots=True)
class SynthOptions:
    """What to generate. Rates are per row; run lengths are in rows."""

    seed: int = 0
    stations: int = 10
    start: date = date(2019, 1, 1)
    days: int = 365
    product: str = HOURLY
    utc_from: date = date(2001, 1, 1)  # rows before this date are written in MEZ
    missing_rate: float = 0.002  # a -999 run starts at this rate (per value)
    missing_run: int = 12
    absent_rate: float = 0.0005  # a run of absent rows starts at this rate
    absent_run: int = 6
    duplicate_rate: float = 0.001
    late_rate: float = 0.0005
    republish_days: int = (
        DEFAULT_REPUBLISH_DAYS  # the _akt re-publication covers the last N days (0: none)
    )
    correction_rate: float = 0.05  # share of re-published rows with a corrected value
    qn_change_days: int = 45  # quality level 1 for the last N days of the main release

    def __post_init__(self) -> None:
        if self.product not in _STEP:
            raise SynthOptionsError(f"product must be {HOURLY!r} or {TEN_MINUTES!r}")
        if self.stations < 1 or self.stations > 99_999 - len(EXCLUDED_STATIONS):
            raise SynthOptionsError("stations must be 1..99997")
        if self.days < 1:
            raise SynthOptionsError("days must be at least 1")
        for name in ("missing_rate", "absent_rate", "duplicate_rate", "late_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise SynthOptionsError(f"{name} must be in [0, 1)")

    @property
    def rows_per_station(self) -> int:
        """Time steps per station (rows before quirks)."""
        return int(timedelta(days=self.days) / _STEP[self.product])


@dataclass
class SyntheticArchive:
    """One DWD zip archive: its base name, member files and the quirks it carries."""

    name: str
    station: int
    members: dict[str, bytes]
    quirks: dict[str, int] = field(default_factory=dict)


def station_ids(options: SynthOptions) -> list[int]:
    """The station numbers: distinct, drawn from the seed, never a real demo station."""
    rng = random.Random(f"stations:{options.seed}")
    pool = [n for n in range(1, 20_000) if n not in EXCLUDED_STATIONS]
    if options.stations > len(pool):
        pool = [n for n in range(1, 100_000) if n not in EXCLUDED_STATIONS]
    return sorted(rng.sample(pool, options.stations))


def archives(options: SynthOptions) -> Iterator[SyntheticArchive]:
    """Every archive of the history, station by station (main release, then re-publication)."""
    for station in station_ids(options):
        yield from station_archives(options, station)


def station_archives(options: SynthOptions, station: int) -> Iterator[SyntheticArchive]:
    """The main release of `station` and, if configured, its re-publication."""
    for release, rows, quirks in station_releases(options, station):
        yield _archive(options, station, release, rows, quirks)


def station_releases(
    options: SynthOptions, station: int
) -> list[tuple[str, list[Observation], dict[str, int]]]:
    """(release, observations in file order, quirk counts) of each archive of `station`.

    The observations are in UTC, exactly what `read_observations` must return for the
    archive (tests/test_synth.py holds the format writer to that).
    """
    rng = random.Random(f"{options.seed}:{station}")
    series = list(_series(options, station, rng))
    truth = [o for o in series if not _lost_at_zone_switch(options, o.observed_at)]
    main, quirks = _main_rows(options, truth, rng)
    quirks["zone_switch_gap"] = len(series) - len(truth)
    out = [("hist", main, quirks)]
    if options.republish_days:
        again, quirks = _republished(options, truth, rng)
        if again:
            out.append(("akt", again, quirks))
    return out


# --- series -----------------------------------------------------------------------------


def _series(options: SynthOptions, station: int, rng: random.Random) -> Iterator[Observation]:
    """The true observations (UTC), before any quirk: seasonal + diurnal cycle + AR(1) noise."""
    step = _STEP[options.product]
    start = datetime(options.start.year, options.start.month, options.start.day, tzinfo=UTC)
    sid = f"{station:05d}"
    mean = rng.uniform(60, 110)  # annual mean 6..11 °C
    season = rng.uniform(80, 110)
    diurnal = rng.uniform(25, 60)
    noise = 0.0
    hours_per_step = step / timedelta(hours=1)
    qn_change = start + timedelta(days=options.days - options.qn_change_days)
    missing_t = missing_h = 0
    first_day = start.timetuple().tm_yday
    for i in range(options.rows_per_station):
        t = start + i * step
        elapsed = i * hours_per_step
        day = first_day + elapsed / 24
        hour = elapsed % 24
        noise = 0.97 * noise + rng.gauss(0, 12 * math.sqrt(hours_per_step))
        temp = (
            mean
            - season * math.cos(2 * math.pi * (day - 15) / 365.25)
            - diurnal * math.cos(2 * math.pi * (hour - 3) / 24)
            + noise
        )
        tenths = max(-800, min(650, round(temp)))
        hum = max(0, min(1000, round(10 * (78 - 0.15 * (temp - mean) - 0.8 * noise / 10))))
        if missing_t == 0 and rng.random() < options.missing_rate:
            missing_t = rng.randint(1, options.missing_run)
        if missing_h == 0 and rng.random() < options.missing_rate:
            missing_h = rng.randint(1, 2 * options.missing_run)
        quality = 1 if t >= qn_change else 3
        yield Observation(
            sid,
            t,
            None if missing_t else tenths,
            None if missing_h else hum,
            quality,
        )
        missing_t = max(0, missing_t - 1)
        missing_h = max(0, missing_h - 1)


def _main_rows(
    options: SynthOptions, truth: list[Observation], rng: random.Random
) -> tuple[list[Observation], dict[str, int]]:
    """File order of the main release: outages removed, duplicates and late rows placed."""
    rows: list[Observation] = []
    late: list[Observation] = []
    absent = 0
    quirks = {"absent": 0, "duplicates": 0, "late": 0}
    for obs in truth:
        if absent == 0 and rng.random() < options.absent_rate:
            absent = rng.randint(1, options.absent_run)
        if absent:
            absent -= 1
            quirks["absent"] += 1
            continue
        if rng.random() < options.late_rate:
            late.append(obs)
            quirks["late"] += 1
            continue
        rows.append(obs)
        if rng.random() < options.duplicate_rate:
            rows.append(obs)
            quirks["duplicates"] += 1
    rows += late
    return rows, quirks


def _republished(
    options: SynthOptions, truth: list[Observation], rng: random.Random
) -> tuple[list[Observation], dict[str, int]]:
    """The last `republish_days`, quality-controlled again: level 5, some values corrected."""
    step = _STEP[options.product]
    n = min(len(truth), int(timedelta(days=options.republish_days) / step))
    rows = []
    corrected = 0
    for obs in truth[len(truth) - n :]:
        t = obs.temperature_tenths
        if t is not None and rng.random() < options.correction_rate:
            t = max(-800, min(650, t + rng.choice((-3, -2, -1, 1, 2, 3))))
            corrected += 1
        rows.append(Observation(obs.station_id, obs.observed_at, t, obs.humidity_tenths, 5))
    return rows, {"republished": len(rows), "corrected": corrected}


# --- text ---------------------------------------------------------------------------------


def _format_value(tenths: int) -> str:
    sign = "-" if tenths < 0 else ""
    return f"{sign}{abs(tenths) // 10}.{abs(tenths) % 10}".rjust(6)


# DWD's text of every value the generator can write (tenths -800..10599), and -999 for None.
_VALUE_TEXT: dict[int | None, str] = {v: _format_value(v) for v in range(-800, 10_600)}
_VALUE_TEXT[None] = "-999"
_value = _VALUE_TEXT.__getitem__


def _local(options: SynthOptions, t: datetime) -> datetime:
    """MESS_DATUM as written: MEZ (UTC+1) before `utc_from`, else UTC."""
    local = t + MEZ
    return local if local.date() < options.utc_from else t


def _lost_at_zone_switch(options: SynthOptions, t: datetime) -> bool:
    """The last UTC hour before the MEZ -> UTC switch has no row, as in DWD's archive.

    Its MEZ text would carry the first date of the UTC period (and read as UTC), and its
    UTC text would carry the last date of the MEZ period (and read as MEZ): neither is it.
    """
    return t.date() < options.utc_from <= (t + MEZ).date()


def product_text(options: SynthOptions, rows: list[Observation]) -> bytes:
    """The produkt_* file of `rows` in DWD's layout (latin-1, `;`, padded, `eor`)."""
    lines = [_HEADER[options.product]]
    hourly = options.product == HOURLY
    days: dict[date, str] = {}  # strftime per row would be most of the work
    for obs in rows:
        local = _local(options, obs.observed_at)
        day = days.get(local.date())
        if day is None:
            day = days[local.date()] = f"{local:%Y%m%d}"
        station = str(int(obs.station_id)).rjust(11)
        t, h = _value(obs.temperature_tenths), _value(obs.humidity_tenths)
        if hourly:
            lines.append(f"{station};{day}{local.hour:02d};{obs.quality_level:>5};{t};{h};eor")
            continue
        tt = obs.temperature_tenths
        pp = "-999" if tt is None else _value(10130 - tt // 2)
        tm5 = "-999" if tt is None else _value(max(-800, tt - 10))
        td = (
            "-999"
            if tt is None or obs.humidity_tenths is None
            else _value(max(-800, tt - (1000 - obs.humidity_tenths) // 5))
        )
        lines.append(
            f"{station};{day}{local.hour:02d}{local.minute:02d};{obs.quality_level:>5};{pp};{t};{tm5};{h};{td};eor"
        )
    return ("\n".join(lines) + "\n").encode("latin-1")


def parameter_metadata(options: SynthOptions, station: int, first: date, last: date) -> bytes:
    """Metadaten_Parameter_*: MEZ before `utc_from`, UTC from then on, per parameter."""
    header = (
        "Stations_ID;Von_Datum;Bis_Datum;Stationsname;Parameter;Parameterbeschreibung;"
        "Einheit;Datenquelle (Strukturversion=SV);Zusatz-Info;Besonderheiten;"
        "Literaturhinweis;eor;"
    )
    name = f"Synthetik-{station:05d}"
    lines = [header]
    for param in _PARAMETERS[options.product]:
        periods = []
        if first < options.utc_from:  # local (MEZ) dates run up to one day past the UTC ones
            bis = min(options.utc_from - timedelta(days=1), last + timedelta(days=1))
            periods.append((first, bis, "MEZ"))
        if last >= options.utc_from:
            periods.append((max(first, options.utc_from), last, "UTC"))
        for von, bis, zone in periods:
            lines.append(
                f"{station};{von:%Y%m%d};{bis:%Y%m%d};{name};{param};;;{_PERIOD_SOURCE};"
                f"Werte in {zone};;;eor;"
            )
    lines += ["Legende: FT  = Folgetag; GZ = Gesetzliche Zeit", "generiert: streamnotary"]
    return ("\n".join(lines) + "\n").encode("latin-1")


def _archive(
    options: SynthOptions,
    station: int,
    release: str,
    rows: list[Observation],
    quirks: dict[str, int],
) -> SyntheticArchive:
    first = min(r.observed_at for r in rows).date()
    last = max(r.observed_at for r in rows).date()
    span = f"{first:%Y%m%d}_{last:%Y%m%d}"
    sid = f"{station:05d}"
    if options.product == HOURLY:
        name = f"stundenwerte_TU_{sid}_{span}_{release}"
        product = f"produkt_tu_stunde_{span}_{sid}.txt"
        meta = f"Metadaten_Parameter_tu_stunde_{sid}.txt"
    else:
        name = f"10minutenwerte_TU_{sid}_{span}_{release}"
        product = f"produkt_zehn_min_tu_{span}_{sid}.txt"
        meta = f"Metadaten_Parameter_zehn_min_tu_{sid}.txt"
    text = product_text(options, rows)
    quirks = {
        **quirks,
        "rows": len(rows),
        "missing_temperature": sum(r.temperature_tenths is None for r in rows),
        "missing_humidity": sum(r.humidity_tenths is None for r in rows),
    }
    members = {product: text, meta: parameter_metadata(options, station, first, last)}
    return SyntheticArchive(name, station, members, quirks)
