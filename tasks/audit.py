"""Audit checks of anchored window revisions, on inputs that were already fetched.

The auditor trusts neither the operator nor the pipeline: every figure in a checkpoint is
recomputed from independent evidence (the stored payload bytes, the Kafka log, the
ledger) with the same pure functions the pipeline used (`tasks.window_content.build_window`,
`tasks.payload`, `tasks.aggregates`). This module holds only those comparisons; the
fetching lives in `flows/audit.py`, so that each check can be tested on hand-made inputs
and every verdict is reproducible from the evidence recorded in the report.

Checks, reported separately for every window revision (see docs/audit.md):

    anchored       the checkpoint digest is committed by the ledger
    payload        SHA-256 and size of the stored payload equal the checkpoint's
    canonical      the payload re-serializes to the anchored Merkle leaves and root
    analytics      recomputed aggregates equal the anchored ones
    completeness   re-reading the offset ranges from Kafka reproduces the window
    revisions      the supersedes chain is complete; only the latest revision counts

Verdicts: ``pass``; ``fail`` (evidence contradicts the checkpoint); ``pending`` (anchored
but not yet final on the ledger); ``not_checkable`` (the evidence is gone, e.g. Kafka
retention removed the offsets, or the ledger is unreachable). ``not_checkable`` and
``pending`` are never reported as ``pass``.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.aggregates import window_aggregates
from tasks.batch import verify_batch_proof
from tasks.canonical import canonical_digest
from tasks.checkpoint import CheckpointError, checkpoint_digest, ranges_of, validate_checkpoint
from tasks.merkle import MerkleError, merkle_root
from tasks.message import Classified
from tasks.payload import PayloadError, decode_payload
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowKey
from tasks.window_content import build_window

PASS = "pass"
FAIL = "fail"
PENDING = "pending"
NOT_CHECKABLE = "not_checkable"
INFO = "info"  # a finding severity only: noted, never changes a verdict

VERDICTS = (PASS, PENDING, NOT_CHECKABLE, FAIL)  # in increasing severity
_RANK = {PASS: 0, INFO: 0, PENDING: 1, NOT_CHECKABLE: 2, FAIL: 3}

CHECKS = ("anchored", "payload", "canonical", "analytics", "completeness", "revisions")


def worst(verdicts: Iterable[str]) -> str:
    """The most severe verdict (fail > not_checkable > pending > pass)."""
    out = PASS
    for v in verdicts:
        if _RANK[v] > _RANK[out]:
            out = v
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation of a check; `partition`/`offset` locate it in Kafka when known."""

    severity: str
    code: str
    message: str
    partition: int | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }
        if self.partition is not None:
            out["partition"] = self.partition
        if self.offset is not None:
            out["offset"] = self.offset
        return out


@dataclass(slots=True)
class CheckResult:
    """Outcome of one check of one revision: its verdict is the worst of its findings."""

    name: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return worst(f.severity for f in self.findings)

    def add(self, severity: str, code: str, message: str, **where: int) -> None:
        self.findings.append(Finding(severity, code, message, **where))

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "findings": [f.to_json() for f in self.findings]}


# ---------------------------------------------------------------------------------------
# Inputs (fetched by flows/audit.py)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerObservation:
    """What the ledger returned for one entry key: a fresh reference and the committed body.

    `unavailable` is set when the ledger could not be asked (the check is then
    not_checkable); `error` for any other failure of lookup/read.
    """

    key: str
    ref: Any | None = None  # storage.ledger.base.AnchorRef (kept duck-typed: pure module)
    body: dict[str, Any] | None = None
    error: str | None = None
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class LedgerIntegrity:
    """Result of the ledger's own integrity check (embedded ledger: hash chain)."""

    backend: str
    ok: bool = True
    detail: str = ""
    seq: int | None = None  # the first broken entry, when the backend names it

    def touches(self, ref: Any | None) -> bool:
        """Whether the broken entry is this reference's (or cannot be attributed at all)."""
        if self.ok or ref is None:
            return False
        if self.seq is None:
            return True
        return _locator_seq(ref) == self.seq


def _locator_seq(ref: Any) -> int | None:
    locator = getattr(ref, "locator", None) or {}
    for name in ("seq", "sequence", "row"):
        if isinstance(locator.get(name), int):
            return int(locator[name])
    return None


SEQ_IN_MESSAGE = re.compile(r"\bseq(?:uence)?\s*[=#:]?\s*(\d+)", re.IGNORECASE)


def integrity_from_error(backend: str, exc: BaseException | None) -> LedgerIntegrity:
    """Turn the outcome of `Ledger.verify_integrity()` into a `LedgerIntegrity`."""
    if exc is None:
        return LedgerIntegrity(backend)
    seq = getattr(exc, "seq", None)
    if not isinstance(seq, int):
        m = SEQ_IN_MESSAGE.search(str(exc))
        seq = int(m.group(1)) if m else None
    return LedgerIntegrity(backend, ok=False, detail=str(exc), seq=seq)


@dataclass(slots=True)
class RevisionInputs:
    """The stored documents of one window revision, as fetched (None = absent)."""

    revision: int
    receipt_key: str
    checkpoint_key: str
    payload_key: str
    receipt: dict[str, Any] | None = None
    receipt_problem: str | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_problem: str | None = None
    payload: bytes | None = None
    payload_problem: str | None = None
    payload_uri: str | None = None  # what the store calls payload_key
    batch_entry: LedgerObservation | None = None
    window_entry: LedgerObservation | None = None


@dataclass(frozen=True, slots=True)
class PartitionScan:
    """One bounded read of a partition: offsets [start, end) were read (end = high watermark).

    `low` is the low watermark at read time: offsets below it were removed by retention.
    `error` is set when the read failed (the range is then not checkable).
    """

    partition: int
    start: int
    end: int
    low: int
    error: str | None = None
    messages: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "read_start": self.start,
            "read_end": self.end,
            "low_watermark": self.low,
            "messages": self.messages,
            "error": self.error,
        }


@dataclass(slots=True)
class KafkaView:
    """All messages read for an audit run, classified once and grouped by window."""

    scans: dict[int, PartitionScan]
    by_window: dict[WindowKey, list[Classified]] = field(default_factory=dict)

    @classmethod
    def of(cls, scans: Iterable[PartitionScan], classified: Iterable[Classified]) -> KafkaView:
        groups: dict[WindowKey, list[Classified]] = defaultdict(list)
        for c in classified:
            if c.window is not None:
                groups[c.window].append(c)
        return cls({s.partition: s for s in scans}, dict(groups))


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class RevisionAudit:
    revision: int
    latest: bool
    checkpoint_digest: str | None
    checks: dict[str, CheckResult]

    @property
    def verdict(self) -> str:
        return worst(c.verdict for c in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "latest": self.latest,
            "checkpoint_digest": self.checkpoint_digest,
            "verdict": self.verdict,
            "checks": {name: self.checks[name].to_json() for name in CHECKS if name in self.checks},
        }


@dataclass(slots=True)
class WindowAudit:
    key: WindowKey
    topic: str
    revisions: list[RevisionAudit]
    aggregates: dict[str, Any] | None = None  # of the latest revision's checkpoint

    @property
    def window_id(self) -> str:
        return self.key.window_id

    @property
    def verdict(self) -> str:
        return worst(r.verdict for r in self.revisions)

    @property
    def latest_revision(self) -> int:
        return max(r.revision for r in self.revisions)

    def check_verdict(self, name: str) -> str:
        """Worst verdict of one check over every revision of the window."""
        return worst(r.checks[name].verdict for r in self.revisions if name in r.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_id": self.window_id,
            "station_id": self.key.station_id,
            "start": self.key.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": self.key.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size_seconds": self.key.size_seconds,
            "verdict": self.verdict,
            "latest_revision": self.latest_revision,
            "aggregates": self.aggregates,
            "revisions": [r.to_json() for r in self.revisions],
        }


# ---------------------------------------------------------------------------------------
# (a) anchored
# ---------------------------------------------------------------------------------------


def check_anchored(
    key: WindowKey, topic: str, inp: RevisionInputs, integrity: LedgerIntegrity
) -> tuple[CheckResult, str | None]:
    """Is the stored checkpoint the one the ledger commits to? Returns (result, digest)."""
    res = CheckResult("anchored")
    cp = inp.checkpoint
    digest: str | None = None
    if cp is None:
        res.add(
            FAIL, "checkpoint_missing", f"checkpoint {inp.checkpoint_key}: {inp.checkpoint_problem}"
        )
    else:
        try:
            validate_checkpoint(cp)
            digest = checkpoint_digest(cp)
        except CheckpointError as exc:
            res.add(FAIL, "checkpoint_invalid", f"checkpoint {inp.checkpoint_key}: {exc}")
        if digest is not None:
            named = (cp["window"]["id"], cp["revision"], cp["source"]["topic"])
            if named != (key.window_id, inp.revision, topic):
                res.add(
                    FAIL,
                    "checkpoint_misplaced",
                    f"checkpoint at {inp.checkpoint_key} names {named[0]} r{named[1]} of topic "
                    f"{named[2]!r}",
                )
    rc = inp.receipt
    if rc is None:
        res.add(FAIL, "receipt_missing", f"receipt {inp.receipt_key}: {inp.receipt_problem}")
        return res, digest
    try:
        anchored_digest = str(rc["checkpoint_digest"])
        batch = rc["batch"]
        ledger_refs = rc["ledger"]
        if (rc["window_id"], rc["revision"], rc["topic"]) != (key.window_id, inp.revision, topic):
            res.add(FAIL, "receipt_misplaced", f"receipt at {inp.receipt_key} names another window")
    except (KeyError, TypeError) as exc:
        res.add(FAIL, "receipt_invalid", f"receipt {inp.receipt_key} lacks {exc}")
        return res, digest
    if digest is not None and digest != anchored_digest:
        res.add(
            FAIL,
            "checkpoint_digest_mismatch",
            f"stored checkpoint digests to {digest}, the anchored digest is {anchored_digest} "
            "(the checkpoint was changed after anchoring)",
        )
    try:
        verify_batch_proof(digest or anchored_digest, batch)
    except (MerkleError, KeyError, TypeError, ValueError) as exc:
        res.add(
            FAIL,
            "batch_proof_invalid",
            f"checkpoint digest is not in batch {batch.get('root')}: {exc}",
        )
    batch_root = str(batch.get("root"))
    expected_batch_body = {
        "kind": "batch",
        "topic": topic,
        "root": batch_root,
        "size": batch.get("size"),
    }
    _check_entry(
        res, "batch", inp.batch_entry, expected_batch_body, ledger_refs.get("batch"), integrity
    )
    window_ref = ledger_refs.get("window")
    if window_ref is not None or (
        inp.window_entry is not None and inp.window_entry.ref is not None
    ):
        expected_window_body = {
            "kind": "window",
            "topic": topic,
            "window_id": key.window_id,
            "station_id": key.station_id,
            "revision": inp.revision,
            "checkpoint_digest": anchored_digest,
            "merkle_root": (cp or {}).get("merkle", {}).get("root"),
            "batch_root": batch_root,
        }
        _check_entry(res, "window", inp.window_entry, expected_window_body, window_ref, integrity)
    return res, digest


def _check_entry(
    res: CheckResult,
    kind: str,
    obs: LedgerObservation | None,
    expected: dict[str, Any],
    receipt_ref: dict[str, Any] | None,
    integrity: LedgerIntegrity,
) -> None:
    if obs is None:
        res.add(
            NOT_CHECKABLE, f"{kind}_entry_not_queried", f"the {kind} ledger entry was not looked up"
        )
        return
    if obs.unavailable:
        res.add(
            NOT_CHECKABLE, "ledger_unavailable", f"ledger unreachable for {obs.key}: {obs.error}"
        )
        return
    if obs.error is not None:
        res.add(FAIL, f"{kind}_entry_unreadable", f"{obs.key}: {obs.error}")
        return
    if obs.ref is None or obs.body is None:
        res.add(FAIL, f"{kind}_entry_missing", f"no ledger entry under {obs.key}")
        return
    ref, body = obs.ref, obs.body
    body_digest = canonical_digest(body)
    if body_digest != ref.digest:
        res.add(
            FAIL,
            f"{kind}_entry_body_altered",
            f"ledger entry {obs.key}: stored body digests to {body_digest}, "
            f"entry records {ref.digest}",
        )
    if body != expected:
        diff = sorted(k for k in expected.keys() | body.keys() if body.get(k) != expected.get(k))
        res.add(
            FAIL, f"{kind}_entry_mismatch", f"ledger entry {obs.key} differs in {', '.join(diff)}"
        )
    if receipt_ref is not None and receipt_ref.get("digest") != ref.digest:
        res.add(
            FAIL,
            f"{kind}_receipt_ref_mismatch",
            f"receipt names digest {receipt_ref.get('digest')} for {obs.key}, "
            f"the ledger has {ref.digest}",
        )
    if integrity.touches(ref):
        res.add(
            FAIL,
            "ledger_integrity",
            f"{integrity.backend} ledger integrity broken at this entry: {integrity.detail}",
        )
    if not ref.final:
        res.add(
            PENDING,
            f"{kind}_entry_not_final",
            f"{obs.key} has {ref.confirmations} of {ref.required_confirmations} confirmations",
        )


# ---------------------------------------------------------------------------------------
# (b) payload integrity, (c) canonical serialization, (d) analytics
# ---------------------------------------------------------------------------------------


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


def check_analytics(inp: RevisionInputs, records: Sequence[Observation] | None) -> CheckResult:
    """Recompute the aggregates from the decoded payload records."""
    res = CheckResult("analytics")
    cp = inp.checkpoint
    if cp is None or records is None:
        res.add(NOT_CHECKABLE, "input_missing", "no decodable payload or checkpoint")
        return res
    got = window_aggregates(records)
    want = cp["aggregates"]
    for path in _diff_paths(got, want):
        res.add(
            FAIL,
            "aggregate_mismatch",
            f"{path}: recomputed {_at(got, path)!r}, anchored {_at(want, path)!r}",
        )
    if want.get("records") != cp["counts"]["records"]:
        res.add(FAIL, "record_count_inconsistent", "aggregates.records differs from counts.records")
    return res


def _diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(a.keys() | b.keys()):
            out += _diff_paths(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix or "."]


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


# ---------------------------------------------------------------------------------------
# (e) completeness
# ---------------------------------------------------------------------------------------


def _in_ranges(c: Classified, ranges: dict[int, tuple[int, int]]) -> bool:
    r = ranges.get(c.message.partition)
    return r is not None and r[0] <= c.message.offset < r[1]


def check_completeness(
    key: WindowKey,
    inp: RevisionInputs,
    view: KafkaView,
    *,
    anchored_records: Sequence[Observation] | None,
    latest: bool,
) -> CheckResult:
    """Re-read the checkpoint's offset ranges and rebuild the window with `build_window`.

    `anchored_records` are the payload's records when the canonical check proved them to
    be the anchored ones; they let the check name missing and changed records. For the
    latest revision, messages attributed to the window outside its ranges (late data not
    anchored yet) are reported too.
    """
    res = CheckResult("completeness")
    cp = inp.checkpoint
    if cp is None:
        res.add(NOT_CHECKABLE, "checkpoint_missing", "no checkpoint: offset ranges unknown")
        return res
    ranges = ranges_of(cp)
    unreadable = False
    for p, (lo, hi) in sorted(ranges.items()):
        scan = view.scans.get(p)
        if scan is None:
            res.add(NOT_CHECKABLE, "partition_not_read", f"partition {p} was not read", partition=p)
            unreadable = True
        elif scan.error is not None:
            res.add(
                NOT_CHECKABLE,
                "range_unavailable",
                f"partition {p} [{lo}, {hi}): {scan.error}",
                partition=p,
                offset=lo,
            )
            unreadable = True
        elif lo < scan.start:
            res.add(
                NOT_CHECKABLE,
                "retention_removed",
                f"partition {p} offsets [{lo}, {min(hi, scan.start)}) are gone from Kafka "
                f"(low watermark {scan.low}): this range cannot be re-read",
                partition=p,
                offset=lo,
            )
            unreadable = True
        elif hi > scan.end:
            res.add(
                NOT_CHECKABLE,
                "beyond_high_watermark",
                f"partition {p} ends at {scan.end} but the range reaches {hi} "
                "(topic truncated or recreated)",
                partition=p,
                offset=scan.end,
            )
            unreadable = True
    mine = view.by_window.get(key, [])
    if not unreadable:
        items = [c for c in mine if _in_ranges(c, ranges)]
        content = build_window(key, items)
        _compare_content(res, cp, content, items, anchored_records)
    if latest:
        _late_messages(res, mine, ranges, cp, anchored_records)
    return res


def _compare_content(
    res: CheckResult,
    cp: dict[str, Any],
    content: Any,
    items: Sequence[Classified],
    anchored: Sequence[Observation] | None,
) -> None:
    want_root = cp["merkle"]["root"]
    got_counts = content.counts()
    same = (
        content.root.hex() == want_root
        and len(content.leaves) == cp["merkle"]["size"]
        and got_counts == cp["counts"]
    )
    if content.ranges != ranges_of(cp):
        res.add(
            FAIL,
            "range_bounds_changed",
            f"messages of the window span {content.ranges}, checkpoint ranges are {ranges_of(cp)}",
        )
    if content.aggregates != cp["aggregates"]:
        res.add(
            FAIL, "aggregates_differ", "aggregates rebuilt from Kafka differ from the checkpoint's"
        )
    if same:
        return
    for name, value in got_counts.items():
        if value != cp["counts"][name]:
            res.add(
                FAIL,
                "count_mismatch",
                f"{name}: Kafka gives {value}, checkpoint says {cp['counts'][name]}",
            )
    if content.root.hex() != want_root:
        res.add(
            FAIL,
            "merkle_root_mismatch",
            f"Kafka records hash to {content.root.hex()}, checkpoint says {want_root}",
        )
    if anchored is None:
        res.add(
            INFO, "records_not_named", "payload not verified: differing records cannot be named"
        )
        return
    positions: dict[tuple[str, Any], list[tuple[int, int, bytes]]] = defaultdict(list)
    for c in items:
        if c.record is not None:
            positions[c.record.key].append(
                (c.message.partition, c.message.offset, canonical_bytes(c.record))
            )
    kafka_winner = {r.key: canonical_bytes(r) for r in content.records}
    anchored_bytes = {r.key: canonical_bytes(r) for r in anchored}
    for ident, data in sorted(anchored_bytes.items()):
        if ident not in kafka_winner:
            res.add(
                FAIL,
                "record_missing",
                f"anchored record {data.decode()} is not in the offset ranges",
            )
    for ident, data in sorted(kafka_winner.items()):
        where = [(p, o) for p, o, b in positions[ident] if b == data]
        p, o = where[0] if where else (None, None)
        if ident not in anchored_bytes:
            res.add(
                FAIL,
                "record_extra",
                f"record {data.decode()} is in Kafka but not anchored",
                partition=p,
                offset=o,
            )
        elif anchored_bytes[ident] != data:
            res.add(
                FAIL,
                "record_changed",
                f"Kafka has {data.decode()}, anchored {anchored_bytes[ident].decode()}",
                partition=p,
                offset=o,
            )
    for c in items:
        if c.record is None:
            res.add(
                INFO,
                "rejected_message",
                f"rejected ({c.reason}): {c.detail}",
                partition=c.message.partition,
                offset=c.message.offset,
            )


def _late_messages(
    res: CheckResult,
    mine: Sequence[Classified],
    ranges: dict[int, tuple[int, int]],
    cp: dict[str, Any],
    anchored: Sequence[Observation] | None,
) -> None:
    outside = [c for c in mine if not _in_ranges(c, ranges)]
    if not outside:
        return
    anchored_leaves = {canonical_bytes(r) for r in anchored} if anchored is not None else None
    for c in sorted(outside, key=lambda c: (c.message.partition, c.message.offset)):
        p, o = c.message.partition, c.message.offset
        if (
            c.record is not None
            and anchored_leaves is not None
            and canonical_bytes(c.record) in anchored_leaves
        ):
            res.add(
                INFO,
                "late_duplicate",
                "late message repeats an anchored record exactly",
                partition=p,
                offset=o,
            )
        elif c.record is None:
            res.add(
                FAIL,
                "late_unanchored",
                f"rejected message ({c.reason}) attributed to this window is "
                "outside every anchored range (late data not yet anchored)",
                partition=p,
                offset=o,
            )
        else:
            res.add(
                FAIL,
                "late_unanchored",
                f"record {canonical_bytes(c.record).decode()} attributed to "
                "this window is outside every anchored range (late data not yet anchored)",
                partition=p,
                offset=o,
            )


# ---------------------------------------------------------------------------------------
# (f) revisions
# ---------------------------------------------------------------------------------------


def check_revisions(revisions: Sequence[RevisionInputs]) -> dict[int, CheckResult]:
    """Each revision names its predecessor by digest; numbering has no gaps."""
    by_rev = {r.revision: r for r in revisions}
    latest = max(by_rev)
    out: dict[int, CheckResult] = {}
    for rev in sorted(by_rev):
        res = CheckResult("revisions")
        cp = by_rev[rev].checkpoint
        if rev != latest:
            res.add(INFO, "superseded", f"superseded by r{latest}; only the latest revision counts")
        if cp is None:
            res.add(NOT_CHECKABLE, "checkpoint_missing", "no checkpoint: supersedes link unknown")
            out[rev] = res
            continue
        link = cp.get("supersedes")
        if rev == 0:
            if link is not None:
                res.add(FAIL, "dangling_link", "revision 0 must supersede nothing")
        elif link is None:
            res.add(FAIL, "missing_link", f"r{rev} does not name its predecessor")
        elif link.get("revision") != rev - 1:
            res.add(
                FAIL,
                "revision_gap",
                f"r{rev} supersedes r{link.get('revision')}, expected r{rev - 1}",
            )
        elif rev - 1 not in by_rev or by_rev[rev - 1].checkpoint is None:
            res.add(FAIL, "revision_gap", f"r{rev - 1}, which r{rev} supersedes, is not stored")
        else:
            prev = by_rev[rev - 1].checkpoint
            try:
                prev_digest = checkpoint_digest(prev)
            except Exception as exc:
                prev_digest = f"<{exc}>"
            if link.get("checkpoint_digest") != prev_digest:
                res.add(
                    FAIL,
                    "dangling_link",
                    f"r{rev} supersedes digest {link.get('checkpoint_digest')}, "
                    f"r{rev - 1} digests to {prev_digest}",
                )
            else:
                prev_ranges, cur_ranges = ranges_of(prev), ranges_of(cp)
                for p, (lo, hi) in prev_ranges.items():
                    if p not in cur_ranges or cur_ranges[p][0] > lo or cur_ranges[p][1] < hi:
                        res.add(
                            FAIL,
                            "ranges_shrank",
                            f"r{rev} does not cover r{rev - 1}'s range in partition {p}",
                            partition=p,
                        )
        for missing in sorted(set(range(latest + 1)) - by_rev.keys()):
            if missing < rev:
                res.add(FAIL, "revision_gap", f"r{missing} is missing before r{rev}")
        out[rev] = res
    return out


# ---------------------------------------------------------------------------------------
# One window
# ---------------------------------------------------------------------------------------


def audit_window(
    key: WindowKey,
    topic: str,
    revisions: Sequence[RevisionInputs],
    view: KafkaView,
    integrity: LedgerIntegrity,
) -> WindowAudit:
    """Run every check on every revision of one window."""
    if not revisions:
        raise ValueError(f"{key.window_id}: no revision to audit")
    latest = max(r.revision for r in revisions)
    links = check_revisions(revisions)
    audits: list[RevisionAudit] = []
    for inp in sorted(revisions, key=lambda r: r.revision):
        anchored, digest = check_anchored(key, topic, inp, integrity)
        payload = check_payload(inp)
        canonical, records = check_canonical(key, inp)
        trusted = records if canonical.verdict == PASS else None
        analytics = check_analytics(inp, records)
        completeness = check_completeness(
            key, inp, view, anchored_records=trusted, latest=inp.revision == latest
        )
        checks = {
            "anchored": anchored,
            "payload": payload,
            "canonical": canonical,
            "analytics": analytics,
            "completeness": completeness,
            "revisions": links[inp.revision],
        }
        audits.append(RevisionAudit(inp.revision, inp.revision == latest, digest, checks))
    latest_cp = next((r.checkpoint for r in revisions if r.revision == latest), None)
    aggregates = latest_cp.get("aggregates") if isinstance(latest_cp, dict) else None
    return WindowAudit(key, topic, audits, aggregates)
