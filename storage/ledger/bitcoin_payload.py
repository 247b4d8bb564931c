"""The OP_RETURN payload of a Bitcoin-family anchor: encode, decode, rebuild the body.

Pure (no I/O): what goes on chain for a batch entry and how an auditor reads it back. ::

    b"SNTY" | version 0x01 | kind b"B" | batch root (32) | sha256(key) (32) | size (uint32 BE)

74 bytes, within the standard 80-byte OP_RETURN relay limit. The JSON body does not fit,
so a bitcoin batch entry is exactly ``{"kind": "batch", "topic", "root", "size"}`` under
``batch/<topic>/<root>``: everything recoverable from the payload plus the key.
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
OP_RETURN = 0x6A
OP_PUSHDATA1 = 0x4C


class EntryNotRecoverable(LedgerError):
    """The entry holds more than an OP_RETURN can carry (see the module docstring)."""


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def batch_body(topic: str, root_hex: str, size: int) -> dict[str, Any]:
    """The (only) body a bitcoin batch entry can have: everything is recoverable from chain."""
    return {"kind": "batch", "topic": topic, "root": root_hex, "size": size}


def encode_payload(entry: AnchorEntry) -> bytes:
    """The OP_RETURN payload of `entry`; `EntryNotRecoverable` unless `read` can rebuild it."""
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

    def body_for(self, key: str) -> dict[str, Any]:
        """Rebuild the entry body, given its key (whose hash must match the one on chain)."""
        if key_hash(key).hex() != self.key_hash:
            raise LedgerCorrupted(f"{self.txid}:{self.vout} does not anchor key {key!r}")
        prefix, suffix = "batch/", f"/{self.root}"
        if not (key.startswith(prefix) and key.endswith(suffix)):
            raise LedgerCorrupted(f"{key!r} is not the key of batch {self.root}")
        return batch_body(key[len(prefix) : -len(suffix)], self.root, self.size)


def decode_payload_script(script_hex: str) -> tuple[bytes, bytes, int] | None:
    """(root, key hash, size) if the output script is one of our OP_RETURNs, else None."""
    script = bytes.fromhex(script_hex)
    if len(script) < 2 or script[0] != OP_RETURN:
        return None
    if script[1] == OP_PUSHDATA1 and len(script) >= 3:
        n, data = script[2], script[3:]
    elif script[1] < OP_PUSHDATA1:
        n, data = script[1], script[2:]
    else:
        return None
    if n != len(data) or len(data) != PAYLOAD_SIZE or not data.startswith(PREFIX):
        return None
    body = data[len(PREFIX) :]
    return body[:32], body[32:64], struct.unpack(">I", body[64:68])[0]
