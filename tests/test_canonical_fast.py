"""`canonical_json`'s fast path (orjson) is byte-identical to RFC 8785.

The reference is the `rfc8785` package; hypothesis generates documents of the JSON subset
the fast path takes (strings with every kind of character, including controls, U+2028,
astral characters and keys around U+E000-U+FFFF where UTF-16 and code-point order could
differ; integers up to 2**53-1; nesting) and outside it (floats, huge integers), which
must fall back to the reference and still agree with it. The fast path is watched by
making the reference raise where a document must not need it.
"""

from __future__ import annotations

from unittest import mock

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import canonical
from tasks.canonical import CanonicalizationError, _plain, canonical_json

TEXT = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),
        st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF, exclude_categories=("Cs",)),
        st.characters(min_codepoint=0x10000, max_codepoint=0x1FFFF),
        st.sampled_from(["\u2028", "\u2029", "\x7f", "\x00", "\x1f", '"', "\\", "é"]),
    ),
    max_size=8,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    TEXT,
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(DOCS)
def test_fast_path_is_rfc8785(doc: object) -> None:
    # (documents with astral characters in keys take the reference path: also compared)
    assert canonical_json(doc) == rfc8785.dumps(doc)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6).filter(str.isascii), DOCS, max_size=4))
def test_documents_without_astral_characters_take_the_fast_path(doc: dict[str, object]) -> None:
    assert _plain(doc)
    expected = rfc8785.dumps(doc)
    if _astral(doc):
        assert canonical_json(doc) == expected
        return
    with mock.patch.object(canonical.rfc8785, "dumps", side_effect=AssertionError("slow path")):
        assert canonical_json(doc) == expected


def _astral(value: object) -> bool:
    if isinstance(value, dict):
        return any(_astral(k) or _astral(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_astral(v) for v in value)
    return isinstance(value, str) and any(ord(c) > 0xFFFF for c in value)


@pytest.mark.parametrize("value", [2**53 - 1, -(2**53) + 1, 0, ['\x00\x1f\x7f\u2028"\\']])
def test_edges_inside_the_fast_path(value: object) -> None:
    expected = rfc8785.dumps(value)
    with mock.patch.object(canonical.rfc8785, "dumps", side_effect=AssertionError("slow path")):
        assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64, {1: "a"}, ["\ud800"], {"a": 1.5}])
def test_what_orjson_or_the_walk_refuses_gets_the_reference_verdict(value: object) -> None:
    try:
        expected: bytes | type[Exception] = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        expected = CanonicalizationError
    if expected is CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(TEXT, st.floats(allow_nan=False, allow_infinity=False), min_size=1))
def test_floats_take_the_reference_path(doc: dict[str, float]) -> None:
    assert not _plain(doc)
    assert canonical_json(doc) == rfc8785.dumps(doc)


def test_astral_keys_sort_by_utf16_code_units() -> None:
    """U+1F600 is the surrogate pair D83D DE00: before U+E000 in UTF-16, after it in Python."""
    doc = {"\U0001f600": 1, "\uffff": 2, "\ue000": 3}
    out = canonical_json(doc)
    assert out == rfc8785.dumps(doc)
    assert out.index("\U0001f600".encode()) < out.index("\ue000".encode())
