"""RFC 6962 Merkle tree: reference vectors, corrupted proofs, pymerkle cross-check.

Reference vectors: the RFC 6962 test tree of 8 leaves used by Certificate Transparency,
as published in transparency-dev/merkle, file proof/verify_test.go (variables `leaves`,
`roots`, `inclusionProofs`, `consistencyProofs`; Apache-2.0). The inclusion vectors there
number leaves from 1; they are converted to 0-based indices below.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.merkle import (
    InconsistentTrees,
    IndexOutOfRange,
    InvalidProofShape,
    MerkleError,
    RootMismatch,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    merkle_root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = {  # tree size -> root
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
INCLUSION = [  # (0-based leaf index, tree size, audit path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _h(proof: list[str]) -> list[bytes]:
    return [bytes.fromhex(p) for p in proof]


def _root(n: int) -> bytes:
    return bytes.fromhex(ROOTS[n])


@pytest.mark.parametrize("size", range(9))
def test_roots_match_reference(size: int) -> None:
    assert merkle_root(LEAVES[:size]).hex() == ROOTS[size]
    assert root_from_leaf_hashes([hash_leaf(x) for x in LEAVES[:size]]).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    assert inclusion_proof(LEAVES[:size], index) == _h(proof)
    verify_inclusion(LEAVES[index], index, size, _h(proof), _root(size))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    assert consistency_proof(LEAVES[:new], old) == _h(proof)
    verify_consistency(old, new, _root(old), _root(new), _h(proof))


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ 8]) + out[i][1:]
    return out


def _misjudged(verify: object, cases: list[tuple[str, tuple, type]]) -> list[str]:
    """Descriptions of the corrupted cases that did not raise their expected exception."""
    wrong = []
    for desc, args, expected in cases:
        try:
            verify(*args)  # type: ignore[operator]
        except expected:
            continue
        except Exception as exc:
            wrong.append(f"{desc}: raised {type(exc).__name__}, expected {expected.__name__}")
        else:
            wrong.append(f"{desc}: accepted")
    return wrong


def _corrupt_inclusion(index: int, size: int, proof: list[bytes]) -> list[tuple[str, tuple, type]]:
    """Corruptions in the style of transparency-dev's corruptInclusionProof, with the
    named exception each must raise."""
    root, leaf = _root(size), LEAVES[index]
    cases: list[tuple[str, tuple, type]] = [
        ("index+1", (leaf, index + 1, size, proof, root), MerkleError),
        ("index^2", (leaf, index ^ 2, size, proof, root), MerkleError),
        ("size*2", (leaf, index, size * 2, proof, root), InvalidProofShape),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, root), RootMismatch),
        ("empty root", (leaf, index, size, proof, _root(0)), RootMismatch),
        ("random root", (leaf, index, size, proof, SOME_HASH), RootMismatch),
        ("trailing root", (leaf, index, size, [*proof, root], root), InvalidProofShape),
        ("trailing garbage", (leaf, index, size, [*proof, b""], root), InvalidProofShape),
        ("preceding garbage", (leaf, index, size, [b"", *proof], root), InvalidProofShape),
        ("preceding root", (leaf, index, size, [root, *proof], root), InvalidProofShape),
        ("index out of tree", (leaf, size, size, proof, root), IndexOutOfRange),
        ("negative index", (leaf, -1, size, proof, root), IndexOutOfRange),
    ]
    if index > 0:
        cases.append(("index-1", (leaf, index - 1, size, proof, root), MerkleError))
    cases += [
        (f"flip proof[{i}]", (leaf, index, size, _flip(proof, i), root), RootMismatch)
        for i in range(len(proof))
    ]
    if proof:
        cases.append(("truncated", (leaf, index, size, proof[:-1], root), InvalidProofShape))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        cases.append(("inserted", (leaf, index, size, inserted, root), InvalidProofShape))
    return cases


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION[1:])
def test_corrupted_inclusion_proofs_raise_named_errors(
    index: int, size: int, proof: list[str]
) -> None:
    assert _misjudged(verify_inclusion, _corrupt_inclusion(index, size, _h(proof))) == []


def _corrupt_consistency(old: int, new: int, proof: list[bytes]) -> list[tuple[str, tuple, type]]:
    r1, r2 = _root(old), _root(new)
    flips = [
        (f"flip proof[{i}]", (old, new, r1, r2, _flip(proof, i)), InconsistentTrees)
        for i in range(len(proof))
    ]
    return [
        ("old-1", (old - 1, new, r1, r2, proof), MerkleError),
        ("old+1", (old + 1, new, r1, r2, proof), MerkleError),
        ("new*2", (old, new * 2, r1, r2, proof), MerkleError),
        ("old > new", (new + 1, new, r1, r2, proof), IndexOutOfRange),
        ("wrong old root", (old, new, SOME_HASH, r2, proof), InconsistentTrees),
        ("wrong new root", (old, new, r1, SOME_HASH, proof), InconsistentTrees),
        ("swapped roots", (old, new, r2, r1, proof), InconsistentTrees),
        ("empty proof", (old, new, r1, r2, []), InvalidProofShape),
        ("truncated", (old, new, r1, r2, proof[:-1]), MerkleError),
        ("trailing root", (old, new, r1, r2, [*proof, r2]), InvalidProofShape),
        ("trailing garbage", (old, new, r1, r2, [*proof, b"x"]), InvalidProofShape),
        ("preceding root", (old, new, r1, r2, [r1, *proof]), MerkleError),
        *flips,
    ]


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY[1:])
def test_corrupted_consistency_proofs_raise_named_errors(
    old: int, new: int, proof: list[str]
) -> None:
    assert _misjudged(verify_consistency, _corrupt_consistency(old, new, _h(proof))) == []


def test_trivial_consistency_cases() -> None:
    verify_consistency(0, 0, _root(0), _root(0), [])
    verify_consistency(0, 5, _root(0), _root(5), [])
    verify_consistency(3, 3, _root(3), _root(3), [])
    with pytest.raises(InconsistentTrees):
        verify_consistency(3, 3, _root(3), _root(4), [])
    with pytest.raises(InvalidProofShape):
        verify_consistency(0, 1, _root(0), _root(1), [_root(0)])
    with pytest.raises(InvalidProofShape):
        verify_consistency(3, 3, _root(3), _root(3), [_root(0)])
    with pytest.raises(IndexOutOfRange):
        inclusion_proof(LEAVES, 8)
    with pytest.raises(IndexOutOfRange):
        consistency_proof(LEAVES, 9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=40), st.data())
def test_generated_proofs_verify(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    root = merkle_root(leaves)
    index = data.draw(st.integers(0, n - 1))
    verify_inclusion(leaves[index], index, n, inclusion_proof(leaves, index), root)
    old = data.draw(st.integers(0, n))
    verify_consistency(old, n, merkle_root(leaves[:old]), root, consistency_proof(leaves, old))


def _pymerkle_root(leaves: list[bytes]) -> bytes:
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm="sha256")  # RFC 6962: 0x00/0x01 prefixes by default
    for leaf in leaves:
        tree.append_entry(leaf)
    return tree.get_root()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100])
def test_root_matches_pymerkle(size: int) -> None:
    leaves = [hashlib.sha256(str(i).encode()).digest()[: i % 40] for i in range(size)]
    assert merkle_root(leaves) == _pymerkle_root(leaves)
