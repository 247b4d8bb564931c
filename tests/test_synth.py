"""Synthetic DWD history (tasks/synth.py, `streamnotary generate`): the real reader reads it.

The generator's own observations are the expected output of `tasks.dwd.read_observations`
on the files it writes, so the text layout (padding, -999, MEZ periods, 10-minute columns)
is checked by the reader the pipeline uses, not by a second parser.
"""

from __future__ import annotations

from datetime import date
from itertools import pairwise

import pytest

from streamnotary.cli import main
from streamnotary.commands.generate import write_archive, write_history
from tasks.dedup import deduplicate
from tasks.dwd import read_observations
from tasks.synth import (
    HOURLY,
    TEN_MINUTES,
    SynthOptions,
    SynthOptionsError,
    archives,
    station_archives,
    station_ids,
    station_releases,
)

QUIRKY = dict(
    missing_rate=0.01,
    absent_rate=0.005,
    duplicate_rate=0.01,
    late_rate=0.005,
)


@pytest.mark.parametrize("product", [HOURLY, TEN_MINUTES])
@pytest.mark.parametrize("zipped", [True, False])
def test_reader_returns_the_generated_observations(tmp_path, product, zipped):
    # Starts in an MEZ period (before 2001) so the zone conversion is exercised too.
    options = SynthOptions(
        seed=7, stations=2, start=date(2000, 12, 20), days=20, product=product, **QUIRKY
    )
    for station in station_ids(options):
        for archive, (release, rows, _) in zip(
            station_archives(options, station), station_releases(options, station), strict=True
        ):
            path = write_archive(archive, tmp_path, zipped=zipped)
            assert release in archive.name
            assert list(read_observations(path)) == rows


def test_quirks_are_present_and_counted(tmp_path):
    options = SynthOptions(seed=3, stations=3, days=60, **QUIRKY)
    for station in station_ids(options):
        (_, main_rows, q), (_, again, r) = station_releases(options, station)
        assert q["duplicates"] > 0 and q["late"] > 0 and q["absent"] > 0
        assert sum(o.temperature_tenths is None for o in main_rows) > 0
        assert sum(o.humidity_tenths is None for o in main_rows) > 0
        # late rows: written after rows of later hours
        stamps = [o.observed_at for o in main_rows]
        assert sum(b < a for a, b in pairwise(stamps)) > 0
        # quality level changes within the main release; the re-publication raises it
        assert {o.quality_level for o in main_rows} == {1, 3}
        assert {o.quality_level for o in again} == {5}
        assert r["corrected"] > 0
        # deduplication sees exactly the injected duplicates and one conflict per hour
        # that both releases carry
        result = deduplicate(main_rows + again)
        assert result.duplicates == q["duplicates"]
        both = {o.key for o in main_rows} & {o.key for o in again}
        assert result.conflicts == len(both) > 0
        assert len(result.records) == len({o.key for o in main_rows + again})


def test_generation_is_deterministic_and_seeded(tmp_path):
    options = SynthOptions(seed=11, stations=2, days=10)
    first = [(p.name, p.read_bytes()) for p, _ in write_history(options, tmp_path / "a")]
    again = [(p.name, p.read_bytes()) for p, _ in write_history(options, tmp_path / "b")]
    assert first == again
    other = [a.members for a in archives(SynthOptions(seed=12, stations=2, days=10))]
    assert other != [a.members for a in archives(options)]
    assert 427 not in station_ids(SynthOptions(stations=19_000))


def test_zone_switch_hour_is_absent_as_in_dwd_archive():
    options = SynthOptions(start=date(2000, 12, 31), days=2, stations=1, republish_days=0)
    ((_, rows, quirks),) = station_releases(options, station_ids(options)[0])
    assert quirks["zone_switch_gap"] == 1
    assert all(o.observed_at.isoformat() != "2000-12-31T23:00:00+00:00" for o in rows)


@pytest.mark.parametrize(
    "bad",
    [dict(product="daily"), dict(stations=0), dict(days=0), dict(duplicate_rate=1.5)],
)
def test_bad_options_are_named(bad):
    with pytest.raises(SynthOptionsError):
        SynthOptions(**bad)


def test_generate_command_writes_readable_archives(tmp_path, capsys):
    out = tmp_path / "history"
    assert main(["generate", str(out), "--stations", "2", "--days", "3", "--seed", "5"]) == 0
    assert "wrote 4 archive(s)" in capsys.readouterr().out
    zips = sorted(out.glob("stundenwerte_TU_*_hist.zip"))
    assert len(zips) == 2
    assert all(len(list(read_observations(z))) >= 60 for z in zips)
