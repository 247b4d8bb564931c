"""Evidence fetching for an audit run: documents, one read of Kafka, ledger lookups."""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flows.audit_select import Discovery
from storage import layout
from storage.checkpoint_store import PackReader
from storage.kafka import KafkaLog, OffsetRangeUnavailable
from storage.ledger.base import EntryNotFound, Ledger, LedgerError, LedgerUnavailable
from storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError, read_payload
from tasks.audit import (
    Finding,
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    integrity_from_error,
)
from tasks.audit.coverage import Accounting
from tasks.audit.documents import (
    CHECKPOINT_SCHEMA_FILE,
    schema_problem,
)
from tasks.canonical import parse_document
from tasks.checkpoint import ranges_of
from tasks.checkpoint_pack import CheckpointPackError, checkpoint_ref
from tasks.message import classify
from tasks.pack import PackError, payload_location
from tasks.window import DEFAULT_WINDOW_SECONDS, WindowKey, WindowSpec

# ---------------------------------------------------------------------------------------
# Evidence fetching
# ---------------------------------------------------------------------------------------

# Small GETs in flight at once (documents, payloads); the S3 client pools 64 connections.
READ_CONCURRENCY = 16
MISSING = "missing from the object store"


def pinned_version(receipt: Any, which: str) -> str | None:
    """The S3 version id a receipt pins for its checkpoint or payload, if any.

    On a versioned bucket an overwrite only adds a newer version; the audit reads the
    version the anchoring run wrote, so an overwrite cannot substitute evidence.
    """
    versions = receipt.get("object_versions") if isinstance(receipt, dict) else None
    version = versions.get(which) if isinstance(versions, dict) else None
    return version if isinstance(version, str) and version else None


def load_json(
    store: ObjectStore, key: str, version_id: str | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = parse_document(store.get(key, version_id))
    except ObjectNotFound:
        return None, MISSING
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, None


@dataclass
class Documents:
    """The small documents of every selected revision, and the findings of discovery."""

    revisions: dict[WindowKey, list[RevisionInputs]]
    window_findings: dict[WindowKey, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)


def load_documents(store: ObjectStore, scope: str, discovery: Discovery) -> Documents:
    """Receipts and checkpoints of every selected revision (payloads come later), under
    the keys of `scope` (the topic, or a partition group's ``<topic>/<group>``).

    Revisions are loaded `READ_CONCURRENCY` at a time: each is one or two small GETs
    (a receipt, then the checkpoint version it pins), and one at a time they were a third
    of an audit of the demo's 1,100 windows.
    """
    inputs = [
        (
            key,
            RevisionInputs(
                revision=rev,
                receipt_key=layout.receipt_key(scope, key, rev),
                checkpoint_key=layout.checkpoint_key(scope, key, rev),
                payload_key=layout.payload_key(scope, key, rev),
            ),
        )
        for key, revisions in discovery.windows.items()
        for rev in revisions
    ]

    def load(item: tuple[WindowKey, RevisionInputs]) -> None:
        key, inp = item
        if discovery.listed("receipts", key, inp.revision):
            inp.receipt, inp.receipt_problem = load_json(store, inp.receipt_key)
        else:
            inp.receipt, inp.receipt_problem = None, MISSING
        pinned = pinned_version(inp.receipt, "checkpoint")
        if pinned is not None or discovery.listed("checkpoints", key, inp.revision):
            inp.checkpoint, inp.checkpoint_problem = load_json(store, inp.checkpoint_key, pinned)
        else:
            inp.checkpoint, inp.checkpoint_problem = None, MISSING

    with ThreadPoolExecutor(max_workers=READ_CONCURRENCY) as pool:
        for _ in pool.map(load, inputs):
            pass
    out: dict[WindowKey, list[RevisionInputs]] = {key: [] for key in discovery.windows}
    for key, inp in inputs:
        out[key].append(inp)
    return Documents(out, discovery.window_findings, discovery.run_findings)


def load_packed_checkpoints(store: ObjectStore, topic: str, documents: Documents) -> None:
    """Checkpoints of layout pack: where the revision's log entry locates them.

    Runs after `flows.audit_run.attach_log`. The signed log entry, not the bucket, says
    that the checkpoint is in its run's checkpoint pack and at which bytes; a locator that
    names anything but that pack, a range outside the object and bytes that do not hash
    to the logged digest are findings on the revision (``checkpoint_invalid``), and a
    missing pack is ``checkpoint_missing``. Each pack is read once.
    """
    packs = PackReader(store, topic)
    for revisions in documents.revisions.values():
        for inp in revisions:
            if inp.log_entry is None or inp.log_entry.get("checkpoint") is None:
                continue
            inp.checkpoint, inp.checkpoint_problem, inp.checkpoint_invalid = None, None, False
            try:
                ref = checkpoint_ref(topic, inp.log_entry)
                assert ref is not None
                inp.checkpoint_key = ref.key + ref.uri_suffix
                inp.checkpoint = packs.checkpoint(ref)
            except CheckpointPackError as exc:
                inp.checkpoint_problem, inp.checkpoint_invalid = str(exc), True
            except ObjectNotFound:
                inp.checkpoint_problem = "its checkpoint pack is missing from the object store"
            except ObjectStoreError as exc:
                inp.checkpoint_problem = str(exc)


def read_partitions(
    kafka: KafkaLog,
    documents: dict[WindowKey, list[RevisionInputs]],
    timeout_s: float,
    accounting: Accounting | None = None,
    partitions: Collection[int] | None = None,
) -> KafkaView:
    """Read each partition once, up to the high watermark, classifying each message once.
    `partitions` (a partition group's) limits the read to those: another group's
    messages belong to that group's windows and log.

    Without an anchor log: from the lowest offset any selected revision needs (partitions
    no range touches from their low watermark, so late data is still found). With one
    (`accounting`): every partition from its low watermark, so that coverage can account
    for every offset the log says was consumed, and see messages before the log's start.
    """
    starts: dict[int, int] = {}
    for revisions in documents.values():
        for inp in revisions:
            if inp.checkpoint is None or schema_problem(inp.checkpoint, CHECKPOINT_SCHEMA_FILE):
                continue  # a hostile checkpoint must not steer the read
            for p, (lo, _hi) in ranges_of(inp.checkpoint).items():
                starts[p] = min(lo, starts.get(p, lo))
    sizes = {k.size_seconds for k in documents}
    if accounting is not None:
        starts = {}
        sizes.update(accounting.index.window_sizes())
        if not sizes:  # a log that names no window still needs every message classified:
            sizes.add(DEFAULT_WINDOW_SECONDS)  # one naming a window is unaccounted at any size
    specs = [WindowSpec(s) for s in sorted(sizes)]
    scans: list[PartitionScan] = []
    classified = []
    for p in kafka.partitions():
        if partitions is not None and p not in partitions:
            continue
        low, high = kafka.watermarks(p)
        start = max(starts.get(p, low), low)
        if start >= high:
            scans.append(PartitionScan(p, start, high, low))
            continue
        try:
            messages = kafka.read_range(p, start, high, timeout_s=timeout_s)
        except OffsetRangeUnavailable as exc:
            scans.append(PartitionScan(p, start, high, low, error=str(exc)))
            continue
        scans.append(PartitionScan(p, start, high, low, messages=len(messages)))
        for m in messages:
            per_size = [classify(m, spec) for spec in specs]
            if accounting is not None and per_size:
                accounting.add(per_size)
            classified.extend(c for c in per_size if c.window in documents)
    view = KafkaView.of(scans, classified)
    if accounting is not None:
        view.log_extent = dict(accounting.extent)
    return view


@dataclass
class LedgerReader:
    """Ledger lookups for an audit run, cached by key (all windows of a batch share one)."""

    ledger: Ledger
    cache: dict[str, LedgerObservation] = field(default_factory=dict)

    def observe(self, key: str, locator: dict[str, Any] | None = None) -> LedgerObservation:
        """The entry under `key`; with the receipt's `locator` the ledger looks there (the
        Bitcoin family finds anchors by txid, without the writer's wallet)."""
        if key not in self.cache:
            self.cache[key] = self._observe(key, locator)
        return self.cache[key]

    def _observe(self, key: str, locator: dict[str, Any] | None) -> LedgerObservation:
        try:
            ref = (
                self.ledger.locate(key, locator)
                if isinstance(locator, dict)
                else self.ledger.lookup(key)
            )
            foreign = tuple(self.ledger.foreign_entries(key))
            if ref is None:
                return LedgerObservation(key, foreign=foreign)
            return LedgerObservation(key, ref=ref, body=self.ledger.read(ref), foreign=foreign)
        except EntryNotFound:
            return LedgerObservation(key)
        except LedgerUnavailable as exc:
            return LedgerObservation(key, error=str(exc), unavailable=True)
        except LedgerError as exc:
            return LedgerObservation(key, error=f"{type(exc).__name__}: {exc}")

    def integrity(self) -> LedgerIntegrity:
        try:
            self.ledger.verify_integrity()
        except LedgerUnavailable as exc:
            return LedgerIntegrity(
                self.ledger.backend, ok=False, detail=f"unavailable: {exc}", seq=-1
            )
        except LedgerError as exc:
            return integrity_from_error(self.ledger.backend, exc)
        return LedgerIntegrity(self.ledger.backend)


def fetch_payload(store: ObjectStore, scope: str, key: WindowKey, inp: RevisionInputs) -> None:
    """Fill in the payload of one revision, under the keys of `scope` (the topic, or a
    partition group's ``<topic>/<group>``).

    The payload is where the (not yet screened) checkpoint puts it: its own object, or a
    byte range of its run's pack (ranged GET). A pack reference that names anything but a
    pack of this scope is a payload problem, never a read of some other object. Only the
    store is read (no ledger), so revisions may be fetched on several threads.
    """
    try:
        where = payload_location(scope, key, inp.revision, inp.checkpoint)
    except PackError as exc:
        inp.payload_problem = f"unusable pack reference: {exc}"
        return
    inp.payload_key = where.key
    try:
        inp.payload = read_payload(store, where, pinned_version(inp.receipt, "payload"))
    except ObjectNotFound:
        inp.payload_problem = "missing from the object store"
    except ObjectStoreError as exc:
        inp.payload_problem = str(exc)
    inp.payload_uri = store.uri(where.key)
    if where.packed:
        inp.payload_uri += f"#bytes={where.offset}+{where.length}"


def observe_entries(reader: LedgerReader, scope: str, key: WindowKey, inp: RevisionInputs) -> None:
    """Fill in the ledger observations of one revision (its window entry; a v1 receipt's
    batch entry)."""
    rc = inp.receipt if isinstance(inp.receipt, dict) else {}
    refs = rc.get("ledger") if isinstance(rc.get("ledger"), dict) else {}
    batch = rc.get("batch")
    if isinstance(batch, dict):  # a v1 receipt: its batch anchor (legacy path)
        batch_ref = refs.get("batch") if isinstance(refs.get("batch"), dict) else {}
        inp.batch_entry = reader.observe(
            layout.batch_entry_key(scope, str(batch.get("root"))), batch_ref.get("locator")
        )
    if inp.receipt is None and inp.log_entry is None:
        return  # nothing claims this revision is anchored: the anchored check fails it
    if reader.ledger.supports_window_items or refs.get("window") is not None:
        inp.window_entry = reader.observe(layout.window_entry_key(scope, key, inp.revision))
