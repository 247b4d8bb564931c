"""Proof bundles (`streamnotary.proof-bundle/1`): one record, provable without the others.

A bundle carries everything needed to check, offline, that one observation is part of an
anchored window: the record's canonical JSON, its RFC 6962 audit path to the window's
Merkle root, the checkpoint (whose digest the batch tree commits to), the receipt's
batch inclusion proof, and the ledger entries with their references. Verification
recomputes every hash; the only step left for the verifier to do online is to look the
named ledger entry up and compare its digest (the bundle says which key and digest).

`docs/verify_bundle.py` re-implements `verify_bundle` with the standard library only, so an
outsider needs nothing from us to check a bundle. JSON Schema:
docs/schemas/proof_bundle.schema.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage import layout
from tasks.batch import verify_batch_proof
from tasks.canonical import (
    CanonicalizationError,
    canonical_digest,
    canonical_json,
    parse_document,
)
from tasks.checkpoint import CheckpointError, checkpoint_digest, validate_checkpoint
from tasks.merkle import MerkleError, inclusion_proof, verify_inclusion
from tasks.record import RecordRejected, canonical_bytes, from_json_value
from tasks.window import WindowKey, WindowSpecError

BUNDLE_SCHEMA = "streamnotary.proof-bundle/1"


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (\\n, \\x1b, \\u2028 ...).

    Bundles are hostile input: nothing they carry may reach a terminal as a control or
    escape sequence (a forged "VERIFIED" line, a cleared screen). Both verifiers print
    only what passed through this.
    """
    return "".join(
        ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


class ProofBundleError(ValueError):
    """The bundle does not prove what it claims; the message names the failing step."""


@dataclass(frozen=True, slots=True)
class LedgerEvidence:
    """A ledger entry as read when the bundle was made: reference (JSON) and body."""

    ref: dict[str, Any]
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "body": self.body}


def make_bundle(
    *,
    leaves: Sequence[bytes],
    index: int,
    checkpoint: dict[str, Any],
    receipt: dict[str, Any],
    batch_entry: LedgerEvidence,
    window_entry: LedgerEvidence | None,
) -> dict[str, Any]:
    """Assemble the bundle of the record at `index` of a window's canonical leaves.

    The caller has already checked that `leaves` hash to the checkpoint's root (the
    audit's canonical check); this is re-verified here before the bundle is returned, so
    a bundle that leaves this function always verifies.
    """
    bundle = {
        "schema": BUNDLE_SCHEMA,
        "record": leaves[index].decode("utf-8"),
        "leaf_index": index,
        "tree_size": len(leaves),
        "audit_path": [h.hex() for h in inclusion_proof(leaves, index)],
        "checkpoint": checkpoint,
        "checkpoint_digest": checkpoint_digest(checkpoint),
        "batch": {k: receipt["batch"][k] for k in ("key", "root", "size", "index", "proof")},
        "ledger": {
            "batch": batch_entry.to_json(),
            "window": window_entry.to_json() if window_entry is not None else None,
        },
    }
    verify_bundle(bundle)
    return bundle


def validate_bundle_schema(bundle: Any) -> None:
    """Raise `ProofBundleError` unless `bundle` conforms to its schema (v1 or v2)."""
    name = (
        "proof_bundle_v2.schema.json"
        if isinstance(bundle, dict) and bundle.get("schema") == "streamnotary.proof-bundle/2"
        else "proof_bundle.schema.json"
    )
    verify_schema(bundle, name)


def verify_schema(bundle: Any, schema_file: str) -> None:
    """Raise `ProofBundleError` unless `bundle` conforms to `schema_file` (never raises else)."""
    from tasks.checkpoint import schema_validator

    try:
        error = next(iter(schema_validator(schema_file).iter_errors(bundle)), None)
    except RecursionError:
        raise ProofBundleError("bundle is nested too deeply") from None
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        raise ProofBundleError(f"bundle invalid at /{path}: {error.message}"[:500])


def verify_record(bundle: dict[str, Any]) -> tuple[list[str], WindowKey]:
    """Steps 1-2, shared by v1 and v2: the record is canonical, in its window, and its audit
    path leads to the checkpoint's Merkle root. Returns (steps, window)."""
    steps: list[str] = []
    cp = bundle["checkpoint"]
    try:
        validate_checkpoint(cp)
    except CheckpointError as exc:
        raise ProofBundleError(str(exc)) from exc

    # 1. the record is canonical and belongs to the window
    try:
        record_bytes = bundle["record"].encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") has no UTF-8 bytes
        raise ProofBundleError(f"record is not valid Unicode text: {exc}") from exc
    try:
        value = parse_document(record_bytes)
        if canonical_json(value) != record_bytes:
            raise ProofBundleError("record is not in canonical (RFC 8785) form")
        obs = from_json_value(value)
    except (ValueError, CanonicalizationError, RecursionError) as exc:
        if isinstance(exc, ProofBundleError):
            raise
        what = exc.reason if isinstance(exc, RecordRejected) else "bad_json"
        raise ProofBundleError(f"record is not a valid observation ({what}): {exc}") from exc
    if canonical_bytes(obs) != record_bytes:
        raise ProofBundleError("record bytes differ from its canonical encoding")
    try:
        key = WindowKey.parse(cp["window"]["id"])
    except WindowSpecError as exc:
        raise ProofBundleError(str(exc)) from exc
    derived = {
        "station_id": key.station_id,
        "start": f"{key.start:%Y-%m-%dT%H:%M:%SZ}",
        "end": f"{key.end:%Y-%m-%dT%H:%M:%SZ}",
        "size_seconds": key.size_seconds,
    }
    if any(cp["window"][name] != value for name, value in derived.items()):
        raise ProofBundleError(f"checkpoint window fields contradict its id {key.window_id}")
    if obs.station_id != key.station_id or not key.contains(obs.observed_at):
        raise ProofBundleError(f"record {bundle['record']} is outside window {key.window_id}")
    steps.append(f"record is canonical and falls in window {key.window_id}")

    # 2. record -> window Merkle root
    if bundle["tree_size"] != cp["merkle"]["size"]:
        raise ProofBundleError(
            f"tree size {bundle['tree_size']} differs from the checkpoint's {cp['merkle']['size']}"
        )
    try:
        verify_inclusion(
            record_bytes,
            bundle["leaf_index"],
            bundle["tree_size"],
            [bytes.fromhex(h) for h in bundle["audit_path"]],
            bytes.fromhex(cp["merkle"]["root"]),
        )
    except (MerkleError, ValueError) as exc:
        raise ProofBundleError(f"record is not in the window's Merkle tree: {exc}") from exc
    steps.append(
        f"leaf {bundle['leaf_index']} of {bundle['tree_size']} hashes to window root "
        f"{cp['merkle']['root']}"
    )

    return steps, key


def verify_bundle(
    bundle: dict[str, Any],
    trust: tuple[str, Any] | None = None,
    ledger_identity: dict[str, Any] | None = None,
) -> list[str]:
    """Check every hash in the bundle; return the steps that passed, in order.

    v2 bundles (`tasks.proof_bundle_v2`) need `trust` = (origin, pinned Verifier). For v1
    the last step names the ledger lookup that remains to be done online (the bundle can
    prove that *this* entry commits to the record, not that the ledger holds it). With the
    trust policy's `ledger_identity`, every ledger reference must also name the pinned
    ledger and writer (`tasks.bundle_identity`): a bundle built on a third party's entry
    is rejected offline.
    """
    steps = _verify_hashes(bundle, trust)
    if ledger_identity is not None:
        from tasks.bundle_identity import bundle_refs, check_ref_identity

        steps += [check_ref_identity(ref, ledger_identity) for ref in bundle_refs(bundle)]
    return steps


def _verify_hashes(bundle: dict[str, Any], trust: tuple[str, Any] | None) -> list[str]:
    if isinstance(bundle, dict) and bundle.get("schema") == "streamnotary.proof-bundle/2":
        from tasks.proof_bundle_v2 import verify_bundle_v2

        if trust is None:
            raise ProofBundleError("a v2 bundle is verified against a pinned log key (--trust)")
        try:
            return verify_bundle_v2(bundle, trust[1], trust[0])
        except CanonicalizationError as exc:  # a number or string RFC 8785 cannot write
            raise ProofBundleError(f"bundle has no RFC 8785 form: {exc}") from exc
    validate_bundle_schema(bundle)
    steps, key = verify_record(bundle)
    cp = bundle["checkpoint"]

    # 3. checkpoint digest -> batch root
    try:
        digest = checkpoint_digest(cp)
    except CanonicalizationError as exc:  # e.g. an integer beyond I-JSON's ±(2**53-1)
        raise ProofBundleError(f"checkpoint has no RFC 8785 form: {exc}") from exc
    if digest != bundle["checkpoint_digest"]:
        raise ProofBundleError(
            f"checkpoint digests to {digest}, bundle says {bundle['checkpoint_digest']}"
        )
    batch = bundle["batch"]
    try:
        verify_batch_proof(digest, batch)
    except (MerkleError, ValueError) as exc:
        raise ProofBundleError(f"checkpoint is not in batch {batch['root']}: {exc}") from exc
    steps.append(f"checkpoint {digest} is leaf {batch['index']} of batch root {batch['root']}")

    # 4. ledger entries commit to the batch root (and to the window revision)
    topic = cp["source"]["topic"]
    _verify_entry(
        bundle["ledger"]["batch"],
        layout.batch_entry_key(topic, batch["root"]),
        {"kind": "batch", "topic": topic, "root": batch["root"], "size": batch["size"]},
    )
    pending = [bundle["ledger"]["batch"]["ref"]]
    window = bundle["ledger"]["window"]
    if window is not None:
        _verify_entry(
            window,
            layout.window_entry_key(topic, key, cp["revision"]),
            {
                "kind": "window",
                "topic": topic,
                "window_id": key.window_id,
                "station_id": key.station_id,
                "revision": cp["revision"],
                "checkpoint_digest": digest,
                "merkle_root": cp["merkle"]["root"],
                "batch_root": batch["root"],
            },
        )
        pending.append(window["ref"])
    steps.append("ledger entry bodies match their digests and commit to the batch root")
    steps.append(
        f"proved: {key.window_id} revision {cp['revision']} (v1 bundle: batch anchor, no signed "
        "log; whether a later revision supersedes it is not proven)"
    )
    for ref in pending:
        steps.append(
            f"to finish online: on the {ref['backend']} ledger, entry {ref['key']} "
            f"must have digest {ref['digest']} "
            f"(locator {json.dumps(ref['locator'], sort_keys=True)})"
        )
    return steps


def _verify_entry(evidence: dict[str, Any], key: str, expected: dict[str, Any]) -> None:
    ref, body = evidence["ref"], evidence["body"]
    if ref["key"] != key:
        raise ProofBundleError(f"ledger reference names key {ref['key']}, expected {key}")
    if body != expected:
        raise ProofBundleError(f"ledger entry {key} does not commit to this checkpoint/batch")
    try:
        body_digest = canonical_digest(body)
    except CanonicalizationError as exc:
        raise ProofBundleError(f"ledger entry {key}: body has no RFC 8785 form: {exc}") from exc
    if body_digest != ref["digest"]:
        raise ProofBundleError(f"ledger entry {key}: body does not hash to the referenced digest")
