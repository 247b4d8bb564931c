"""Hostile DWD files: every one ends as a `DwdFormatError` with a reason, never another
exception, and no limit can be exceeded in memory (tasks/dwd.py `DwdLimits`).

Derived from the real packaged files (tests/dwd_data.py); built in temp dirs.
"""

from __future__ import annotations

import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest

from tasks.dwd import DwdFormatError, DwdLimits, read_observations
from tests.dwd_data import product_file, station_dir

HEADER = "STATIONS_ID;MESS_DATUM;QN_9;TT_TU;RF_TU;eor\n"
GOOD_ROW = "        433;2018092401;    3;   8.6;  87.0;eor\n"


def _product(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "produkt_tu_stunde_20180924_20180924_00433.txt"
    path.write_text(HEADER + "".join(rows), "latin-1")
    return path


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("        43²;2018092401;    3;   8.6;  87.0;eor\n", "bad_station_id"),
        ("        ¹²³;2018092401;    3;   8.6;  87.0;eor\n", "bad_station_id"),
        ("        433;201809240²;    3;   8.6;  87.0;eor\n", "bad_timestamp"),
        ("        433;2018092401;    ²;   8.6;  87.0;eor\n", "bad_quality_level"),
        ("        433;2018092401;    3;   ².6;  87.0;eor\n", "bad_number"),
        ("        433;2018092401;    3;   8.²;  87.0;eor\n", "bad_number"),
        ("        433;2018092401;    3;   8.6\n;  87.0;eor\n", "bad_field_count"),
        ("        433;2018092401;    3;" + "9" * 900 + ";  87.0;eor\n", "bad_number"),
        ("        433;2018092401;" + "3" * 900 + ";   8.6;  87.0;eor\n", "bad_quality_level"),
        ("        433;0000010100;    3;   8.6;  87.0;eor\n", "bad_timestamp"),
    ],
    ids=lambda v: v.strip()[:30] if "eor" in v else v,
)
def test_unicode_digits_and_huge_numbers_are_malformed_rows(
    tmp_path: Path, row: str, reason: str
) -> None:
    """`'²'.isdigit()` is true but `int('²')` raises: lenient mode used to crash on it."""
    path = _product(tmp_path, GOOD_ROW.replace("01;", "00;"), row)
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(path))
    assert info.value.reason == reason and info.value.line_number >= 3
    quarantined: list[DwdFormatError] = []
    kept = list(read_observations(path, lenient=True, quarantine=quarantined.append))
    assert len(kept) == 1 and len(quarantined) >= 1
    assert quarantined[0].reason == reason


def test_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    """A ~160 KB archive that expands to 160 MB is refused from its declared size."""
    bomb = tmp_path / "stundenwerte_TU_00433_akt.zip"
    name = "produkt_tu_stunde_20180924_20200326_00433.txt"
    block = b"0" * (1 << 20)
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open(name, "w") as member,
    ):
        member.write(HEADER.encode())
        for _ in range(160):
            member.write(block)
    assert bomb.stat().st_size < 400_000
    started = time.monotonic()
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(bomb, lenient=True))
    assert info.value.reason == "too_large"
    assert time.monotonic() - started < 2  # nothing was inflated
    small = DwdLimits(max_member_bytes=200 << 20, max_total_bytes=100 << 20)
    with pytest.raises(DwdFormatError, match="expanded archive") as info:
        list(read_observations(bomb, limits=small))
    assert info.value.reason == "too_large"


def test_a_member_that_lies_about_its_size_is_a_bad_zip(tmp_path: Path) -> None:
    """zipfile stops at the declared size and then fails the CRC: still a named error."""
    archive = tmp_path / "liar.zip"
    text = HEADER + GOOD_ROW * 20_000
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("produkt_tu_stunde_20180924_20200326_00433.txt", text)
    data = bytearray(archive.read_bytes())
    small = struct.pack("<I", 1000)
    local = data.index(b"PK\x03\x04")
    data[local + 22 : local + 26] = small  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = small  # central directory: uncompressed size
    archive.write_bytes(bytes(data))
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(archive, lenient=True))
    assert info.value.reason == "bad_zip"


def test_corrupt_archives_are_bad_zips(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(product_file("00433"), product_file("00433").name)
    data = good.read_bytes()
    start = data.index(b"PK\x03\x04") + 30 + len(product_file("00433").name)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(data[:start] + bytes(200) + data[start + 200 :])  # compressed data
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(broken))
    assert info.value.reason == "bad_zip"


def test_metadata_members_and_lines_are_capped(tmp_path: Path) -> None:
    big = tmp_path / "bigmeta.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(product_file("00433"), product_file("00433").name)
        zf.writestr("Metadaten_Parameter_tu_stunde_00433.txt", "x" * (2 << 20))
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(big, lenient=True))
    assert info.value.reason == "too_large"

    work = tmp_path / "dir"
    shutil.copytree(station_dir("00433"), work)
    meta = work / "Metadaten_Parameter_tu_stunde_00433.txt"
    meta.chmod(0o644)
    text = meta.read_text("latin-1")
    meta.write_text(text + "y" * 5000 + "\n", "latin-1")
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(work / product_file("00433").name))
    long_line = len(text.splitlines()) + 1
    assert (info.value.reason, info.value.line_number) == ("line_too_long", long_line)


def test_impossible_metadata_date_is_named(tmp_path: Path) -> None:
    work = tmp_path / "dir"
    shutil.copytree(station_dir("00433"), work)
    meta = work / "Metadaten_Parameter_tu_stunde_00433.txt"
    meta.chmod(0o644)
    lines = meta.read_text("latin-1").splitlines(keepends=True)
    lines[1] = lines[1].replace(lines[1].split(";")[1], "20191332", 1)
    meta.write_text("".join(lines), "latin-1")
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(work / product_file("00433").name))
    assert (info.value.reason, info.value.line_number) == ("bad_metadata_date", 2)


def test_a_line_without_end_is_cut_not_loaded(tmp_path: Path) -> None:
    path = _product(tmp_path, GOOD_ROW, "4" * (20 << 20), "\n", GOOD_ROW.replace("01;", "02;"))
    quarantined: list[DwdFormatError] = []
    kept = list(read_observations(path, lenient=True, quarantine=quarantined.append))
    assert len(kept) == 2
    assert [(q.reason, q.line_number, len(q.raw)) for q in quarantined] == [
        ("line_too_long", 3, 200)
    ]
    with pytest.raises(DwdFormatError, match="line_too_long"):
        list(read_observations(path))


def test_oversized_plain_file_is_refused(tmp_path: Path) -> None:
    path = _product(tmp_path, GOOD_ROW * 100)
    with pytest.raises(DwdFormatError) as info:
        list(read_observations(path, limits=DwdLimits(max_member_bytes=1000)))
    assert info.value.reason == "too_large"
