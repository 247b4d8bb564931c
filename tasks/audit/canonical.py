"""(c) canonical serialization: the payload re-serializes to the anchored Merkle leaves.

Leaves are the RFC 8785 bytes of each record, in strictly ascending order, one per
identity, all inside the window; their RFC 6962 root must equal the checkpoint's.
"""

from __future__ import annotations

from typing import Any

from tasks.audit.core import FAIL, NOT_CHECKABLE, CheckResult
from tasks.audit.evidence import RevisionInputs
from tasks.merkle import merkle_root
from tasks.payload import PayloadError, decode_payload
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowKey


def check_canonical(
    key: WindowKey, inp: RevisionInputs
) -> tuple[CheckResult, list[Observation] | None]:
    """Decode the payload and rebuild the Merkle leaves; return the records if decodable."""
    res = CheckResult("canonical")
    cp = inp.checkpoint
    if cp is None or inp.payload is None:
        res.add(NOT_CHECKABLE, "input_missing", "payload or checkpoint unavailable")
        return res, None
    try:
        records = decode_payload(inp.payload)
    except PayloadError as exc:
        res.add(FAIL, "payload_undecodable", str(exc))
        return res, None
    leaves = [canonical_bytes(r) for r in records]
    for i in range(1, len(leaves)):
        if leaves[i - 1] >= leaves[i]:
            res.add(
                FAIL,
                "not_canonical_order",
                f"rows {i - 1} and {i} are not in strictly ascending canonical order",
            )
            break
    seen: set[tuple[str, Any]] = set()
    for i, r in enumerate(records):
        if not key.contains(r.observed_at) or r.station_id != key.station_id:
            res.add(
                FAIL,
                "record_outside_window",
                f"row {i} ({r.station_id} {r.observed_at:%FT%TZ}) is outside {key.window_id}",
            )
            break
        if r.key in seen:
            res.add(
                FAIL, "duplicate_identity", f"row {i} repeats {r.station_id} {r.observed_at:%FT%TZ}"
            )
            break
        seen.add(r.key)
    root = merkle_root(leaves).hex()
    want = cp["merkle"]
    if len(leaves) != want["size"]:
        res.add(
            FAIL,
            "leaf_count_mismatch",
            f"payload has {len(leaves)} records, checkpoint says {want['size']}",
        )
    if root != want["root"]:
        res.add(
            FAIL,
            "merkle_root_mismatch",
            f"payload records hash to {root}, checkpoint says {want['root']}",
        )
    return res, records
