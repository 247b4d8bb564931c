"""Deterministic Parquet payloads (tasks/payload.py)."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import payload
from tasks.dedup import deduplicate
from tasks.dwd import read_observations
from tasks.merkle import merkle_root
from tasks.payload import (
    PayloadError,
    decode_payload,
    encode_payload,
    encode_payloads,
    payload_leaves,
)
from tasks.record import canonical_bytes
from tests.dwd_data import product_file
from tests.test_record import observations

REPO = Path(__file__).resolve().parent.parent

_SCRIPT = """
import hashlib, sys
from tasks.dedup import deduplicate
from tasks.dwd import read_observations
from tasks.payload import encode_payload
obs = list(read_observations(sys.argv[1]))[:2000]
print(hashlib.sha256(encode_payload(deduplicate(obs[::-1]).records)).hexdigest())
"""


@pytest.fixture(scope="module")
def records() -> list:
    return list(read_observations(product_file("00433")))[:2000]


def test_same_bytes_for_any_input_order_and_across_processes(records: list) -> None:
    reference = encode_payload(deduplicate(records).records)
    shuffled = records + records[:100]
    random.Random(7).shuffle(shuffled)
    assert encode_payload(deduplicate(shuffled).records) == reference
    other_process = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(product_file("00433"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert other_process == hashlib.sha256(reference).hexdigest()


def test_decode_reproduces_records_leaves_and_root(records: list) -> None:
    d = deduplicate(records)
    data = encode_payload(d.records)
    assert decode_payload(data) == d.records
    leaves = payload_leaves(data)
    assert leaves == d.leaves == [canonical_bytes(r) for r in d.records]
    assert merkle_root(leaves) == merkle_root(d.leaves)
    assert sum(r.temperature_tenths is None for r in decode_payload(data)) == sum(
        r.temperature_tenths is None for r in d.records
    )


def test_empty_payload_round_trips() -> None:
    assert decode_payload(encode_payload([])) == []


def test_garbage_and_tampered_payloads_are_rejected(records: list) -> None:
    with pytest.raises(PayloadError):
        decode_payload(b"not parquet")
    data = bytearray(encode_payload(deduplicate(records).records))
    data[len(data) // 2] ^= 0xFF
    try:
        tampered = payload_leaves(bytes(data))
    except PayloadError:
        return
    assert merkle_root(tampered) != merkle_root(deduplicate(records).leaves)


def test_payloads_of_many_windows_are_each_windows_own_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`encode_payloads` writes each window from a slice of one shared table: the bytes
    must be those of `encode_payload` on the window alone (anchored digests depend on it),
    across batch boundaries and for empty windows, on real DWD rows with their gaps."""
    records = list(read_observations(product_file("00433")))  # 13,200 rows, 550 days
    days: dict = {}
    for r in records:
        days.setdefault(r.observed_at.date(), []).append(r)
    windows = [deduplicate(day).records for day in days.values()]
    windows[3:3] = [[], []]
    expected = [encode_payload(w) for w in windows]
    assert encode_payloads(windows) == expected
    monkeypatch.setattr(payload, "PAYLOAD_BATCH_WINDOWS", 97)  # windows span many batches
    assert encode_payloads(windows) == expected
    assert any(r.temperature_tenths is None for r in records)  # the gaps are in the data


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(observations, max_size=30), max_size=12))
def test_payloads_of_any_windows_match_one_by_one(windows: list) -> None:
    assert encode_payloads(windows) == [encode_payload(w) for w in windows]
