"""(b) payload integrity: the stored payload object is byte-for-byte the anchored one."""

from __future__ import annotations

import hashlib

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, CheckResult
from tasks.audit.evidence import RevisionInputs


def check_payload(inp: RevisionInputs) -> CheckResult:
    """SHA-256 and size of the stored payload object equal the checkpoint's."""
    res = CheckResult("payload")
    cp = inp.checkpoint
    if cp is None:
        res.add(NOT_CHECKABLE, "checkpoint_missing", "no checkpoint to compare with")
        return res
    if inp.payload is None:
        res.add(FAIL, "payload_missing", f"payload {inp.payload_key}: {inp.payload_problem}")
        return res
    want = cp["payload"]
    size = len(inp.payload)
    sha = hashlib.sha256(inp.payload).hexdigest()
    if size != want["size"]:
        res.add(
            FAIL,
            "payload_size_mismatch",
            f"payload has {size} bytes, checkpoint says {want['size']}",
        )
    if sha != want["sha256"]:
        res.add(
            FAIL,
            "payload_sha256_mismatch",
            f"payload SHA-256 {sha}, checkpoint says {want['sha256']}",
        )
    if inp.payload_uri is not None and want["uri"] != inp.payload_uri:
        res.add(
            INFO, "payload_uri_differs", f"checkpoint names {want['uri']}, read {inp.payload_uri}"
        )
    return res
