"""Every anchor run reports the process's memory (streamnotary/process_memory.py).

Which run of a long catch-up set the process's peak RSS is what tells a spike from growth
with the history; the figures are the kernel's, read while the process runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from flows.catch_up import anchor_until_caught_up
from streamnotary import process_memory
from streamnotary.commands.pipeline import emit_runs
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

REPO = Path(__file__).resolve().parents[1]

MIB = 2**20
HELD_MIB = 160  # well above the noise of a run's own allocations on the demo data
# Linux counts RSS per thread and CPU in batches: two reads may differ by a few pages
SLACK = 2 * MIB


def touched(mib: int) -> bytearray:
    """`mib` MiB that are really resident (every page written)."""
    return bytearray(b"\x01") * (mib * MIB)


def test_the_peak_follows_an_allocation_and_outlives_it() -> None:
    before = process_memory.rss_bytes()
    assert before is not None and before > 0
    block = touched(HELD_MIB)
    during = process_memory.rss_bytes()
    assert during is not None and during >= before + (HELD_MIB - 8) * MIB
    peak = process_memory.peak_rss_bytes()
    assert peak >= during
    del block  # a block this large is its own mapping: freed at once
    after = process_memory.rss_bytes()
    assert after is not None and after <= during - (HELD_MIB - 8) * MIB
    # the high-water mark stays (up to the kernel's batched RSS counting, well under a MiB)
    assert process_memory.peak_rss_bytes() >= peak - SLACK


def test_describe_reads_as_mib() -> None:
    memory = {"rss_start_bytes": 100 * MIB, "rss_end_bytes": 300 * MIB, "peak_rss_bytes": 2**30}
    assert process_memory.describe(memory) == "RSS 300 MiB, process peak 1,024 MiB"
    assert process_memory.describe(None) == ""


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


# A fresh process, as a run's threads use glibc: a freed 16 MiB block raises the mmap
# threshold, then 50 blocks of 4 MiB, each followed by a small block that stays, are
# taken and freed (a run's transient S3 bodies and fetch buffers among its long-lived data).
FRAGMENTING = textwrap.dedent(
    """
    import json, sys, threading
    from streamnotary import process_memory

    fixed = process_memory.fix_mmap_threshold() if sys.argv[1] == "fix" else None
    kept, held = [], []

    def run():
        block = b"\\x01" * (16 << 20)
        del block
        blocks = []
        for _ in range(50):
            blocks.append(b"\\x02" * (4 << 20))
            kept.append(b"\\x03" * 2000)
        held.append(process_memory.rss_bytes())
        blocks.clear()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(json.dumps({"fixed": fixed, "held": held[0], "after": process_memory.rss_bytes()}))
    """
)


def fragmenting(mode: str, **env: str) -> dict[str, Any]:
    # without glibc's knobs, which a test process may have: Dask's nanny sets
    # MALLOC_TRIM_THRESHOLD_ in its parent's environment, and it turns the dynamic threshold off
    knobs = {*process_memory.OPERATOR_KNOBS, "GLIBC_TUNABLES"}
    clean = {k: v for k, v in os.environ.items() if k not in knobs}
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTING, mode],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_freed_large_blocks_stay_resident_unless_the_threshold_is_fixed() -> None:
    """The defence and what it defends against, side by side in fresh processes."""
    left = fragmenting("leave")
    fixed = fragmenting("fix")
    assert left["fixed"] is None
    assert fixed["fixed"] == process_memory.MMAP_THRESHOLD_BYTES
    for figures in (left, fixed):
        assert figures["held"] >= 190 * MIB  # the 50 blocks were really resident
    # glibc's dynamic threshold put the blocks on the thread's heap, between kept ones
    assert left["after"] >= left["held"] - 60 * MIB, left
    # fixed at 1 MiB, each block was its own mapping and left with its `free`
    assert fixed["after"] <= fixed["held"] - 160 * MIB, fixed


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)},
        {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={4 << 20}"},
        # glibc's static 128 KiB threshold then stays: the blocks are mapped as well
        {"MALLOC_TRIM_THRESHOLD_": "65536"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"},
    ],
)
def test_the_operators_own_threshold_is_left_alone(env: dict[str, str]) -> None:
    figures = fragmenting("fix", **env)
    assert figures["fixed"] is None
    # glibc took the operator's setting: the blocks of 4 MiB (plus a header) were mapped
    assert figures["after"] <= figures["held"] - 160 * MIB, figures


def test_fixing_twice_keeps_the_first_threshold() -> None:
    figures = subprocess.run(
        [
            sys.executable,
            "-c",
            "from streamnotary import process_memory as m;"
            "print(m.fix_mmap_threshold(), m.fix_mmap_threshold(4 << 20))",
        ],
        env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert figures == [str(process_memory.MMAP_THRESHOLD_BYTES)] * 2


@pytest.mark.usefixtures("prefect_harness")
def test_each_run_of_a_catch_up_reports_what_the_process_held(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Memory taken between two runs shows as the second run's start; peaks never fall."""
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "120")
    env.produce_observations(demo_observations(days=6))
    kept: list[bytearray] = []

    def between(run: dict[str, Any]) -> None:
        if not kept:
            kept.append(touched(HELD_MIB))

    with env.active():
        runs = anchor_until_caught_up(after_run=between)
    assert len(runs) >= 3
    memory = [r["memory"] for r in runs]
    for m in memory:
        assert set(m) == {
            "rss_start_bytes",
            "rss_end_bytes",
            "peak_rss_bytes",
            "mmap_threshold_bytes",
        }
        # what this process fixed (1 MiB; None only where the environment sets glibc's knob)
        assert m["mmap_threshold_bytes"] == process_memory.fix_mmap_threshold()
        assert m["peak_rss_bytes"] >= max(m["rss_start_bytes"], m["rss_end_bytes"]) > 0
    first, second = memory[0], memory[1]
    # taken at the run's start (after the caller's work), not when the summary is read
    assert second["rss_start_bytes"] >= first["rss_end_bytes"] + (HELD_MIB - 16) * MIB
    peaks = [m["peak_rss_bytes"] for m in memory]
    # one process: its peak so far never falls (in a long-lived process such as a test
    # session it may already lie above all this, so only the run's own figures bound it)
    assert all(later >= earlier - SLACK for earlier, later in pairwise(peaks))
    capsys.readouterr()
    assert emit_runs(runs, as_json=False) == 0
    assert "process peak" in capsys.readouterr().out
