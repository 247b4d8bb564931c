"""Late windows' latest revisions: newest-first log read beside the whole-log read.

    python benchmarks/late_lookup.py [--entries 300000] [--late 40] [--repeat 3] [--s3]

A run that receives late data needs the latest anchored revision of each late window; in
layout pack only the signed anchor log says where it is. The baseline reads the whole log
(`latest_entries` over every entry, what runs did before session 8); the measured path,
`storage.checkpoint_store.newest_entries`, reads entry bundles from the newest and stops
once every late window is found. Built here: a signed log of `--entries` window entries in
a local bucket (runs of 7,700 windows, as a 200,000-message hourly run anchors), whose last
run revised `--late` windows anchored during the previous runs. Both reads run on fresh
readers (no cached tiles), `--repeat` times; printed: median (min..max) seconds and the
answer checked equal. The 10M benchmark's log had 312,092 entries when this was found.
With `--s3` the log is in a SeaweedFS bucket started for the run (one round trip per tile,
as a backfill pays it), and the newest-first read is also timed fetching one bundle at a
time (`PREFETCH_BUNDLES = 1`, as before session 12) beside the default batch.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import checkpoint_store  # noqa: E402
from storage.checkpoint_store import latest_entries, newest_entries  # noqa: E402
from storage.objectstore import LocalObjectStore  # noqa: E402
from storage.tlog import LogReader  # noqa: E402
from storage.tlog_writer import LogWriter  # noqa: E402
from tasks.tlog.entries import entry_bytes, window_entry  # noqa: E402
from tasks.tlog.note import Signer  # noqa: E402
from tasks.window import WindowSpec  # noqa: E402

SCOPE = "bench.late"
ORIGIN = f"streamnotary/{SCOPE}"
RUN_WINDOWS = 7_700


def entry(window: int, revision: int, run: int) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    station, day = divmod(window, 3650)
    key = WindowSpec(86_400).key_of(
        f"{station:05d}", datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=day)
    )
    return window_entry(
        topic=SCOPE,
        window_id=key.window_id,
        revision=revision,
        checkpoint_digest=f"{window:032x}{revision:032x}",
        ranges={0: [(window * 24, window * 24 + 24)]},
        supersedes=None if revision == 0 else (revision - 1, "0" * 64),
        closed_at="2026-12-02T00:00:00Z",
        run=run,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--late", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="the log in a SeaweedFS bucket")
    args = parser.parse_args()
    rng = random.Random(10)
    with tempfile.TemporaryDirectory(prefix="sn-late-") as tmp:
        server = None
        if args.s3:
            from storage.s3store import S3ObjectStore
            from streamnotary.services import start_s3_server

            server = start_s3_server(Path(tmp) / "s3", Path(tmp) / "s3.log")
            store: Any = S3ObjectStore(
                "late",
                endpoint_url=server.endpoint_url,
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
            )
            store.ensure_bucket(object_lock=False)
        else:
            store = LocalObjectStore(Path(tmp) / "bucket")
        try:
            times = measure(args, rng, store)
        finally:
            if server is not None and server.process is not None:
                from streamnotary.services import stop_process

                stop_process(server.process)
    print(f"median of {args.repeat} (min..max), answers checked equal:")
    for name, values in times.items():
        spread = f"{min(values):.2f}..{max(values):.2f}"
        print(f"  {name:<30} {statistics.median(values):7.2f} s ({spread})")
    base, new = (statistics.median(times[k]) for k in ("whole log (baseline)", "newest first"))
    print(f"  speed-up {base / new:.0f}x")


def measure(args: argparse.Namespace, rng: random.Random, store: Any) -> dict[str, list[float]]:
    """Write the log, then time each read on fresh readers; answers checked equal."""
    signer = Signer.generate("bench")
    writer = LogWriter(store, SCOPE, signer, ORIGIN)
    size, run, t0 = 0, 0, time.perf_counter()
    while size < args.entries:
        n = min(RUN_WINDOWS, args.entries - size)
        writer.append(size, [entry_bytes(entry(size + i, 0, run)) for i in range(n)])
        size, run = size + n, run + 1
    # the late windows: anchored during the previous three runs, revised now
    late = rng.sample(range(max(0, size - 3 * RUN_WINDOWS), size), args.late)
    wanted = {entry(w, 0, 0)["window_id"] for w in late}
    print(
        f"log of {size:,} window entries in {run} runs written in "
        f"{time.perf_counter() - t0:.0f} s; {len(wanted)} late windows",
        file=sys.stderr,
    )
    verifier = signer.named(ORIGIN).verifier()
    times: dict[str, list[float]] = {"whole log (baseline)": [], "newest first": []}
    if args.s3:
        times["newest first, 1 bundle a trip"] = []
    for _ in range(args.repeat):
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        t = time.perf_counter()
        whole = latest_entries(reader.entries(0, size), wanted)
        times["whole log (baseline)"].append(time.perf_counter() - t)
        for name, batch in (("newest first", 8), ("newest first, 1 bundle a trip", 1)):
            if name not in times:
                continue
            checkpoint_store.PREFETCH_BUNDLES = batch
            reader = LogReader(store, SCOPE, verifier, ORIGIN)
            t = time.perf_counter()
            newest = newest_entries(reader, size, wanted)
            times[name].append(time.perf_counter() - t)
            assert newest == whole and len(newest) == len(wanted)
    print(f"latest revision of {len(wanted)} late windows, log of {size:,} entries")
    return times


if __name__ == "__main__":
    main()
