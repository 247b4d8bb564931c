"""The anchor log's pure code against the formats' published examples, byte for byte.

Vectors:
* golang.org/x/mod/sumdb/note package documentation (the reference implementation of
  C2SP signed-note): the PeterNeumann signer/verifier keys and signed note, and the
  EnochRoot co-signature;
* C2SP signed-note.md worked example (commit d4c16da, ``example.com/foo``);
* C2SP tlog-checkpoint.md example body and tlog-tiles.md path and partial-tile examples.
"""

from __future__ import annotations

import random

import pytest

from tasks import merkle
from tasks.tlog.checkpoint import (
    CheckpointSignatureError,
    LogCheckpoint,
    MalformedCheckpoint,
    OriginMismatch,
    open_checkpoint,
    sign_checkpoint,
)
from tasks.tlog.entries import LogEntryError, entry_bytes, entry_order, parse_entry, run_entry
from tasks.tlog.note import (
    EM_DASH,
    InvalidSignature,
    MalformedKey,
    MalformedNote,
    Signer,
    UnverifiedNote,
    Verifier,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from tasks.tlog.tiles import (
    EdgeMismatch,
    EntryTooLarge,
    MalformedBundle,
    MemoryTiles,
    TileEdge,
    TreeView,
    append_entries,
    decode_bundle,
    decode_tile,
    encode_bundle,
    encode_index,
    entries_path,
    partial_tiles,
    tile_path,
)

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM_DASH} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM_DASH} EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM_DASH} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()
CHECKPOINT_EXAMPLE = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    f"{EM_DASH} example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()


# -- signed-note ------------------------------------------------------------------------


def test_go_reference_keys_and_note_are_reproduced_byte_for_byte() -> None:
    signer = Signer.from_key(GO_SKEY)
    assert signer.encode() == GO_SKEY
    assert signer.verifier().encode() == GO_VKEY
    assert f"{signer.key_id:08x}" == "c74f20a3"
    assert sign_note(GO_TEXT, [signer]) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_go_reference_doubly_signed_note_verifies_with_either_key() -> None:
    data = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    peter, enoch = Verifier.from_key(GO_VKEY), Verifier.from_key(ENOCH_VKEY)
    assert [s.name for s in open_note(data, [peter]).signatures] == ["PeterNeumann"]
    assert [s.name for s in open_note(data, [enoch]).signatures] == ["EnochRoot"]
    assert len(open_note(data, [peter, enoch]).signatures) == 2
    # re-serialising the parsed signatures gives the same bytes
    note = parse_note(data)
    assert sign_note(note.text, [], existing=note.signatures) == data


def test_c2sp_signed_note_spec_example_verifies() -> None:
    verifier = Verifier.from_key(SPEC_VKEY)
    assert verifier.key_id == 0x530D903A == key_id("example.com/foo", verifier.public_key)
    assert verifier.encode() == SPEC_VKEY
    note = open_note(SPEC_NOTE, [verifier])
    assert note.text == "This is an example message.\n"
    assert sign_note(note.text, [], existing=note.signatures) == SPEC_NOTE


def test_tampered_note_is_rejected_with_named_errors() -> None:
    peter = Verifier.from_key(GO_VKEY)
    good = (GO_TEXT + "\n" + PETER_SIG).encode()
    with pytest.raises(InvalidSignature):
        open_note(good.replace(b"cryptography", b"cryptographY"), [peter])
    with pytest.raises(UnverifiedNote):
        open_note(good, [Verifier.from_key(ENOCH_VKEY)])
    with pytest.raises(MalformedNote):
        open_note(good.replace(b"\n\n", b"\n"), [peter])
    with pytest.raises(MalformedNote):
        open_note(good.replace(b"problem,", b"problem\x1b[2J"), [peter])
    with pytest.raises(MalformedNote):
        sign_note("no final newline", [Signer.from_key(GO_SKEY)])


@pytest.mark.parametrize(
    "bad",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # wrong key ID
        GO_VKEY.replace("+ARpc", "+ZRpc"),  # unknown algorithm
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        GO_VKEY[:-4],  # truncated material
        "PeterNeumann+c74f20a3",
    ],
)
def test_malformed_verifier_keys_are_rejected(bad: str) -> None:
    with pytest.raises(MalformedKey):
        Verifier.from_key(bad)


def test_signer_key_with_wrong_id_is_rejected_and_repr_hides_the_seed() -> None:
    with pytest.raises(MalformedKey):
        Signer.from_key(GO_SKEY.replace("c74f20a3", "00000000"))
    with pytest.raises(MalformedKey):
        Signer.from_key(GO_SKEY.removeprefix("PRIVATE+KEY+"))
    signer = Signer.from_key(GO_SKEY)
    assert "AYEKFALV" not in repr(signer) and signer.seed.hex() not in repr(signer)


# -- tlog-checkpoint --------------------------------------------------------------------


def test_c2sp_checkpoint_example_parses_and_reformats_exactly() -> None:
    note = parse_note(CHECKPOINT_EXAMPLE)
    cp = LogCheckpoint.parse(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.text() == note.text
    assert note.signatures[0].name == cp.origin  # the log signs under its origin


@pytest.mark.parametrize(
    "text",
    [
        "origin\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
        "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2\n",  # not base64 of 32 bytes
        "origin\n12\n",  # too few lines
        "origin\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\nx\n",  # empty extension
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(text: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        LogCheckpoint.parse(text)


def test_signed_checkpoint_verifies_with_the_origin_key_only() -> None:
    signer = Signer.from_key(GO_SKEY)
    cp = LogCheckpoint("streamnotary.example/dwd", 5, merkle.merkle_root([b"a", b"b"]))
    data = sign_checkpoint(cp, signer)
    verifier = signer.named(cp.origin).verifier()
    assert open_checkpoint(data, verifier)[0] == cp
    assert data.decode().startswith(cp.text() + "\n" + EM_DASH + " streamnotary.example/dwd ")
    with pytest.raises(OriginMismatch):
        open_checkpoint(data, verifier, origin="streamnotary.example/other")
    with pytest.raises(CheckpointSignatureError):
        open_checkpoint(data, Verifier.from_key(GO_VKEY))
    forged = data.replace(b"\n5\n", b"\n6\n")
    with pytest.raises(CheckpointSignatureError):
        open_checkpoint(forged, verifier)


# -- tlog-tiles -------------------------------------------------------------------------


def test_tile_paths_follow_the_c2sp_examples() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 5, 17) == "tile/1/005.p/17"
    assert entries_path(1000, 3) == "tile/entries/x001/000.p/3"
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    # level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17,
    # and one partial level 2 tile of width 1"; size 256: a partial level 1 tile of width 1
    assert partial_tiles(70_000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert partial_tiles(256) == [(1, 0, 1)]
    assert partial_tiles(0) == []


def test_bundles_round_trip_and_bound_entry_size() -> None:
    entries = [b"", b"a", b"x" * 300]
    data = encode_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert decode_bundle(data, 3) == entries
    with pytest.raises(MalformedBundle):
        decode_bundle(data[:-1])
    with pytest.raises(EntryTooLarge):
        encode_bundle([b"x" * 65_536])


def test_appending_in_batches_matches_rfc6962_roots_and_proofs() -> None:
    """Tiles built append by append give the same roots and proofs as tasks.merkle."""
    rng = random.Random(8)
    leaves = [f"entry {i}".encode() for i in range(66_140)]
    store: dict[str, bytes] = {}
    edge = TileEdge.empty()
    roots = {0: merkle.empty_root()}
    for batch in [1, 2, 253, 1, 256, 512, 3, 65_000, 10, 1, 100, 1]:
        if edge.size + batch > len(leaves):
            break
        result = append_entries(edge, leaves[edge.size : edge.size + batch])
        for path, data in result.objects.items():
            assert store.setdefault(path, data) == data  # tiles are write-once
        old, edge = edge, result.edge
        roots[edge.size] = result.root
        view = TreeView(MemoryTiles(store), edge.size)
        assert view.root() == result.root
        merkle.verify_consistency(
            old.size, edge.size, roots[old.size], result.root, view.consistency_proof(old.size)
        )
        edge.check(result.root)
    size = edge.size
    assert roots[size] == merkle.merkle_root(leaves[:size])
    view = TreeView(MemoryTiles(store), size)
    for index in [0, 1, 255, 256, 65_535, size - 1, *rng.sample(range(size), 20)]:
        merkle.verify_inclusion(
            leaves[index], index, size, view.inclusion_proof(index), roots[size]
        )
    assert view.inclusion_proof(257) == merkle.inclusion_proof(leaves[:size], 257)
    for old in [1, 3, 256, 257, 66_000 - 99, *rng.sample(range(1, size), 5)]:
        proof = view.consistency_proof(old)
        merkle.verify_consistency(old, size, merkle.merkle_root(leaves[:old]), roots[size], proof)
    assert view.consistency_proof(1027) == merkle.consistency_proof(leaves[:size], 1027)
    full = [decode_bundle(store[entries_path(i)]) for i in range(size // 256)]
    assert [e for b in full for e in b] == leaves[: 256 * (size // 256)]
    assert decode_tile(store[tile_path(0, 0)], 256)[0] == merkle.hash_leaf(leaves[0])


def test_edge_that_does_not_match_the_checkpoint_is_rejected() -> None:
    result = append_entries(TileEdge.empty(), [b"a", b"b", b"c"])
    with pytest.raises(EdgeMismatch):
        result.edge.check(merkle.merkle_root([b"a", b"b", b"X"]))


# -- entries ----------------------------------------------------------------------------


def test_entries_are_canonical_ordered_and_bounded() -> None:
    run = run_entry(
        topic="t",
        run=1,
        read={1: (0, 5), 0: (0, 3)},
        quarantined={0: [2]},
        unattributable={},
        held_open={},
        cursor_digest="00" * 32,
        anchored_at="2026-12-01T00:00:00Z",
    )
    assert list(run["read"]) == ["0", "1"] and run["unattributable"] == {}
    data = entry_bytes(run)
    assert parse_entry(data) == run
    with pytest.raises(LogEntryError):
        parse_entry(data.replace(b'{"anchored_at"', b'{ "anchored_at"'))
    with pytest.raises(LogEntryError):
        entry_order([run, run])
    huge = {**run, "quarantined": {"0": list(range(20_000))}}
    with pytest.raises(EntryTooLarge):
        entry_bytes(huge)
