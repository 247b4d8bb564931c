"""Proof bundles v2 (`streamnotary.proof-bundle/2`): one record, proven through the signed log.

The chain, each link checked offline:

    record --RFC 6962 audit path--> window Merkle root (checkpoint.merkle.root)
    checkpoint --SHA-256 of RFC 8785 bytes--> checkpoint digest
    digest --named by--> the window's log entry (streamnotary.log_entry/v1)
    log entry --RFC 9162 §2.1.3 inclusion proof--> log root at the signed size
    signed checkpoint (C2SP tlog-checkpoint + signed-note, Ed25519) --pinned key--> that root
    anchored head (ledger entry head/<topic>/<size>) --RFC 9162 §2.1.4 consistency proof-->
        the signed head, when the anchored head is newer

The verifier key and origin come from the auditor's trust policy (`--trust`), never from
the bundle. What remains online is the ledger lookup of the anchored head (printed) and,
with `verify-proof --online`, whether a newer revision of the window was logged since.
`docs/verify_bundle.py` re-implements this file with the standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tasks.canonical import CanonicalizationError, canonical_digest, canonical_json
from tasks.checkpoint import checkpoint_digest, ranges_of
from tasks.groups import is_scope_of
from tasks.merkle import MerkleError, inclusion_proof, verify_consistency, verify_inclusion
from tasks.proof_bundle import ProofBundleError, verify_record, verify_schema
from tasks.tlog.checkpoint import LogCheckpoint, LogCheckpointError, open_checkpoint
from tasks.tlog.note import NoteError, Verifier

BUNDLE_SCHEMA_V2 = "streamnotary.proof-bundle/2"


def make_bundle_v2(
    *,
    leaves: Sequence[bytes],
    index: int,
    checkpoint: dict[str, Any],
    log_entry: dict[str, Any],
    log_proof: dict[str, Any],
    anchor_ref: dict[str, Any],
    anchor_body: dict[str, Any],
    consistency: Sequence[bytes],
    verifier: Verifier,
) -> dict[str, Any]:
    """Assemble the bundle; it is verified (with the operator's key) before it is returned."""
    bundle = {
        "schema": BUNDLE_SCHEMA_V2,
        "record": leaves[index].decode("utf-8"),
        "leaf_index": index,
        "tree_size": len(leaves),
        "audit_path": [h.hex() for h in inclusion_proof(leaves, index)],
        "checkpoint": checkpoint,
        "checkpoint_digest": checkpoint_digest(checkpoint),
        "log": {
            "origin": log_proof["origin"],
            "entry": log_entry,
            "index": log_proof["index"],
            "size": log_proof["size"],
            "proof": list(log_proof["proof"]),
            "checkpoint": log_proof["checkpoint"],
        },
        "anchor": {
            "ref": anchor_ref,
            "body": anchor_body,
            "consistency": [h.hex() for h in consistency],
        },
    }
    verify_bundle_v2(bundle, verifier, log_proof["origin"])
    return bundle


def verify_bundle_v2(bundle: dict[str, Any], verifier: Verifier, origin: str) -> list[str]:
    """Check every link (module docstring) against the pinned `verifier` and `origin`."""
    verify_schema(bundle, "proof_bundle_v2.schema.json")
    steps, key = verify_record(bundle)
    cp, digest = bundle["checkpoint"], checkpoint_digest(bundle["checkpoint"])
    if digest != bundle["checkpoint_digest"]:
        raise ProofBundleError(f"checkpoint digests to {digest}, bundle says otherwise")
    log, anchor = bundle["log"], bundle["anchor"]
    entry = log["entry"]
    _check_entry(entry, cp, digest)
    steps.append(
        f"checkpoint {digest} is the one log entry {log['index']} names for "
        f"{key.window_id} r{cp['revision']}"
    )
    head = _open_head(log["checkpoint"], verifier, origin)
    if head.size != log["size"]:
        raise ProofBundleError(
            f"signed checkpoint has size {head.size}, proof is for {log['size']}"
        )
    try:
        leaf = canonical_json(entry)
        verify_inclusion(leaf, log["index"], head.size, _hashes(log["proof"]), head.root)
    except (MerkleError, CanonicalizationError, ValueError) as exc:
        raise ProofBundleError(f"log entry is not in the signed log head: {exc}") from exc
    steps.append(
        f"log entry {log['index']} is in the head of size {head.size} signed by "
        f"{verifier.name}+{verifier.key_id:08x} (pinned)"
    )
    topic = cp["source"]["topic"]
    body, ref = anchor["body"], anchor["ref"]
    # a partition group's head names its scope <topic>/<group>; the pinned key binds the group
    if body.get("kind") != "head" or not is_scope_of(topic, str(body.get("topic"))):
        raise ProofBundleError("anchor is not a log head entry of this topic")
    size, root = body.get("size"), body.get("root")
    if type(size) is not int or not isinstance(root, str) or size < head.size:
        raise ProofBundleError("anchored head is malformed or older than the signed head")
    if ref.get("key") != f"head/{body['topic']}/{size}":  # storage.layout.head_entry_key
        raise ProofBundleError(f"anchor reference names key {ref.get('key')!r}")
    if canonical_digest(body) != ref.get("digest"):
        raise ProofBundleError("anchored head body does not hash to the referenced digest")
    try:
        verify_consistency(
            head.size, size, head.root, bytes.fromhex(root), _hashes(anchor["consistency"])
        )
    except (MerkleError, ValueError) as exc:
        raise ProofBundleError(f"signed head is not a prefix of the anchored head: {exc}") from exc
    steps.append(
        f"the signed head is consistent with the anchored head of size {size}"
        + (" (same head)" if size == head.size else f" (consistency proof {head.size} -> {size})")
    )
    steps.append(
        f"proved: {key.window_id} revision {cp['revision']} (checkpoint {digest[:16]}...); "
        "a later revision would supersede it (verify-proof --online checks)"
    )
    steps.append(
        f"to finish online: on the pinned {ref.get('backend')} ledger, entry {ref.get('key')} "
        f"must have digest {ref.get('digest')} "
        f"(locator {json.dumps(ref.get('locator'), sort_keys=True)})"
    )
    return steps


def _hashes(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in values]


def _open_head(note: str, verifier: Verifier, origin: str) -> LogCheckpoint:
    try:
        head, _ = open_checkpoint(note.encode("utf-8"), verifier, origin)
    except (LogCheckpointError, NoteError, UnicodeEncodeError) as exc:
        raise ProofBundleError(
            f"signed checkpoint does not verify with the pinned key: {exc}"
        ) from exc
    return head


def _check_entry(entry: dict[str, Any], cp: dict[str, Any], digest: str) -> None:
    if entry.get("type") != "window":
        raise ProofBundleError("log entry is not a window entry")
    named = (entry.get("topic"), entry.get("window_id"), entry.get("revision"))
    want = (cp["source"]["topic"], cp["window"]["id"], cp["revision"])
    if named != want:
        raise ProofBundleError(f"log entry names {named}, the checkpoint is {want}")
    if entry.get("checkpoint_digest") != digest:
        raise ProofBundleError("log entry names another checkpoint digest")
    stored = {str(p): [[s, e]] for p, (s, e) in ranges_of(cp).items()}
    if entry.get("ranges") != stored:
        raise ProofBundleError("log entry and checkpoint give different offset ranges")
