"""The anchor log in a real bucket (SeaweedFS) and a local directory: append, resume, read.

The writer appends in runs; the reader proves inclusion and consistency from the stored
tiles alone, and catches edited tiles, bundles and checkpoints.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from storage.objectstore import LocalObjectStore, ObjectStore
from storage.tlog import (
    LogCorrupted,
    LogForked,
    LogReader,
    checkpoint_key,
    consistency_key,
    log_prefix,
)
from storage.tlog_writer import LogWriter
from tasks import merkle
from tasks.tlog.checkpoint import CheckpointSignatureError, LogCheckpoint, open_checkpoint
from tasks.tlog.note import Signer
from tasks.tlog.tiles import TileMismatch, entries_path, tile_path

TOPIC = "dwd.log-test"
ORIGIN = "streamnotary.test/dwd.log-test"


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
    return LocalObjectStore(tmp_path / "objects")


def leaves(n: int, start: int = 0) -> list[bytes]:
    return [f'{{"n":{i}}}'.encode() for i in range(start, start + n)]


def test_runs_grow_the_log_append_only_with_verified_proofs(store: ObjectStore) -> None:
    signer = Signer.generate("operator")
    writer = LogWriter(store, TOPIC, signer, ORIGIN)
    all_leaves: list[bytes] = []
    heads: list[LogCheckpoint] = []
    for batch in (3, 254, 1, 300):
        base = len(all_leaves)
        new = leaves(batch, base)
        result = writer.append(base, new)
        all_leaves += new
        assert result.created and result.new.size == len(all_leaves)
        assert result.new.root == merkle.merkle_root(all_leaves)
        heads.append(result.new)
    verifier = signer.named(ORIGIN).verifier()
    head, _ = open_checkpoint(store.get(checkpoint_key(TOPIC)), verifier, ORIGIN)
    assert head == heads[-1]

    reader = LogReader(store, TOPIC, verifier, ORIGIN)
    assert reader.checkpoint() == head
    assert list(reader.leaf_bytes(250, 262)) == all_leaves[250:262]
    for old, new in itertools.pairwise(heads):
        doc = reader.stored_consistency(old.size, new.size)
        assert doc is not None and doc["old"]["root"] == old.root.hex()
        proof = [bytes.fromhex(h) for h in doc["proof"]]
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        assert reader.consistency_proof(old.size, new.size) == proof
        assert reader.root(old.size) == old.root
    for index in (0, 255, 256, 557):
        proof = reader.inclusion_proof(index, head.size)
        merkle.verify_inclusion(all_leaves[index], index, head.size, proof, head.root)


def test_append_is_idempotent_and_refuses_a_forked_base(store: ObjectStore) -> None:
    signer = Signer.generate("operator")
    writer = LogWriter(store, TOPIC, signer, ORIGIN)
    writer.append(0, leaves(5))
    note = store.get(checkpoint_key(TOPIC))
    again = writer.append(0, leaves(5))  # a resumed run repeats the append
    assert not again.created and store.get(checkpoint_key(TOPIC)) == note
    assert again.old is None and again.new.size == 5
    second = writer.append(5, leaves(2, 5))
    assert second.old is not None and second.old.size == 5
    assert writer.append(5, leaves(2, 5)).old == second.old
    with pytest.raises(LogForked):
        writer.append(5, leaves(2, 5000))  # same size, different entries
    with pytest.raises(LogForked):
        writer.append(3, leaves(1))  # not the head


def test_checkpoint_signed_by_another_key_is_refused(store: ObjectStore) -> None:
    LogWriter(store, TOPIC, Signer.generate("mallory"), ORIGIN).append(0, leaves(2))
    honest = LogWriter(store, TOPIC, Signer.generate("operator"), ORIGIN)
    with pytest.raises(CheckpointSignatureError):
        honest.append(2, leaves(1, 2))


def test_edited_tiles_and_bundles_are_caught(store: ObjectStore) -> None:
    signer = Signer.generate("operator")
    LogWriter(store, TOPIC, signer, ORIGIN).append(0, leaves(300))
    verifier = signer.named(ORIGIN).verifier()
    prefix = log_prefix(TOPIC)

    bundle_key = f"{prefix}/{entries_path(0)}"
    original = store.get(bundle_key)
    store.delete(bundle_key)
    store.put(bundle_key, original.replace(b'{"n":7}', b'{"n":8}'))
    with pytest.raises(LogCorrupted):
        list(LogReader(store, TOPIC, verifier, ORIGIN).leaf_bytes(0, 10))
    store.put(bundle_key, original)

    tile_key = f"{prefix}/{tile_path(0, 0)}"
    tile = store.get(tile_key)
    store.put(tile_key, bytes(32) + tile[32:])
    with pytest.raises(TileMismatch):
        LogReader(store, TOPIC, verifier, ORIGIN).inclusion_proof(0, 300)
    store.put(tile_key, tile)
    assert store.head(consistency_key(TOPIC, 0, 300)) is not None
