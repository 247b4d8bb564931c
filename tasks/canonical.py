"""Canonical JSON: RFC 8785 (JSON Canonicalization Scheme) bytes and their digests.

Every document that is hashed (checkpoints, batch manifests, ledger entries) goes through
`canonical_json`, so that two parties serializing the same value get the same bytes.
The fixed-schema fast path for observation records lives in `tasks.record` and is proven
byte-identical to this function by a property test.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import rfc8785

# Documents this project reads (checkpoints, receipts, plans, proofs, log entries) are a
# few levels deep; 64 leaves ample room and keeps the C parser far from the C stack's end.
MAX_DOCUMENT_DEPTH = 64
_BRACKET_OR_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class CanonicalizationError(ValueError):
    """A value cannot be represented in canonical JSON (NaN, infinity, unsupported type)."""


class DocumentError(ValueError):
    """Bytes that should hold a JSON document do not (not UTF-8, not JSON, too deep)."""


_SAFE_INTEGER = 2**53 - 1
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_FAST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _plain(value: Any) -> bool:
    """Whether the standard library's encoder writes `value` exactly as RFC 8785 does.

    True for documents of strings, integers of at most 2**53-1 in magnitude, booleans,
    null, lists and objects whose keys hold no character beyond U+FFFF: then RFC 8785's
    key order (UTF-16 code units) is Python's (code points), its numbers are plain
    digits, and both escape exactly ``"``, ``\\`` and the controls below U+0020 (in the
    same short and ``\\u00xx`` forms). Anything else (floats, huge integers, astral
    keys) takes the reference implementation.
    """
    # An explicit stack instead of recursion through `all(...)` generators: 1.5x faster,
    # and this runs for every document of every window (issue 10).
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if -_SAFE_INTEGER <= v <= _SAFE_INTEGER:
                continue
            return False
        if t is dict:
            for k, x in v.items():
                if type(k) is not str or (not k.isascii() and _ASTRAL.search(k)):
                    return False
                tx = type(x)
                if not (tx is str or tx is bool or x is None):
                    push(x)
            continue
        if t is list or t is tuple:
            for x in v:
                tx = type(x)
                if not (tx is str or tx is bool or x is None):
                    push(x)
            continue
        return False
    return True


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 serialization of `value`.

    The pure-Python reference encoder (`rfc8785`) costs ~0.4 ms per checkpoint and a run
    serializes several documents per window; for the JSON subset our documents use, the
    standard library's C encoder writes the same bytes (`_plain`; proven by a property
    test against `rfc8785`), ~10x faster.
    """
    if _plain(value):
        try:
            return _FAST.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the reference decides
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(str(exc)) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_digest(value: Any) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON bytes of `value`."""
    return sha256_hex(canonical_json(value))


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, brackets inside strings ignored.

    Checked before parsing because the parser recurses once per level: deep nesting raises
    `RecursionError` at the default recursion limit and, once a library has raised that
    limit (py_ecc, imported by web3, sets 100,000), overflows the C stack and kills the
    process. A hostile object in the bucket must be a finding, never a crash.
    """
    depth = deepest = 0
    for m in _BRACKET_OR_STRING_RE.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def parse_document(data: bytes | bytearray | str, max_depth: int = MAX_DOCUMENT_DEPTH) -> Any:
    """Parse untrusted JSON bytes (RFC 8259) with a nesting bound; `DocumentError` otherwise."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8: {exc}") from exc
    if ("[" in text or "{" in text) and nesting_depth(text) > max_depth:
        raise DocumentError(f"JSON nesting deeper than {max_depth}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DocumentError(f"not JSON: {str(exc)[:200]}") from exc
