"""Audit cost per window size, the anchor-log checks per log entry and per record, and
proof generation/verification cost per record.

    python benchmarks/audit.py [--sizes 10000,100000,1000000] [--log-entries 550,2200,8800]
                               [--coverage-records 10000,100000,300000] [--repeats 3]

One real SeaweedFS (`weed mini`) is started in a temporary directory for the whole command;
everything the audit fetches is fetched from it. For each size a synthetic window (one
station, one record per second, one large window) is built with the pipeline's own pure
functions, its payload written to the S3 server, and then audited. Timed, per window
(median of `--repeats`, ± spread):

* fetch: GET of the payload from the S3 server (the I/O baseline of the window checks);
* checks: `tasks.audit.audit_window` on the fetched evidence, i.e. anchored (batch proof,
  ledger body digests), payload SHA-256, canonical (Parquet decode, canonical
  re-serialization, RFC 6962 root), analytics, and completeness: classification of every
  message of the offset range and `build_window` (dedup, order, root, aggregates).

Not timed: producing and fetching the messages from Kafka (the messages are handed to
the completeness check in memory, exactly as `read_partitions` would hand them over) and
ledger round-trips (one lookup per batch, independent of window size).

The slope (seconds per record between successive sizes) must stay flat: audit is linear.
Then the issue 8 checks (`benchmarks/audit_log.py`, same server): per log entry the log
fetch, head lookups, signature + consistency and entry checks beside the GET-every-object
baseline; per record the coverage accounting beside the classification baseline.
Proofs: `make_bundle` (audit path from the window's leaves) and both verifiers per record.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import layout
from storage.ledger.base import AnchorRef
from storage.objectstore import ObjectStore
from storage.s3store import S3ObjectStore
from streamnotary.services import start_s3_server, stop_process
from tasks.audit import (
    KafkaView,
    LedgerIntegrity,
    LedgerObservation,
    PartitionScan,
    RevisionInputs,
    audit_window,
)
from tasks.batch import Batch, BatchMember
from tasks.canonical import canonical_digest
from tasks.checkpoint import PayloadRef, build_checkpoint, checkpoint_digest
from tasks.message import SourceMessage, classify
from tasks.payload import encode_payload
from tasks.proof_bundle import LedgerEvidence, make_bundle, verify_bundle
from tasks.record import Observation, canonical_bytes
from tasks.revision import receipt as make_receipt
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


def build(n: int, store: ObjectStore) -> tuple[RevisionInputs, list[SourceMessage], list[bytes]]:
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
    receipt = make_receipt(TOPIC, key, 0, digest, batch, ref, None)
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


def run(sizes: list[int], proofs: int, repeats: int, server: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    import verify_bundle as standalone  # type: ignore[import-not-found]

    store = S3ObjectStore(
        "bench-audit",
        "",
        endpoint_url=server.endpoint_url,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )
    store.ensure_bucket()
    rows = []
    for n in sizes:
        inp, msgs, leaves = build(n, store)
        key = SPEC.key_of("00433", START)
        fetches, checks = [], []
        for _ in range(repeats):
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
            fetches.append(t1 - t0)
            checks.append(t2 - t1)
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
                _median_spread(fetches),
                _median_spread(checks),
                _median_spread([f + c for f, c in zip(fetches, checks, strict=True)]),
                (g1 - g0) / len(idx),
                (g2 - g1) / len(idx),
                (g3 - g2) / len(idx),
            )
        )
        store.delete(inp.payload_key)
        print(f"done {n}", file=sys.stderr, flush=True)
    print(f"Window checks, payload fetched from SeaweedFS (median of {repeats}, ± spread)\n")
    print(
        "| records | fetch s | checks s | audit µs/record | slope µs/record | prove ms/record "
        "| verify-proof ms | verify_bundle.py ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    prev = None
    for n, (fetch, fs), (check, cs), (total, _ts), gen, ver, std in rows:
        slope = "" if prev is None else f"{(total - prev[1]) / (n - prev[0]) * 1e6:.1f}"
        print(
            f"| {n:,} | {fetch:.3f} ± {fs:.3f} | {check:.2f} ± {cs:.2f} | {total / n * 1e6:.1f} "
            f"| {slope} | {gen * 1e3:.1f} | {ver * 1e3:.2f} | {std * 1e3:.2f} |"
        )
        prev = (n, total)


def _median_spread(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), max(samples) - min(samples)


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
    from benchmarks.audit_log import run as run_log

    with tempfile.TemporaryDirectory() as tmp:
        server = start_s3_server(Path(tmp) / "s3", Path(tmp) / "s3.log")
        try:
            run([int(s) for s in args.sizes.split(",")], args.proofs, args.repeats, server)
            run_log(
                [int(s) for s in args.log_entries.split(",")],
                [int(s) for s in args.coverage_records.split(",")],
                args.repeats,
                server,
            )
        finally:
            assert server.process is not None
            stop_process(server.process)


if __name__ == "__main__":
    main()
