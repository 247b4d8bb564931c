"""The held-open messages: a stored copy of what still-open windows contain (pure).

Why: a window stays open until its station's watermark passes it. Re-reading its
messages from Kafka each run (from the cursor's ``resume``) makes a silent station pin
every later run to an ever longer read. Instead each run stores the messages of its
still-open windows as one write-once, content-addressed document, names it (with its
SHA-256) in the cursor, and the next run reads Kafka only from ``read_end``.

The copy is a cache, not evidence: checkpoints still name Kafka offset ranges, and the
auditor re-reads those from Kafka, so an altered copy is caught by the audit, and a copy
whose digest does not match the cursor is ignored (the run falls back to re-reading).
Document `streamnotary.held/1`, docs/formats.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from tasks.canonical import canonical_json, sha256_hex
from tasks.message import SourceMessage

HELD_SCHEMA = "streamnotary.held/1"


class HeldStateError(ValueError):
    """A stored held-open document is not what the cursor names."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def encode_held(topic: str, messages: Sequence[SourceMessage]) -> bytes:
    """RFC 8785 bytes of the held-open document, messages in (partition, offset) order."""
    doc = {
        "schema": HELD_SCHEMA,
        "topic": topic,
        "messages": [
            {
                "partition": m.partition,
                "offset": m.offset,
                "key": _b64(m.key),
                "value": _b64(m.value),
                "timestamp_ms": m.timestamp_ms,
            }
            for m in sorted(messages, key=lambda m: (m.partition, m.offset))
        ],
    }
    return canonical_json(doc)


def decode_held(data: bytes, topic: str, sha256: str) -> list[SourceMessage]:
    """The messages of a held-open document; `HeldStateError` if it is not the named one."""
    if sha256_hex(data) != sha256:
        raise HeldStateError(f"held-open messages of {topic!r} do not match the cursor's digest")
    try:
        doc: Any = json.loads(data)
        if doc.get("schema") != HELD_SCHEMA or doc.get("topic") != topic:
            raise ValueError("not a held-open document of this topic")
        return [
            SourceMessage(
                topic=topic,
                partition=int(m["partition"]),
                offset=int(m["offset"]),
                key=_unb64(m["key"]),
                value=_unb64(m["value"]),
                timestamp_ms=None if m["timestamp_ms"] is None else int(m["timestamp_ms"]),
            )
            for m in doc["messages"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HeldStateError(f"held-open messages of {topic!r}: {exc}") from exc
