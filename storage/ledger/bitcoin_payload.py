"""The OP_RETURN payload of a Bitcoin-family anchor: encode, decode, rebuild the body.

Pure (no I/O): what goes on chain for a batch entry and how an auditor reads it back. ::

    b"SNTY" | version 0x01 | kind b"B" | batch root (32) | sha256(key) (32) | size (uint32 BE)

74 bytes, within the standard 80-byte OP_RETURN relay limit. The JSON body does not fit,
so a bitcoin batch entry is exactly ``{"kind": "batch", "topic", "root", "size"}`` under
``batch/<topic>/<root>``: everything recoverable from the payload plus the key.

A run's anchor log head (``tasks.run_log.head_entry``, key ``head/<topic>/<size>``) is ::

    b"SNTY" | 0x01 | b"H" | log root (32) | sha256(key) (32) | size (uint32) | previous size

78 bytes, rebuilt as ``{"kind": "head", "topic", "size", "root", "previous_size"}``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from storage.layout import batch_entry_key
from storage.ledger.base import AnchorEntry, LedgerCorrupted, LedgerError

MAGIC = b"SNTY"
VERSION = 1
KIND_BATCH = b"B"
PREFIX = MAGIC + bytes([VERSION]) + KIND_BATCH
PAYLOAD_SIZE = len(PREFIX) + 32 + 32 + 4  # 74 <= 80, the standard OP_RETURN relay limit
KIND_HEAD = b"H"
HEAD_PREFIX = MAGIC + bytes([VERSION]) + KIND_HEAD
HEAD_PAYLOAD_SIZE = PAYLOAD_SIZE + 4  # 78 <= 80
OP_RETURN = 0x6A
OP_PUSHDATA1 = 0x4C


class EntryNotRecoverable(LedgerError):
    """The entry holds more than an OP_RETURN can carry (see the module docstring)."""


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def batch_body(topic: str, root_hex: str, size: int) -> dict[str, Any]:
    """The (only) body a bitcoin batch entry can have: everything is recoverable from chain."""
    return {"kind": "batch", "topic": topic, "root": root_hex, "size": size}


def head_body(topic: str, size: int, root_hex: str, previous_size: int) -> dict[str, Any]:
    """A log head entry's body (tasks.run_log.head_entry), rebuilt from chain and key."""
    return {
        "kind": "head",
        "topic": topic,
        "size": size,
        "root": root_hex,
        "previous_size": previous_size,
    }


def _encode_head(entry: AnchorEntry) -> bytes:
    body = entry.body
    topic, size, root, prev = (body.get(k) for k in ("topic", "size", "root", "previous_size"))
    if (
        not isinstance(topic, str)
        or not isinstance(size, int)
        or not isinstance(prev, int)
        or not isinstance(root, str)
        or body != head_body(topic, size, root, prev)
        or entry.key != f"head/{topic}/{size}"
        or not (0 <= prev < size < 2**32)
    ):
        raise EntryNotRecoverable(f"{entry.key}: not a recoverable log head entry {body!r}")
    try:
        root_bytes = bytes.fromhex(root)
    except ValueError as exc:
        raise EntryNotRecoverable(f"{entry.key}: root is not hex") from exc
    if len(root_bytes) != 32 or root != root_bytes.hex():
        raise EntryNotRecoverable(f"{entry.key}: root must be 32 bytes lowercase hex")
    return HEAD_PREFIX + root_bytes + key_hash(entry.key) + struct.pack(">II", size, prev)


def encode_payload(entry: AnchorEntry) -> bytes:
    """The OP_RETURN payload of `entry`; `EntryNotRecoverable` unless `read` can rebuild it."""
    if entry.kind == "head":
        return _encode_head(entry)
    body = entry.body
    if entry.kind != "batch" or set(body) != {"kind", "topic", "root", "size"}:
        raise EntryNotRecoverable(
            f"{entry.key}: a bitcoin entry must be exactly "
            '{"kind": "batch", "topic", "root", "size"} (only that fits in OP_RETURN)'
        )
    topic, root, size = body["topic"], body["root"], body["size"]
    if body["kind"] != "batch" or not isinstance(topic, str) or not isinstance(size, int):
        raise EntryNotRecoverable(f"{entry.key}: malformed batch body {body!r}")
    try:
        root_bytes = bytes.fromhex(root)
    except (TypeError, ValueError) as exc:
        raise EntryNotRecoverable(f"{entry.key}: root is not hex") from exc
    if len(root_bytes) != 32 or root != root_bytes.hex() or not 0 <= size < 2**32:
        raise EntryNotRecoverable(f"{entry.key}: root must be 32 bytes lowercase hex, size uint32")
    if entry.key != batch_entry_key(topic, root):
        raise EntryNotRecoverable(f"{entry.key}: key must be {batch_entry_key(topic, root)!r}")
    return PREFIX + root_bytes + key_hash(entry.key) + struct.pack(">I", size)


@dataclass(frozen=True, slots=True)
class OnChainAnchor:
    """One decoded anchor output."""

    txid: str
    vout: int
    root: str
    key_hash: str
    size: int
    confirmations: int
    kind: str = "batch"
    previous_size: int = 0

    def body_for(self, key: str) -> dict[str, Any]:
        """Rebuild the entry body, given its key (whose hash must match the one on chain)."""
        if key_hash(key).hex() != self.key_hash:
            raise LedgerCorrupted(f"{self.txid}:{self.vout} does not anchor key {key!r}")
        if self.kind == "head":
            prefix, suffix = "head/", f"/{self.size}"
            if not (key.startswith(prefix) and key.endswith(suffix)):
                raise LedgerCorrupted(f"{key!r} is not the key of a log head of size {self.size}")
            return head_body(
                key[len(prefix) : -len(suffix)], self.size, self.root, self.previous_size
            )
        prefix, suffix = "batch/", f"/{self.root}"
        if not (key.startswith(prefix) and key.endswith(suffix)):
            raise LedgerCorrupted(f"{key!r} is not the key of batch {self.root}")
        return batch_body(key[len(prefix) : -len(suffix)], self.root, self.size)


def decode_payload_script(script_hex: str) -> tuple[bytes, bytes, int, str, int] | None:
    """(root, key hash, size, kind, previous size) of one of our OP_RETURNs, else None."""
    script = bytes.fromhex(script_hex)
    if len(script) < 2 or script[0] != OP_RETURN:
        return None
    if script[1] == OP_PUSHDATA1 and len(script) >= 3:
        n, data = script[2], script[3:]
    elif script[1] < OP_PUSHDATA1:
        n, data = script[1], script[2:]
    else:
        return None
    if n != len(data):
        return None
    if len(data) == HEAD_PAYLOAD_SIZE and data.startswith(HEAD_PREFIX):  # a log head
        body = data[len(HEAD_PREFIX) :]
        size, previous = struct.unpack(">II", body[64:72])
        return body[:32], body[32:64], size, "head", previous
    if len(data) != PAYLOAD_SIZE or not data.startswith(PREFIX):
        return None
    body = data[len(PREFIX) :]
    return body[:32], body[32:64], struct.unpack(">I", body[64:68])[0], "batch", 0
