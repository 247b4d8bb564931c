"""Batches: one RFC 6962 tree over the checkpoints anchored by one run.

Anchoring a root per window would cost one ledger transaction per window; a run instead
anchors one batch root, and each window's receipt carries the inclusion proof of its
checkpoint digest in that batch (schema `streamnotary.receipt/1`). Leaves are the 32-byte
checkpoint digests, ordered by (window id, revision), so the batch of a given set of
checkpoints is always the same tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tasks.merkle import ALGORITHM, inclusion_proof, merkle_root, verify_inclusion

BATCH_SCHEMA = "streamnotary.batch/1"
RECEIPT_SCHEMA = "streamnotary.receipt/1"


@dataclass(frozen=True, slots=True)
class BatchMember:
    window_id: str
    revision: int
    checkpoint_digest: str


@dataclass(frozen=True)
class Batch:
    topic: str
    members: tuple[BatchMember, ...]

    @classmethod
    def of(cls, topic: str, members: Sequence[BatchMember]) -> Batch:
        return cls(topic, tuple(sorted(members, key=lambda m: (m.window_id, m.revision))))

    @cached_property
    def leaves(self) -> list[bytes]:
        return [bytes.fromhex(m.checkpoint_digest) for m in self.members]

    @cached_property
    def root(self) -> bytes:
        return merkle_root(self.leaves)

    def index_of(self, window_id: str, revision: int) -> int:
        for i, m in enumerate(self.members):
            if (m.window_id, m.revision) == (window_id, revision):
                return i
        raise KeyError(f"{window_id} r{revision} is not in this batch")

    def proof(self, index: int) -> list[bytes]:
        return inclusion_proof(self.leaves, index)

    def manifest(self) -> dict[str, Any]:
        """The batch document stored beside the payloads (`streamnotary.batch/1`)."""
        return {
            "schema": BATCH_SCHEMA,
            "topic": self.topic,
            "merkle": {"algorithm": ALGORITHM, "size": len(self.members), "root": self.root.hex()},
            "members": [
                {
                    "window_id": m.window_id,
                    "revision": m.revision,
                    "checkpoint_digest": m.checkpoint_digest,
                }
                for m in self.members
            ],
        }

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> Batch:
        return cls.of(
            doc["topic"],
            [
                BatchMember(m["window_id"], m["revision"], m["checkpoint_digest"])
                for m in doc["members"]
            ],
        )


def batch_proof(batch: Batch, window_id: str, revision: int) -> dict[str, Any]:
    """The `batch` member of a receipt: where the checkpoint sits in the batch tree."""
    i = batch.index_of(window_id, revision)
    return {
        "root": batch.root.hex(),
        "size": len(batch.members),
        "index": i,
        "proof": [h.hex() for h in batch.proof(i)],
    }


def verify_batch_proof(checkpoint_digest: str, proof: dict[str, Any]) -> None:
    """Raise a `tasks.merkle.MerkleError` unless the digest is in the batch tree."""
    verify_inclusion(
        bytes.fromhex(checkpoint_digest),
        proof["index"],
        proof["size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root"]),
    )
