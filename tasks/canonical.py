"""Canonical JSON: RFC 8785 (JSON Canonicalization Scheme) bytes and their digests.

Every document that is hashed (checkpoints, batch manifests, ledger entries) goes through
`canonical_json`, so that two parties serializing the same value get the same bytes.
The fixed-schema fast path for observation records lives in `tasks.record` and is proven
byte-identical to this function by a property test.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


class CanonicalizationError(ValueError):
    """A value cannot be represented in canonical JSON (NaN, infinity, unsupported type)."""


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 serialization of `value`."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(str(exc)) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_digest(value: Any) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON bytes of `value`."""
    return sha256_hex(canonical_json(value))
