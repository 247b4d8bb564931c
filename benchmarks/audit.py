"""Audit cost per window size, and proof generation/verification cost per record.

    python benchmarks/audit.py [--sizes 10000,100000,1000000]

For each size a synthetic window (one station, one record per second, one large window)
is built with the pipeline's own pure functions, its payload written to a
`LocalObjectStore`, and then audited. Timed, per window:

* fetch: reading the payload back from the local store;
* checks: `tasks.audit.audit_window` on the fetched evidence, i.e. anchored (batch proof,
  ledger body digests), payload SHA-256, canonical (Parquet decode, canonical
  re-serialization, RFC 6962 root), analytics, and completeness: classification of every
  message of the offset range and `build_window` (dedup, order, root, aggregates).

Not timed: producing and fetching the messages from Kafka (the messages are handed to
the completeness check in memory, exactly as `read_partitions` would hand them over) and
ledger round-trips (one lookup per batch, independent of window size).

The slope (seconds per record between successive sizes) must stay flat: audit is linear.
Then the anchor-log checks per log entry and coverage per record (`benchmarks/audit_log.py`).
Proofs: `make_bundle` (audit path from the window's leaves) and both verifiers per record.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import layout
from storage.ledger.base import AnchorRef
from storage.objectstore import LocalObjectStore
from tasks.audit import (
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    audit_window,
)
from tasks.batch import Batch, BatchMember, batch_proof
from tasks.canonical import canonical_digest
from tasks.checkpoint import PayloadRef, build_checkpoint, checkpoint_digest
from tasks.message import SourceMessage, classify
from tasks.payload import encode_payload
from tasks.proof_bundle import LedgerEvidence, make_bundle, verify_bundle
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowSpec
from tasks.window_content import build_window

TOPIC = "bench"
SPEC = WindowSpec(100_000_000)  # ~3 years: room for 1M one-second records
START = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=SPEC.size_seconds * 16)


def synthetic(n: int) -> list[SourceMessage]:
    out = []
    for i in range(n):
        o = Observation(
            "00433", START + timedelta(seconds=i), (i * 7) % 600 - 200, (i * 13) % 1000, 3
        )
        out.append(SourceMessage(TOPIC, 0, i, b"00433", canonical_bytes(o), None))
    return out


def build(
    n: int, store: LocalObjectStore
) -> tuple[RevisionInputs, list[SourceMessage], list[bytes]]:
    msgs = synthetic(n)
    key = SPEC.key_of("00433", START)
    content = build_window(key, [classify(m, SPEC) for m in msgs])
    payload = encode_payload(content.records)
    pkey = layout.payload_key(TOPIC, key, 0)
    store.put_once(pkey, payload)
    cp = build_checkpoint(
        content=content,
        topic=TOPIC,
        revision=0,
        supersedes=None,
        close_reason="drain",
        payload=PayloadRef(store.uri(pkey), hashlib.sha256(payload).hexdigest(), len(payload)),
        pipeline_version="bench",
    )
    digest = checkpoint_digest(cp)
    batch = Batch.of(TOPIC, [BatchMember(key.window_id, 0, digest)])
    root = batch.root.hex()
    body = {"kind": "batch", "topic": TOPIC, "root": root, "size": 1}
    ref = AnchorRef(
        "local", layout.batch_entry_key(TOPIC, root), canonical_digest(body), {"seq": 1}, 1, 0
    )
    receipt = {
        "topic": TOPIC,
        "window_id": key.window_id,
        "revision": 0,
        "checkpoint_digest": digest,
        "batch": {"key": layout.batch_key(TOPIC, root), **batch_proof(batch, key.window_id, 0)},
        "ledger": {"batch": ref.to_json(), "window": None},
    }
    inp = RevisionInputs(
        revision=0,
        receipt_key=layout.receipt_key(TOPIC, key, 0),
        checkpoint_key=layout.checkpoint_key(TOPIC, key, 0),
        payload_key=pkey,
        receipt=receipt,
        checkpoint=cp,
        batch_entry=LedgerObservation(ref.key, ref=ref, body=body),
    )
    return inp, msgs, content.leaves


def run(sizes: list[int], proofs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    import verify_bundle as standalone  # type: ignore[import-not-found]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp))
        for n in sizes:
            inp, msgs, leaves = build(n, store)
            key = SPEC.key_of("00433", START)
            t0 = time.perf_counter()
            inp.payload = store.get(inp.payload_key)
            inp.payload_uri = store.uri(inp.payload_key)
            t1 = time.perf_counter()
            view = KafkaView.of(
                [PartitionScan(0, 0, n, 0, messages=n)], (classify(m, SPEC) for m in msgs)
            )
            audit = audit_window(key, TOPIC, [inp], view, LedgerIntegrity("local"))
            t2 = time.perf_counter()
            assert audit.verdict == "pass", audit.revisions[0].to_json()
            # proofs: generation from the window's leaves, then both verifiers
            step = max(1, n // proofs)
            idx = list(range(0, n, step))[:proofs]
            g0 = time.perf_counter()
            bundles = [
                make_bundle(
                    leaves=leaves,
                    index=i,
                    checkpoint=inp.checkpoint,
                    receipt=inp.receipt,
                    batch_entry=LedgerEvidence(inp.batch_entry.ref.to_json(), inp.batch_entry.body),
                    window_entry=None,
                )
                for i in idx
            ]
            g1 = time.perf_counter()
            for b in bundles:
                verify_bundle(b)
            g2 = time.perf_counter()
            for b in bundles:
                standalone.verify(b)
            g3 = time.perf_counter()
            rows.append(
                (
                    n,
                    t1 - t0,
                    t2 - t1,
                    (g1 - g0) / len(idx),
                    (g2 - g1) / len(idx),
                    (g3 - g2) / len(idx),
                )
            )
            store.delete(inp.payload_key)
            print(f"done {n}", file=sys.stderr, flush=True)
    print(
        "| records | fetch s | checks s | audit µs/record | slope µs/record | prove ms/record "
        "| verify-proof ms | verify_bundle.py ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    prev = None
    for n, fetch, checks, gen, ver, std in rows:
        total = fetch + checks
        slope = "" if prev is None else f"{(total - prev[1]) / (n - prev[0]) * 1e6:.1f}"
        print(
            f"| {n:,} | {fetch:.3f} | {checks:.2f} | {total / n * 1e6:.1f} | {slope} "
            f"| {gen * 1e3:.1f} | {ver * 1e3:.2f} | {std * 1e3:.2f} |"
        )
        prev = (n, total)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--proofs", type=int, default=5, help="bundles generated/verified per size")
    parser.add_argument(
        "--log-entries", default="550,2200,8800", help="anchor-log sizes (benchmarks/audit_log.py)"
    )
    parser.add_argument("--coverage-records", default="10000,100000,300000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run([int(s) for s in args.sizes.split(",")], args.proofs)
    from benchmarks.audit_log import run as run_log

    run_log(
        [int(s) for s in args.log_entries.split(",")],
        [int(s) for s in args.coverage_records.split(",")],
        args.repeats,
    )


if __name__ == "__main__":
    main()
