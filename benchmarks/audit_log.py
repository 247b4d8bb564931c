"""Cost of the anchor-log checks of the audit (issue 8): per log entry and per record.

    python benchmarks/audit_log.py [--entries 550,2200,8800] [--records 10000,100000,300000]

Run by `benchmarks/audit.py` after its window table (on the same SeaweedFS). A real
SeaweedFS (`weed mini`) is started in a temporary directory; logs are written to it with
the pipeline's own `storage.tlog_writer.LogWriter` (runs of 10 window entries and one run entry,
each run's head anchored on an embedded ledger), then audited from the S3 server. Per log
entry, each phase of the audit's log side is timed separately:

* fetch: `flows.audit_log.fetch_log` (the signed checkpoint, authenticated tiles and entry
  bundles, the root at every run boundary, the consistency proof between consecutive
  boundaries: S3 GETs and hashing);
* heads: one ledger lookup per run boundary (`observe_heads`);
* signature + consistency: `check_log` (Ed25519 signature of the checkpoint, every anchored
  head against the log, RFC 9162 consistency between consecutive anchored heads);
* entries: `index_log` + `check_entries` (one entry per window revision, read ranges tile);

beside the same run's baseline: listing and GETting every object of the log from the S3
server (the I/O floor). Per record: coverage accounting (`Accounting.add` for every
classified message), beside the baseline the audit pays anyway: classifying the message
(`tasks.message.classify`).

Each figure is the median of `--repeats` runs (default 3); totals carry their spread
(max - min).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.audit_evidence import LedgerReader
from flows.audit_log import fetch_log, observe_heads
from storage.ledger.base import AnchorEntry
from storage.ledger.local import LocalLedger
from storage.objectstore import ObjectStore
from storage.s3store import S3ObjectStore
from storage.tlog_writer import LogWriter
from streamnotary.services import start_s3_server, stop_process
from tasks.audit.coverage import Accounting, LogIndex, check_entries, index_log
from tasks.audit.log import check_log
from tasks.message import SourceMessage, classify
from tasks.record import Observation, canonical_bytes
from tasks.tlog.entries import entry_bytes, run_entry, window_entry
from tasks.tlog.note import Signer
from tasks.window import WindowSpec

ORIGIN = "streamnotary/bench"
SPEC = WindowSpec(3600)
DAY = datetime(2019, 9, 7, tzinfo=UTC)
WINDOWS_PER_RUN = 10
MESSAGES_PER_WINDOW = 24


def _run_entries(run: int) -> list[dict]:
    """One run: 10 windows of 24 consecutive offsets each on partition 0, then its run entry."""
    base = (run - 1) * WINDOWS_PER_RUN * MESSAGES_PER_WINDOW
    out = []
    for w in range(WINDOWS_PER_RUN):
        lo = base + w * MESSAGES_PER_WINDOW
        key = SPEC.key_of("00433", DAY + timedelta(hours=(run - 1) * WINDOWS_PER_RUN + w))
        out.append(
            window_entry(
                topic="bench",
                window_id=key.window_id,
                revision=0,
                checkpoint_digest="ab" * 32,
                ranges={0: [(lo, lo + MESSAGES_PER_WINDOW)]},
                supersedes=None,
                closed_at="2019-09-08T00:00:00Z",
                run=run,
            )
        )
    end = base + WINDOWS_PER_RUN * MESSAGES_PER_WINDOW
    out.append(
        run_entry(
            topic="bench",
            run=run,
            read={0: (base, end)},
            quarantined={},
            unattributable={},
            held_open={},
            cursor_digest="cd" * 32,
            anchored_at="2019-09-08T00:00:01Z",
        )
    )
    return out


def write_log(store: ObjectStore, ledger: LocalLedger, signer: Signer, runs: int) -> list[dict]:
    writer = LogWriter(store, "bench", signer, ORIGIN)
    size, previous, entries = 0, 0, []
    for run in range(1, runs + 1):
        batch = _run_entries(run)
        result = writer.append(size, [entry_bytes(e) for e in batch])
        size += len(batch)
        body = {
            "kind": "head",
            "topic": "bench",
            "size": size,
            "root": result.new.root.hex(),
            "previous_size": previous,
        }
        ledger.anchor(AnchorEntry(f"head/bench/{size}", "head", body, ("bench",)))
        previous = size
        entries += batch
    return entries


def raw_read(store: ObjectStore) -> None:
    """The baseline: list and GET every object of the log."""
    for k in store.list("log/bench/"):
        store.get(k)


PHASES = ("fetch", "heads", "signature + consistency", "entries")


def audit_log(store: ObjectStore, ledger: LocalLedger, signer: Signer) -> dict[str, float]:
    """The audit's log side, phase by phase (seconds): fetch, heads, check, entries."""
    verifier = signer.verifier()
    t0 = time.perf_counter()
    fetched = fetch_log(store, "bench", ORIGIN, verifier, {}, None)
    t1 = time.perf_counter()
    observe_heads(fetched.evidence, LedgerReader(ledger).observe, "bench")
    t2 = time.perf_counter()
    res, _ = check_log(fetched.evidence, verifier)
    t3 = time.perf_counter()
    assert res.verdict == "pass", res.to_json()
    check_entries(index_log(fetched.entries))
    t4 = time.perf_counter()
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))


def classify_all(msgs: list[SourceMessage]) -> None:
    for msg in msgs:
        classify(msg, SPEC)


def account_all(index: LogIndex, msgs: list[SourceMessage]) -> None:
    acc = Accounting(index)
    for msg in msgs:
        acc.add([classify(msg, SPEC)])
    (cov,) = acc.finish({0: (0, len(msgs))})
    assert cov.verdict == "pass" and cov.in_windows == len(msgs), cov.to_json()


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, spread) of `repeats` timings of `fn`, in seconds."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), max(samples) - min(samples)


def timed_phases(
    fn: Callable[[], dict[str, float]], repeats: int
) -> tuple[dict[str, float], float, float]:
    """(median per phase, median total, spread of the total) over `repeats` runs of `fn`."""
    samples = [fn() for _ in range(repeats)]
    totals = [sum(s.values()) for s in samples]
    phases = {p: statistics.median(s[p] for s in samples) for p in samples[0]}
    return phases, statistics.median(totals), max(totals) - min(totals)


def log_rows(store_of: Callable[[], ObjectStore], tmp: Path, counts: list[int], repeats: int):
    signer = Signer.generate(ORIGIN)
    rows = []
    for n in counts:
        runs = max(1, n // (WINDOWS_PER_RUN + 1))
        store = store_of()
        with LocalLedger(tmp / f"ledger-{n}.sqlite3") as ledger:
            write_log(store, ledger, signer, runs)

            base, base_spread = timed(partial(raw_read, store), repeats)
            phases, total, spread = timed_phases(partial(audit_log, store, ledger, signer), repeats)
        entries = runs * (WINDOWS_PER_RUN + 1)
        rows.append((entries, runs, base, base_spread, phases, total, spread))
        print(f"done log {entries}", file=sys.stderr, flush=True)
    return rows


def coverage_rows(counts: list[int], repeats: int):
    rows = []
    for m in counts:
        runs = max(1, m // (WINDOWS_PER_RUN * MESSAGES_PER_WINDOW))
        index = index_log([e for r in range(1, runs + 1) for e in _run_entries(r)])
        msgs = []
        for i in range(runs * WINDOWS_PER_RUN * MESSAGES_PER_WINDOW):
            hour, minute = divmod(i, MESSAGES_PER_WINDOW)
            o = Observation("00433", DAY + timedelta(hours=hour, minutes=minute), 100, 800, 3)
            msgs.append(SourceMessage("bench", 0, i, b"00433", canonical_bytes(o), None))

        base, base_spread = timed(partial(classify_all, msgs), repeats)
        total, spread = timed(partial(account_all, index, msgs), repeats)
        rows.append((len(msgs), base, base_spread, total, spread))
        print(f"done coverage {len(msgs)}", file=sys.stderr, flush=True)
    return rows


def s3_store_factory(server: Any) -> Callable[[], ObjectStore]:
    """Fresh buckets on a running SeaweedFS (`streamnotary.services.S3Server`)."""
    counter = iter(range(10**6))

    def store_of() -> ObjectStore:
        store = S3ObjectStore(
            f"bench-log-{next(counter)}",
            "",
            endpoint_url=server.endpoint_url,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
        )
        store.ensure_bucket()
        return store

    return store_of


def run(
    entry_counts: list[int], record_counts: list[int], repeats: int, server: Any = None
) -> None:
    """Both tables; on `server` (a running SeaweedFS) or on one started here."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        own = server is None
        if own:
            server = start_s3_server(tmp / "s3", tmp / "s3.log")
        try:
            log = log_rows(s3_store_factory(server), tmp, entry_counts, repeats)
        finally:
            if own:
                assert server.process is not None
                stop_process(server.process)
    cov = coverage_rows(record_counts, repeats)
    print(f"\nLog checks per log entry, from SeaweedFS (median of {repeats}, ± spread)\n")
    print(
        "| log entries | runs (anchored heads) | baseline: GET every log object s "
        + "".join(f"| {p} s " for p in PHASES)
        + "| log checks s | µs/entry | baseline µs/entry | slope µs/entry |"
    )
    print("|---:" * (7 + len(PHASES)) + "|")
    prev = None
    for entries, runs, base, bs, phases, check, cs in log:
        slope = "" if prev is None else f"{(check - prev[1]) / (entries - prev[0]) * 1e6:.0f}"
        print(
            f"| {entries:,} | {runs:,} | {base:.2f} ± {bs:.2f} "
            + "".join(f"| {phases[p]:.3f} " for p in PHASES)
            + f"| {check:.2f} ± {cs:.2f} "
            f"| {check / entries * 1e6:.0f} | {base / entries * 1e6:.0f} | {slope} |"
        )
        prev = (entries, check)
    print(f"\nCoverage accounting per record (median of {repeats}, ± spread)\n")
    print(
        "| records | baseline: classify s | classify + coverage s | coverage µs/record "
        "| baseline µs/record | slope µs/record |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    prev = None
    for m, base, bs, total, ts in cov:
        extra = total - base
        slope = "" if prev is None else f"{(extra - prev[1]) / (m - prev[0]) * 1e6:.2f}"
        print(
            f"| {m:,} | {base:.2f} ± {bs:.2f} | {total:.2f} ± {ts:.2f} | {extra / m * 1e6:.2f} "
            f"| {base / m * 1e6:.2f} | {slope} |"
        )
        prev = (m, extra)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", default="550,2200,8800")
    parser.add_argument("--records", default="10000,100000,300000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run(
        [int(s) for s in args.entries.split(",")],
        [int(s) for s in args.records.split(",")],
        args.repeats,
    )


if __name__ == "__main__":
    main()
