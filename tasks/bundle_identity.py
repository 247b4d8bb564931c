"""Offline check that a bundle's ledger references name the pinned writer.

A ledger reference's locator is not covered by any hash in a bundle, and every chain here
is writable by third parties: a second EVM account calls the same contract, another
address publishes to the MultiChain stream, anyone pays for an OP_RETURN. A bundle whose
anchored head (or, in v1, batch/window entry) points at such a foreign entry must not
verify, even offline: the trust policy says who the operator is, so the verifier compares
the locator's writer with it before printing the online step (docs/audit.md, "threat
model"). A locator can still lie about its writer; the online step (`verify-proof
--online`, which reads the referenced entry through the pinned ledger) catches that.

`docs/verify_bundle.py` re-implements `check_ref_identity` with the standard library.
"""

from __future__ import annotations

from typing import Any

from tasks.proof_bundle import ProofBundleError


def bundle_refs(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The ledger references a (verified-shape) bundle relies on, v1 or v2."""
    if bundle.get("schema") == "streamnotary.proof-bundle/2":
        refs = [bundle["anchor"]["ref"]]
        window = bundle["anchor"].get("window")
        if isinstance(window, dict) and isinstance(window.get("ref"), dict):
            refs.append(window["ref"])
        return refs
    ledger = bundle["ledger"]
    return [ledger["batch"]["ref"]] + ([ledger["window"]["ref"]] if ledger["window"] else [])


def check_ref_identity(ref: dict[str, Any], identity: dict[str, Any]) -> str:
    """Raise `ProofBundleError` unless `ref` is an entry of the pinned ledger by its pinned
    writer, as far as the locator tells; return the step that passed."""
    backend = identity.get("backend")
    key = ref.get("key")
    if ref.get("backend") != backend:
        raise ProofBundleError(
            f"ledger entry {key} is on a {ref.get('backend')} ledger, not on the pinned "
            f"{backend} ledger"
        )
    loc = ref.get("locator")
    if not isinstance(loc, dict):
        raise ProofBundleError(f"ledger entry {key} has no locator")
    if backend == "evm":
        writer = str(loc.get("sender", "")).lower()
        if loc.get("chain_id") != identity["chain_id"]:
            raise ProofBundleError(f"ledger entry {key} is on chain id {loc.get('chain_id')}")
        if str(loc.get("contract", "")).lower() != identity["contract"].lower():
            raise ProofBundleError(f"ledger entry {key} is an event of another contract")
        if writer != identity["operator"].lower():
            raise ProofBundleError(
                f"ledger entry {key} was anchored by {loc.get('sender')}, not by the pinned "
                f"operator {identity['operator']}"
            )
        return f"ledger entry {key} names the pinned contract and operator {identity['operator']}"
    if backend == "multichain":
        if loc.get("stream") != identity["stream"]:
            raise ProofBundleError(f"ledger entry {key} is in stream {loc.get('stream')}")
        if loc.get("publisher") not in identity["publishers"]:
            raise ProofBundleError(
                f"ledger entry {key} was published by {loc.get('publisher')}, not by a pinned "
                f"publisher {sorted(identity['publishers'])}"
            )
        return f"ledger entry {key} names the pinned stream and publisher {loc['publisher']}"
    if backend == "bitcoin":
        if loc.get("address") != identity["operator_address"]:
            raise ProofBundleError(
                f"ledger entry {key} is paid by {loc.get('address')}, not by the pinned "
                f"operator {identity['operator_address']}"
            )
        return f"ledger entry {key} names the pinned operator address"
    return f"ledger entry {key} is on the pinned {backend} ledger (its writer is checked online)"
