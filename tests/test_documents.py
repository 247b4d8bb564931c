"""Untrusted JSON documents: a verdict for every input, whatever the recursion limit.

web3 imports py_ecc, which raises the interpreter's recursion limit to 100,000; from then on
`json.loads` of 100k nested brackets overflows the C stack and kills the process (seen in
the full suite: the auditor died on a planted receipt). `parse_document` bounds the nesting
before the parser runs, so the auditor, the plan loader and the bundle verifier survive.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tasks.canonical import MAX_DOCUMENT_DEPTH, DocumentError, nesting_depth, parse_document


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nesting deeper"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nesting deeper"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_hostile_documents_are_named_errors(data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_document(data)


def test_brackets_inside_strings_do_not_count() -> None:
    doc = {"note": "[[[[{{{{" * 100, "nested": [[1]]}
    text = '{"note": "' + doc["note"] + '", "nested": [[1]]}'
    assert nesting_depth(text) == 3
    assert parse_document(text.encode()) == doc
    deepest_allowed = "[" * MAX_DOCUMENT_DEPTH + "]" * MAX_DOCUMENT_DEPTH
    value = parse_document(deepest_allowed)
    for _ in range(MAX_DOCUMENT_DEPTH - 1):
        value = value[0]
    assert value == []


def test_deep_document_after_web3_raised_the_recursion_limit() -> None:
    """Run in a child: without the depth bound this segfaults instead of failing."""
    code = textwrap.dedent(
        """
        import sys
        import storage.ledger.evm  # imports web3 -> py_ecc -> setrecursionlimit(100000)
        assert sys.getrecursionlimit() >= 100000, sys.getrecursionlimit()
        from tasks.canonical import DocumentError, parse_document
        try:
            parse_document(b"[" * 200000 + b"]" * 200000)
        except DocumentError as exc:
            print("rejected:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rejected: JSON nesting deeper than" in out.stdout
