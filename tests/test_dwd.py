"""DWD product reader (tasks/dwd.py) on the real DWD files and fixtures derived from them.

The real files are the packaged copies of the shared data set (tests/dwd_data.py).
Variants (zip archives, 10-minute layout, MEZ metadata, broken lines) are built in temp
dirs from them; the real files themselves are only read.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.dwd import DwdFormatError, demo_files, read_observations
from tests.dwd_data import dwd_root, product_file

DWD = dwd_root()
PRODUCTS = [product_file("00427"), product_file("00433")]


def test_both_shared_files_yield_13200_observations() -> None:
    assert len(PRODUCTS) == 2
    for path in PRODUCTS:
        obs = list(read_observations(path))
        assert len(obs) == 13_200
        station = path.stem[-5:]
        assert {o.station_id for o in obs} == {station}
        assert obs[0].observed_at == datetime(2018, 9, 24, 0, tzinfo=UTC)
        assert obs[-1].observed_at == datetime(2020, 3, 26, 23, tzinfo=UTC)
        assert len({o.observed_at for o in obs}) == 13_200


def test_values_missing_markers_and_quality_of_433() -> None:
    obs = list(read_observations(product_file("00433")))
    first = obs[0]
    assert (first.temperature_tenths, first.humidity_tenths, first.quality_level) == (87, 890, 3)
    assert str(first.temperature_c) == "8.7" and str(first.relative_humidity_pct) == "89"
    missing_t = [o.observed_at for o in obs if o.temperature_tenths is None]
    assert len(missing_t) == 36
    assert missing_t[0] == datetime(2019, 9, 7, 17, tzinfo=UTC)
    assert missing_t[-1] == datetime(2019, 9, 9, 4, tzinfo=UTC)
    assert sum(o.humidity_tenths is None for o in obs) == 239
    switch = datetime(2020, 1, 14, tzinfo=UTC)
    assert all(o.quality_level == (3 if o.observed_at < switch else 1) for o in obs)


def test_demo_files_are_the_recorded_byte_exact_copies() -> None:
    """The packaged files hash to the SHA-256 that PROVENANCE.md records for the originals."""
    assert demo_files() == PRODUCTS
    recorded = re.findall(
        r"^    ([0-9a-f]{64})  (\S+)$", (DWD / "PROVENANCE.md").read_text(), re.MULTILINE
    )
    assert len(recorded) == 4
    for digest, name in recorded:
        assert hashlib.sha256((DWD / name).read_bytes()).hexdigest() == digest, name
    for product in PRODUCTS:
        station = product.stem[-5:]
        assert (product.parent / f"Metadaten_Parameter_tu_stunde_{station}.txt").is_file()


def _zip(tmp: Path, source_dir: Path, name: str, *, metadata: dict[str, str] | None = None) -> Path:
    archive = tmp / name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(source_dir.iterdir()):
            if metadata is not None and f.name.startswith("Metadaten_Parameter"):
                continue
            zf.write(f, f.name)
        for member, text in (metadata or {}).items():
            zf.writestr(member, text.encode("latin-1"))
    return archive


def test_zip_archive_gives_same_observations(tmp_path: Path) -> None:
    src = DWD / "stundenwerte_TU_00427_akt"
    archive = _zip(tmp_path, src, "stundenwerte_TU_00427_akt.zip")
    plain = list(read_observations(product_file("00427")))
    assert list(read_observations(archive)) == plain


MEZ_METADATA = (
    "Stations_ID;Von_Datum;Bis_Datum;Stationsname;Parameter;Parameterbeschreibung;Einheit;"
    "Datenquelle (Strukturversion=SV);Zusatz-Info;Besonderheiten;Literaturhinweis;eor;\n"
    "427;18000101;20190101;Berlin-Schönefeld;TT_TU;Lufttemperatur;°C;x;Stundenwerte in MEZ;;;eor;\n"
    "427;18000101;20190101;Berlin-Schönefeld;RF_TU;relative Feuchte;%;;Stundenwerte in MEZ;;;eor;\n"
    "427;20190102;20200326;Berlin-Schönefeld;TT_TU;Lufttemperatur;°C;x;Stundenwerte in UTC;;;eor;\n"
    "427;20190102;20200326;Berlin-Schönefeld;RF_TU;relative Feuchte;%;;Stundenwerte in UTC;;;eor;\n"
    "Legende: FT  = Folgetag; GZ = Gesetzliche Zeit\n"
)


def test_mez_periods_are_converted_to_utc(tmp_path: Path) -> None:
    src = DWD / "stundenwerte_TU_00427_akt"
    archive = _zip(
        tmp_path, src, "mez.zip", metadata={"Metadaten_Parameter_tu_stunde_00427.txt": MEZ_METADATA}
    )
    plain = list(read_observations(product_file("00427")))
    shifted = list(read_observations(archive))
    assert len(shifted) == len(plain)
    cut = datetime(2019, 1, 2, tzinfo=UTC)
    for a, b in zip(plain, shifted, strict=True):
        expected = a.observed_at if a.observed_at >= cut else a.observed_at - timedelta(hours=1)
        assert b.observed_at == expected
        assert (b.temperature_tenths, b.humidity_tenths) == (
            a.temperature_tenths,
            a.humidity_tenths,
        )
    # the MEZ hour 2019-01-01 00 is UTC 2018-12-31 23, and 2019-01-01 23 UTC is a gap
    stamps = {o.observed_at for o in shifted}
    assert datetime(2018, 12, 31, 23, tzinfo=UTC) in stamps
    assert datetime(2019, 1, 1, 23, tzinfo=UTC) not in stamps


def test_period_without_zone_statement_is_rejected(tmp_path: Path) -> None:
    meta = MEZ_METADATA.replace("20190102;20200326", "20190110;20200326")
    src = DWD / "stundenwerte_TU_00427_akt"
    archive = _zip(
        tmp_path, src, "gap.zip", metadata={"Metadaten_Parameter_tu_stunde_00427.txt": meta}
    )
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(archive))
    assert info.value.reason == "time_zone_unknown"
    assert "produkt_tu_stunde_20180924_20200326_00427.txt" in str(info.value)
    quarantined: list[DwdFormatError] = []
    kept = list(read_observations(archive, lenient=True, quarantine=quarantined.append))
    assert len(quarantined) == 8 * 24 and len(kept) == 13_200 - 8 * 24
    assert {q.reason for q in quarantined} == {"time_zone_unknown"}


def _copy_with(tmp_path: Path, edit: dict[int, str]) -> Path:
    """Copy 433's product file (without metadata: UTC) replacing 1-based lines."""
    src = product_file("00433")
    lines = src.read_text("latin-1").splitlines(keepends=True)
    for number, text in edit.items():
        lines[number - 1] = text
    out = tmp_path / src.name
    out.write_text("".join(lines), "latin-1")
    return out


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("        433;2018092401;    3;   8.6;eor\n", "bad_field_count"),
        ("        433;2018092401;    3;   8.6;  87.0;xxx\n", "missing_eor"),
        ("        433;20180924;    3;   8.6;  87.0;eor\n", "bad_timestamp"),
        ("        433;2018093201;    3;   8.6;  87.0;eor\n", "bad_timestamp"),
        ("        433;2018092401;    3;   8,6;  87.0;eor\n", "bad_number"),
        ("        433;2018092401;    3;  8.65;  87.0;eor\n", "bad_number"),
        ("        433;2018092401;    3;  99.0;  87.0;eor\n", "out_of_range"),
        ("        433;2018092401;    x;   8.6;  87.0;eor\n", "bad_quality_level"),
        ("        433;2018092401;    0;   8.6;  87.0;eor\n", "bad_quality_level"),
        ("     4a33;2018092401;    3;   8.6;  87.0;eor\n", "bad_station_id"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = _copy_with(tmp_path, {3: line})
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(path))
    err = info.value
    assert (err.reason, err.line_number, err.file) == (reason, 3, str(path))
    assert f"{path}:3:" in str(err)
    quarantined: list[DwdFormatError] = []
    kept = list(read_observations(path, lenient=True, quarantine=quarantined.append))
    assert len(kept) == 13_199
    assert [(q.line_number, q.reason, q.raw) for q in quarantined] == [(3, reason, line.rstrip())]


def test_padding_decimals_and_missing_variants(tmp_path: Path) -> None:
    path = _copy_with(
        tmp_path,
        {
            2: "433;2018092400;3;8.7;89;eor\n",
            3: "  433 ; 2018092401 ; 3 ; -999 ; -999.0 ; eor\r\n",
            4: "433;2018092402;3;-0.5;100.0;eor;\n",
        },
    )
    obs = list(read_observations(path))
    assert len(obs) == 13_200
    assert (obs[0].temperature_tenths, obs[0].humidity_tenths) == (87, 890)
    assert (obs[1].temperature_tenths, obs[1].humidity_tenths) == (None, None)
    assert (obs[2].temperature_tenths, obs[2].humidity_tenths) == (-5, 1000)


def test_bad_header_is_fatal_even_when_lenient(tmp_path: Path) -> None:
    path = _copy_with(tmp_path, {1: "STATIONS_ID;MESS_DATUM;TT_TU;eor\n"})
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(path, lenient=True, quarantine=lambda e: None))
    assert (info.value.reason, info.value.line_number) == ("bad_header", 1)


def _ten_minute_text() -> str:
    """A 10-minute product derived from 433's hourly rows (6 rows per hour, PP/TM5/TD filled)."""
    src = product_file("00433")
    rows = ["STATIONS_ID;MESS_DATUM;  QN;PP_10;TT_10;TM5_10;RF_10;TD_10;eor"]
    for line in src.read_text("latin-1").splitlines()[1:49]:
        sid, stamp, qn, tt, rf, _ = (f.strip() for f in line.split(";"))
        for minute in range(0, 60, 10):
            rows.append(
                f"{sid:>11};{stamp}{minute:02d};{qn:>4};  -999;{tt:>5};  -999;{rf:>5};   1.0;eor"
            )
    return "\n".join(rows) + "\n"


def test_ten_minute_product_plain_and_zipped(tmp_path: Path) -> None:
    text = _ten_minute_text()
    plain = tmp_path / "plain" / "produkt_zehn_min_tu_20180924_20180925_00433.txt"
    plain.parent.mkdir()
    plain.write_text(text, "latin-1")
    obs = list(read_observations(plain))
    assert len(obs) == 48 * 6
    assert obs[1].observed_at == datetime(2018, 9, 24, 0, 10, tzinfo=UTC)
    assert (obs[1].temperature_tenths, obs[1].humidity_tenths, obs[1].quality_level) == (87, 890, 3)
    archive = tmp_path / "10minutenwerte_TU_00433_akt.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(plain.name, text)
        meta = DWD / "stundenwerte_TU_00433_akt" / "Metadaten_Geographie_00433.txt"
        zf.write(meta, meta.name)
    assert list(read_observations(archive)) == obs


def test_plain_file_uses_metadata_beside_it(tmp_path: Path) -> None:
    src = DWD / "stundenwerte_TU_00427_akt"
    work = tmp_path / "stundenwerte_TU_00427_akt"
    shutil.copytree(src, work)
    meta = work / "Metadaten_Parameter_tu_stunde_00427.txt"
    meta.chmod(0o644)
    meta.write_text(MEZ_METADATA, "latin-1")
    first = next(read_observations(work / product_file("00427").name))
    assert first.observed_at == datetime(2018, 9, 23, 23, tzinfo=UTC)
