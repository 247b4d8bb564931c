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

import orjson
import rfc8785

# Documents this project reads (checkpoints, receipts, plans, proofs, log entries) are a
# few levels deep; 64 leaves ample room and keeps the C parser far from the C stack's end.
MAX_DOCUMENT_DEPTH = 64
_BRACKET_OR_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class CanonicalizationError(ValueError):
    """A value cannot be represented in canonical JSON (NaN, infinity, unsupported type)."""


class DocumentError(ValueError):
    """Bytes that should hold a JSON document do not (not UTF-8, not JSON, too deep)."""


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_ASTRAL_UTF8 = re.compile(rb"[\xf0-\xf4]")  # the lead byte of a 4-byte UTF-8 sequence
_SCALARS = frozenset((str, int, bool, type(None)))
_CONTAINERS = frozenset((dict, list, tuple))


def _plain(value: Any) -> bool:
    """Whether `value` holds only exact strings, integers, booleans, null, lists and objects.

    For those, orjson (with sorted keys and its 53-bit integer limit) writes RFC 8785's
    bytes, with three exceptions it reports itself or `canonical_json` sees in its output:
    integers beyond 2**53-1 and non-string keys (orjson raises), lone surrogates (orjson
    raises), and characters beyond U+FFFF (4-byte UTF-8 in the output), which RFC 8785
    orders by UTF-16 code units where orjson orders keys by code points. Floats (whose
    ES6 number form orjson does not write) and every other type fail this walk.
    """
    # An explicit stack instead of recursion: this runs for every document of every
    # window (issue 10). Keys need no look: orjson checks them.
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            members: Any = v.values()
        elif t is list or t is tuple:
            members = v
        elif t in _SCALARS:
            continue
        else:
            return False
        for x in members:
            tx = type(x)
            if tx in _SCALARS:
                continue
            if tx in _CONTAINERS:
                push(x)
                continue
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 serialization of `value`.

    The pure-Python reference encoder (`rfc8785`) costs ~0.4 ms per checkpoint and a run
    serializes several documents per window; for the JSON subset our documents use,
    orjson writes the same bytes (`_plain`; proven by a property test against `rfc8785`),
    ~50x faster (8 µs per checkpoint, walk included; the standard library's encoder took
    31).
    """
    if _plain(value):
        try:
            data = orjson.dumps(value, option=_FAST_OPTIONS)
        except TypeError:
            pass  # a huge integer, a non-string key, a lone surrogate: the reference decides
        else:
            if data.isascii() or not _ASTRAL_UTF8.search(data):
                return data
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
