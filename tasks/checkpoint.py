"""Checkpoint v1 (`streamnotary.checkpoint/1`): what is anchored for one window revision.

A checkpoint binds everything an auditor needs to re-derive the window: which Kafka
offsets were read, which records survived deduplication (by their Merkle root), what
the analytics were, and where the payload is stored and what its bytes hash to.
Its digest, SHA-256 of its RFC 8785 bytes, is what the ledger commits to (through the
batch tree of the run that anchored it). JSON Schema: docs/schemas/checkpoint.schema.json.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tasks.canonical import canonical_digest
from tasks.merkle import ALGORITHM as MERKLE_ALGORITHM
from tasks.payload import PAYLOAD_FORMAT
from tasks.record import RECORD_SCHEMA
from tasks.window_content import WindowContent

CHECKPOINT_SCHEMA = "streamnotary.checkpoint/1"
CLOSE_REASONS = ("watermark", "idle_timeout", "drain", "late_data")


class CheckpointError(ValueError):
    """A document is not a valid checkpoint v1."""


@dataclass(frozen=True, slots=True)
class PayloadRef:
    uri: str
    sha256: str
    size: int
    pack_key: str | None = None  # layout pack: the payload is bytes [offset, offset+size)
    offset: int | None = None  # of this run-level pack object (tasks/pack.py)


@dataclass(frozen=True, slots=True)
class Supersedes:
    revision: int
    checkpoint_digest: str


def build_checkpoint(
    *,
    content: WindowContent,
    topic: str,
    revision: int,
    supersedes: Supersedes | None,
    close_reason: str,
    payload: PayloadRef,
    pipeline_version: str,
) -> dict[str, Any]:
    """Assemble the checkpoint document for one window revision."""
    if close_reason not in CLOSE_REASONS:
        raise CheckpointError(f"close reason must be one of {CLOSE_REASONS}, got {close_reason!r}")
    if (revision == 0) != (supersedes is None):
        raise CheckpointError(
            "revision 0 supersedes nothing; every later revision names its predecessor"
        )
    key = content.key
    doc = {
        "schema": CHECKPOINT_SCHEMA,
        "window": {
            "id": key.window_id,
            "station_id": key.station_id,
            "start": key.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": key.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size_seconds": key.size_seconds,
            "close_reason": close_reason,
        },
        "revision": revision,
        "supersedes": None
        if supersedes is None
        else {"revision": supersedes.revision, "checkpoint_digest": supersedes.checkpoint_digest},
        "source": {
            "topic": topic,
            "ranges": [
                {"partition": p, "start": lo, "end": hi}
                for p, (lo, hi) in sorted(content.ranges.items())
            ],
        },
        "counts": content.counts(),
        "merkle": {
            "algorithm": MERKLE_ALGORITHM,
            "leaf_encoding": f"rfc8785/{RECORD_SCHEMA}",
            "size": len(content.leaves),
            "root": content.root.hex(),
        },
        "aggregates": content.aggregates,
        "payload": {
            "uri": payload.uri,
            "format": PAYLOAD_FORMAT,
            "sha256": payload.sha256,
            "size": payload.size,
        },
        "pipeline": {"name": "streamnotary", "version": pipeline_version},
    }
    if payload.pack_key is not None:
        doc["payload"]["pack"] = {"key": payload.pack_key, "offset": payload.offset}
    # Not schema-validated here: validation costs ~3 ms, as much as building the window,
    # and this document is assembled from typed values. Every checkpoint a reader takes
    # from outside (bucket, bundle) is validated, and tests/test_pipeline.py validates a
    # run's stored checkpoints against checkpoint.schema.json.
    return doc


def checkpoint_digest(doc: dict[str, Any]) -> str:
    """SHA-256 (hex) of the checkpoint's RFC 8785 bytes: the value the ledger commits to."""
    return canonical_digest(doc)


def load_schema(name: str) -> dict[str, Any]:
    """Load a JSON Schema shipped with the package (mirrors docs/schemas/)."""
    return json.loads(resources.files("streamnotary").joinpath("schemas", name).read_text())


@functools.cache
def schema_validator(name: str) -> Any:
    """A compiled validator for a shipped schema (building one costs ~100 ms; reuse it)."""
    import jsonschema

    schema = load_schema(name)
    base = jsonschema.validators.validator_for(schema)
    base.check_schema(schema)
    # JSON Schema's "integer" admits 24.0; our documents never hold floats, RFC 8785 would
    # write 24.0 as 24 (one digest, two documents) and docs/verify_bundle.py refuses floats,
    # so an integer here is a Python int and never a bool.
    strict = base.TYPE_CHECKER.redefine("integer", lambda _checker, value: type(value) is int)
    cls = jsonschema.validators.extend(base, type_checker=strict)
    return cls(schema)


def validate_checkpoint(doc: Any) -> None:
    """Raise `CheckpointError` unless `doc` conforms to checkpoint.schema.json."""
    try:
        error = next(iter(schema_validator("checkpoint.schema.json").iter_errors(doc)), None)
    except RecursionError as exc:  # the validator recurses once per nesting level
        raise CheckpointError("checkpoint is nested too deeply to be one") from exc
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        raise CheckpointError(f"checkpoint invalid at /{path}: {error.message}")


def ranges_of(doc: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """The checkpoint's offset ranges as {partition: (start, end)}."""
    return {r["partition"]: (r["start"], r["end"]) for r in doc["source"]["ranges"]}
