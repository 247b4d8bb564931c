"""The backfill's reading, comparing and producing order take memory independent of history.

Structural and cheap: the phases of flows/backfill.py that touch every record (stream the
sources into the spill, classify every window, read each source's kept records back in
file order) run in process on a short and a 10x longer generated history, under
tracemalloc; the longer history must not need proportionally more Python memory. Holding
the observations in lists (the design before the spill) makes the peak grow tenfold and
fails this. SQLite's own page cache is outside tracemalloc and capped
(storage/backfill_spill.py `CACHE_KIB`); both sizes exceed one insert batch. The
end-to-end figure, peak RSS of whole `streamnotary backfill` processes at 14 and 365
days, is recorded by tests/test_backfill_resume.py (docs/operations.md "Backfills").
"""

from __future__ import annotations

import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from flows.backfill_sources import anchored_index, classify_spill, dwd_rows
from storage.backfill_spill import Spill
from streamnotary.commands.generate import write_history
from tasks import record
from tasks.synth import SynthOptions
from tests.pipeline_env import PipelineEnv, make_env


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def peak_bytes(env: PipelineEnv, workdir: Path, days: int) -> tuple[int, int]:
    """(tracemalloc peak, records) of spilling, classifying and re-reading `days` days."""
    options = SynthOptions(seed=3, stations=2, start=date(2015, 1, 1), days=days, republish_days=0)
    archives = [p for p, _ in write_history(options, workdir / f"h{days}")]
    settings = env.settings()
    store = env.store()
    spill = Spill(workdir / f"spill{days}.sqlite3")
    tracemalloc.start()
    try:
        for i, path in enumerate(archives):
            spill.add(i, dwd_rows(path, settings, False, [], None, None))
        tally = classify_spill(store, spill, anchored_index(store, env.topic))
        records = sum(1 for i in range(len(archives)) for _ in spill.produce(i))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        spill.close()
    assert tally.counts["new"] == tally.recomputed >= 2 * days  # every window, all new
    return peak, records


def test_peak_memory_does_not_grow_with_the_history(
    env: PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # canonical_bytes caches the record prefix of each timestamp, dropped at 2**17 entries
    # (~25 MiB in production, shared by all stations): bounded, but it would hide the
    # comparison at this test's size, so the test bounds it lower
    monkeypatch.setattr(record, "_TIMESTAMP_CACHE_LIMIT", 1024)
    short, short_records = peak_bytes(env, tmp_path, 60)
    long, long_records = peak_bytes(env, tmp_path, 600)
    assert long_records >= 8 * short_records
    # ~0.5 KiB per observation held would add ~13 MiB here; allow noise only
    print(
        f"tracemalloc peak: {short_records} records {short:,} B, {long_records} records {long:,} B"
    )
    assert long <= short * 1.5 + (1 << 20), (short, long, short_records, long_records)
