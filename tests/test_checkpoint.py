"""Checkpoint v1 (tasks/checkpoint.py): built from a real window, valid against its JSON
Schema in docs/schemas/, digest = SHA-256 of its RFC 8785 bytes."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.checkpoint import (
    CheckpointError,
    PayloadRef,
    Supersedes,
    build_checkpoint,
    checkpoint_digest,
    validate_checkpoint,
)
from tasks.dwd import read_observations
from tasks.merkle import merkle_root
from tasks.message import SourceMessage, classify
from tasks.payload import encode_payload
from tasks.record import canonical_bytes
from tasks.window import WindowSpec
from tasks.window_content import build_window, offset_ranges
from tests.dwd_data import product_file

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs/schemas/checkpoint.schema.json").read_text()
)
SPEC = WindowSpec(86_400)
DAY = datetime(2019, 9, 7, tzinfo=UTC)  # the day whose evening has missing temperatures


@functools.cache
def _content() -> tuple:
    obs = [
        o
        for o in read_observations(product_file("00433"))
        if SPEC.index_of(o.observed_at) == SPEC.index_of(DAY)
    ]
    msgs = [
        SourceMessage(
            "dwd", 0, 100 + i, b"00433", canonical_bytes(o), int(o.observed_at.timestamp() * 1000)
        )
        for i, o in enumerate(obs)
    ]
    msgs.append(SourceMessage("dwd", 0, 200, b"00433", canonical_bytes(obs[3]), 0))  # duplicate
    msgs.append(SourceMessage("dwd", 1, 7, b"00433", b'{"broken', int(DAY.timestamp() * 1000)))
    classified = [classify(m, SPEC) for m in msgs]
    return obs, build_window(SPEC.key_of("00433", DAY), classified)


def _doc(revision: int = 0, supersedes: Supersedes | None = None) -> tuple[dict, bytes]:
    _, content = _content()
    payload = encode_payload(content.records)
    doc = build_checkpoint(
        content=content,
        topic="dwd",
        revision=revision,
        supersedes=supersedes,
        close_reason="drain",
        payload=PayloadRef(
            "s3://bucket/payloads/x.parquet", hashlib.sha256(payload).hexdigest(), len(payload)
        ),
        pipeline_version="0.1.0",
    )
    return doc, payload


def test_checkpoint_binds_the_window_and_validates() -> None:
    doc, payload = _doc()
    jsonschema.validate(doc, SCHEMA)
    obs, _ = _content()
    assert doc["window"]["id"] == "00433_20190907T000000Z_86400s"
    assert doc["source"]["ranges"] == [
        {"partition": 0, "start": 100, "end": 201},
        {"partition": 1, "start": 7, "end": 8},
    ]
    assert doc["counts"] == {
        "messages": 26,
        "records": 24,
        "duplicates": 1,
        "conflicts": 0,
        "rejected": 1,
    }
    assert doc["merkle"]["root"] == merkle_root(sorted(canonical_bytes(o) for o in obs)).hex()
    assert doc["aggregates"]["temperature_c"]["missing"] == 7  # 17..23 UTC are -999
    assert doc["payload"]["size"] == len(payload)


def test_digest_is_sha256_of_rfc8785_bytes() -> None:
    doc, _ = _doc()
    assert checkpoint_digest(doc) == hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
    again, _ = _doc()
    assert checkpoint_digest(again) == checkpoint_digest(doc)
    later, _ = _doc(1, Supersedes(0, checkpoint_digest(doc)))
    jsonschema.validate(later, SCHEMA)
    assert checkpoint_digest(later) != checkpoint_digest(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("schema",), "streamnotary.checkpoint/2"),
        (("merkle", "root"), "ABC"),
        (("window", "close_reason"), "because"),
        (("counts", "records"), -1),
        (("aggregates", "temperature_c", "mean"), 8.7),
        (("payload", "extra"), 1),
    ],
)
def test_schema_rejects_malformed_checkpoints(path: tuple[str, ...], value: object) -> None:
    doc, _ = _doc()
    bad = copy.deepcopy(doc)
    target = bad
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(CheckpointError):
        validate_checkpoint(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_revision_rules() -> None:
    with pytest.raises(CheckpointError):
        _doc(1, None)
    with pytest.raises(CheckpointError):
        _doc(0, Supersedes(0, "0" * 64))


@settings(max_examples=300, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 5), st.integers(0, 10**12)), min_size=1, max_size=40))
def test_offset_ranges_cover_each_partitions_smallest_to_largest_offset(
    positions: set[tuple[int, int]],
) -> None:
    ranges = offset_ranges(sorted(positions))
    assert list(ranges) == sorted({p for p, _ in positions})
    for p, (start, end) in ranges.items():
        offsets = [o for q, o in positions if q == p]
        assert (start, end) == (min(offsets), max(offsets) + 1)
