"""RFC 6962 Merkle Tree Hash, inclusion proofs and consistency proofs (SHA-256).

Implements RFC 6962 §2.1 (Merkle Hash Trees), §2.1.1 (audit paths) and §2.1.2
(consistency proofs); the verification algorithms are the ones spelled out in
RFC 9162 §2.1.3.2 and §2.1.4.2, which RFC 6962 only describes in prose.

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256()  (the hash of the empty string)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n]))  with k the largest power of two < n

`merkle_root` builds the tree level by level, promoting a lone right-most node unchanged;
this is the same tree as the recursive definition and costs exactly 2n-1 hashes.
Every verification failure raises a subclass of `MerkleError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
ALGORITHM = "rfc6962-sha256"
_sha256 = hashlib.sha256


class MerkleError(ValueError):
    """Base class of every Merkle verification failure."""


class InvalidProofShape(MerkleError):
    """A proof has the wrong number of hashes, or hashes of the wrong size."""


class IndexOutOfRange(MerkleError):
    """A leaf index or tree size is outside the tree."""


class RootMismatch(MerkleError):
    """The root computed from a proof differs from the expected root."""


class InconsistentTrees(MerkleError):
    """A consistency proof does not connect the old root to the new root."""


def hash_leaf(leaf: bytes) -> bytes:
    """RFC 6962 §2.1: leaf hash = SHA-256(0x00 || leaf)."""
    return _sha256(b"\x00" + leaf).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: interior node hash = SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """RFC 6962 §2.1: the hash of an empty list is the hash of an empty string."""
    return _sha256(b"").digest()


def root_from_leaf_hashes(level: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a tree whose leaf hashes are given.

    Level by level: pairs are hashed left to right and a lone right-most node is promoted
    unchanged, which yields exactly the RFC 6962 split-at-largest-power-of-two tree. The
    pairing runs as one comprehension over `zip(it, it)` per level, because at a million
    leaves the interpreter overhead per hash, not SHA-256, is what separates us from the
    bare-hashlib floor (benchmarks/core.py).
    """
    if not level:
        return empty_root()
    sha256 = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        pairs = iter(level)
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes of `leaves`, in order."""
    sha256 = _sha256
    return [sha256(b"\x00" + leaf).digest() for leaf in leaves]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash of `leaves` (raw leaf bytes, in order)."""
    return root_from_leaf_hashes(leaf_hashes(leaves))


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root_from_leaf_hashes(list(hashes[lo:hi]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 §2.1.1 audit path PATH(index, D[n]) for the leaf at `index`."""
    n = len(leaves)
    if not 0 <= index < n:
        raise IndexOutOfRange(f"leaf index {index} outside tree of size {n}")
    hashes = leaf_hashes(leaves)
    return inclusion_path(lambda lo, hi: _subtree_root(hashes, lo, hi), index, n)


SubtreeRoot = Callable[[int, int], bytes]
"""MTH(D[lo:hi]) for the ranges a proof needs; lets proofs come from stored tiles."""


def inclusion_path(subtree_root: SubtreeRoot, index: int, size: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(index, D[size]), asking `subtree_root` for each sibling hash.

    Only O(log size) subtree roots are requested, so a log stored as tiles
    (`tasks.tlog.tiles`) can prove inclusion without holding every leaf.
    """
    if not 0 <= index < size:
        raise IndexOutOfRange(f"leaf index {index} outside tree of size {size}")
    return _path(subtree_root, index, 0, size)


def _path(subtree_root: SubtreeRoot, m: int, lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(subtree_root, m, lo, lo + k), subtree_root(lo + k, hi)]
    return [*_path(subtree_root, m - k, lo + k, hi), subtree_root(lo, lo + k)]


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by an audit path (no comparison)."""
    if not 0 <= index < size:
        raise IndexOutOfRange(f"leaf index {index} outside tree of size {size}")
    _check_hashes(proof)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProofShape("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofShape("audit path is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` (its own bytes, not its hash) sits at `index` of the tree `root`.

    Raises `IndexOutOfRange`, `InvalidProofShape` or `RootMismatch`.
    """
    computed = root_from_inclusion_proof(hash_leaf(leaf), index, size, proof)
    if computed != root:
        raise RootMismatch(f"computed root {computed.hex()} != expected {bytes(root).hex()}")


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 6962 §2.1.2 consistency proof PROOF(old_size, D[n])."""
    hashes = leaf_hashes(leaves)
    return consistency_path(lambda lo, hi: _subtree_root(hashes, lo, hi), old_size, len(leaves))


def consistency_path(subtree_root: SubtreeRoot, old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(old_size, D[new_size]) from `subtree_root` (see `inclusion_path`)."""
    if not 0 <= old_size <= new_size:
        raise IndexOutOfRange(f"old size {old_size} outside tree of size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    return _subproof(subtree_root, old_size, 0, new_size, True)


def _subproof(subtree_root: SubtreeRoot, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [subtree_root(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(subtree_root, m, lo, lo + k, complete), subtree_root(lo + k, hi)]
    return [*_subproof(subtree_root, m - k, lo + k, hi, False), subtree_root(lo, lo + k)]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: check that the tree `old_root` is a prefix of the tree `new_root`.

    Raises `IndexOutOfRange`, `InvalidProofShape` or `InconsistentTrees`.
    """
    if not 0 <= old_size <= new_size:
        raise IndexOutOfRange(f"old size {old_size} > new size {new_size}")
    _check_hashes(proof)
    if old_size == new_size:
        if proof:
            raise InvalidProofShape("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise InconsistentTrees("equal sizes but different roots")
        return
    if old_size == 0:
        if proof:
            raise InvalidProofShape("a proof from the empty tree must be empty")
        return
    if not proof:
        raise InvalidProofShape("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a complete subtree: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProofShape("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofShape("consistency proof is too short")
    if fr != old_root:
        raise InconsistentTrees(
            f"proof gives old root {fr.hex()}, expected {bytes(old_root).hex()}"
        )
    if sr != new_root:
        raise InconsistentTrees(
            f"proof gives new root {sr.hex()}, expected {bytes(new_root).hex()}"
        )


def _check_hashes(proof: Sequence[bytes]) -> None:
    for h in proof:
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
            raise InvalidProofShape("every proof element must be a 32-byte hash")
