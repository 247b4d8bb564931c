"""Backfill benchmark: generated DWD history through the real broker, SeaweedFS and ledger.

    python benchmarks/backfill.py [--observations 10000000] [--product hourly|10_minutes]
                                  [--days 365] [--repeat 3] [--workers 1,2]
                                  [--groups 1,2] [--warm] [--dask-cluster]
                                  [--modes catch-up,runs] [--baseline-tree DIR]
                                  [--baseline-mode runs|catch-up] [--max-runs K]

One command, everything real: seeded synthetic DWD archives (tasks/synth.py, with their
quirks) are written once; each repeat ingests them into a fresh topic of the embedded
noida-db broker with `streamnotary ingest` (deleted once its figures are taken: the broker
holds every message in memory), then anchors everything into SeaweedFS and the local
ledger, both as CLI processes reporting to a local Prefect server (as after `streamnotary
up`). One anchor run reads at most `max_messages_per_run` offsets; the backlog is anchored
in one of two ways (`--modes`, each a table of its own, alternating in the same run):
`catch-up` (default): one `streamnotary anchor --drain --until-caught-up --json` process
whose runs follow one another; `runs`: one `streamnotary anchor --drain --json` process
per run, as a schedule starts them, each paying the process start; with `--baseline-tree
DIR` (e.g. `git worktree add --detach DIR <commit>`) also `baseline`: the anchor processes
run DIR's code, one per run, as the benchmark ran before `catch-up` existed, or with
`--baseline-mode catch-up` one `--until-caught-up` process (DIR must know it). With
`--max-runs K` this tree's catch-up is a new process every K runs (`anchor
--until-caught-up --max-runs K`), and the peak RSS is the largest of those processes'. Printed:

* records/s and windows/s end to end (every anchor run until no backlog is left; ingest
  separately), median of the repeats with spread, the runs' per-stage times
  (`streamnotary.stage_timings/1`) and the anchor processes' peak RSS (each process alone,
  measured behind a launcher: `streamnotary.peak_rss`);
* in the same run, the ceilings these are measured against: broker read rate (all
  messages of the topic through `KafkaLog.read_chunks`), the rate of one anchor run's
  bounded reads (one range per partition, each read alone: on the test broker each costs
  the rest of its partition), S3 PUT rate (small write-once
  objects, the pipeline's 8 threads) and the core rate with decoding (classify + one
  `build_window` and Parquet payload per window, in process);
* with `--warm`, every command is handed to the home's warm runner (as after `streamnotary
  up`; group processes too), so no process pays the imports; the peak RSS is then not
  measured (the work runs in the runner's forked children, not in the timed process);
* the issue 10 targets and whether each is met;
* one table per worker count (`--workers 1,2`: the setting `workers`, a local Dask cluster
  when > 1, started by each anchor process; with `--dask-cluster`, one long-running local
  cluster per worker count, started once for the benchmark and named by the setting
  `dask_scheduler_address`, as docs/operations.md advises for scheduled runs) and per
  partition-group count (`--groups 1,2`: the setting `partition_groups`, the partitions
  dealt round-robin; `streamnotary anchor` then runs one process per group, each with its
  own cursor and log). The topic has the same partitions in every
  configuration of a run, so the one-writer configuration is the baseline of the others.
  It has at least 3 partitions, 2 per group, and one per `MAX_PARTITION_MESSAGES` rows:
  the test broker answers a fetch with everything from the fetch offset to the end of the
  partition, ignoring the size limits a Kafka broker honours (`max.partition.fetch.bytes`),
  and librdkafka refuses an answer over `receive.message.max.bytes` (100 MB): 3 partitions
  of 10.8 million rows made 555 MB answers, and every anchor run's read failed. With few
  stations the keys hash unevenly, so the benchmark checks the partitions' sizes right
  after the ingest and stops with advice (more stations) rather than fail every read.

Targets on the 2-core build machine: >= 20,000 records/s and >= 800 windows/s end to end
for hourly data, >= 50,000 records/s for 10-minute data, peak RSS <= 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.core import pipeline_core  # noqa: E402
from storage.kafka import KafkaLog  # noqa: E402
from storage.objectstore import open_store  # noqa: E402
from streamnotary.commands.generate import write_history  # noqa: E402
from streamnotary.config import load_settings  # noqa: E402
from streamnotary.demo import set_profile  # noqa: E402
from streamnotary.peak_rss import measured, peak_rss  # noqa: E402
from streamnotary.prefect_server import start_server, stop_server  # noqa: E402
from streamnotary.services import start_services, stop_services  # noqa: E402
from tasks.planner import cap_ranges  # noqa: E402
from tasks.synth import HOURLY, TEN_MINUTES, SynthOptions  # noqa: E402
from tasks.window import WindowSpec  # noqa: E402

TARGETS = {HOURLY: (20_000, 800), TEN_MINUTES: (50_000, None)}
RSS_TARGET = 1 << 30
# ~154 bytes a message: at most ~77 MB per partition, under librdkafka's 100 MB answer limit
MAX_PARTITION_MESSAGES = 500_000
# Keys hash unevenly over partitions when stations are few: a partition of ~700,000
# messages was read (session 12, 10M hourly rows of 1,140 stations); one of ~900,000 (10M
# 10-minute rows of 190 stations, 16 of them on one partition) failed every read, after
# a 20-minute ingest. Checked right after the ingest now.
LARGEST_READABLE_PARTITION = 700_000
ROWS_PER_DAY = {HOURLY: 24, TEN_MINUTES: 144}
MODE_TEXT = {
    "catch-up": "one `anchor --until-caught-up` process",
    "runs": "one `anchor` process per run",
}


def run_cli(
    home: Path, api: str, *args: str, warm: bool = False, tree: Path = ROOT
) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one `streamnotary` process, running the
    code of `tree` (a git worktree of another commit, for a baseline in the same run)."""
    env = {
        "STREAMNOTARY_WARM": "1" if warm else "0",
        **os.environ,
        "STREAMNOTARY_HOME": str(home),
        "PYTHONPATH": str(tree),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "peak_rss"
        # behind a launcher: a child of this (large) process would report its size too
        command = measured([sys.executable, "-m", "streamnotary.cli", *args], report)
        # `python -m` looks in its working directory first: the tree's code, not this one
        returncode = subprocess.run(command, env=env, stdout=out, stderr=err, cwd=tree).returncode
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if returncode != 0:
            sys.exit(f"streamnotary {args[0]} failed:\n{err.read()[-3000:]}")
        return wall, peak_rss(report), out.read()


def check_partition_sizes(topic: str) -> None:
    """Stop before anchoring when a partition is too large for the test broker's answers."""
    with KafkaLog.from_settings(load_settings(topic=topic)) as log:
        sizes = {p: log.watermarks(p)[1] for p in log.partitions()}
    p, size = max(sizes.items(), key=lambda item: item[1])
    if size > LARGEST_READABLE_PARTITION:
        sys.exit(
            f"partition {p} of {topic} holds {size:,} messages: the test broker answers a "
            "fetch with the rest of the partition, over librdkafka's 100 MB answer limit, "
            f"so no read of it would succeed (largest known to work: "
            f"{LARGEST_READABLE_PARTITION:,}). Spread the rows over more stations: a smaller "
            "--days for the same --observations."
        )


def broker_ceiling(topic: str) -> float:
    """Messages/s of reading the whole topic through the pipeline's bounded reader, in
    pages of `read_page_messages` (memory holds one page, at any topic size)."""
    settings = load_settings(topic=topic)
    with KafkaLog.from_settings(settings) as log:
        ranges = {p: (0, log.watermarks(p)[1]) for p in log.partitions()}
        started = time.perf_counter()
        pages = log.read_chunks(
            ranges, chunk=settings.read_page_messages, timeout_s=settings.read_timeout_seconds
        )
        count = sum(len(page) for page in pages)
        return count / (time.perf_counter() - started)


def page_read_rate(topic: str) -> float:
    """Messages/s of the first anchor run's reads alone: the ranges the run's cap grants
    from offset 0 (`cap_ranges`, as `bounded_read` calls it), each read on its own as an
    anchor run reads it (`read_range`). Beside the broker ceiling it shows what a bounded
    read costs on this broker: the test broker answers a fetch with the rest of the
    partition, whatever the range, where a Kafka broker bounds each fetch."""
    settings = load_settings(topic=topic)
    with KafkaLog.from_settings(settings) as log:
        whole = {p: (0, log.watermarks(p)[1]) for p in log.partitions()}
    granted = cap_ranges(
        whole, settings.max_messages_per_run, min_share=settings.read_page_messages, turn=0
    )
    ranges = {p: r for p, r in granted.items() if r[1] > r[0]}
    count, started = 0, time.perf_counter()
    for p, (lo, hi) in ranges.items():
        with KafkaLog.from_settings(settings) as log:  # a fresh reader, as a new run has
            count += len(log.read_range(p, lo, hi, timeout_s=600))
    return count / (time.perf_counter() - started)


def put_ceiling(topic: str, n: int = 400) -> float:
    """Small write-once PUTs/s with the pipeline's concurrency (8 threads)."""
    store = open_store(load_settings(topic=topic))
    body = b"x" * 2048
    store.put_once(f"bench/{topic}/warm", body, "application/octet-stream")
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: store.put_once(f"bench/{topic}/{i}", body, "application/octet-stream"),
                range(n),
            )
        )
    return n / (time.perf_counter() - started)


def core_ceiling(topic: str, sample: int = 200_000) -> tuple[float, float]:
    """(records/s, windows/s) of classify + build_window + Parquet per window, in process."""
    settings = load_settings(topic=topic)
    with KafkaLog.from_settings(settings) as log:
        parts = log.partitions()
        per = sample // len(parts) + 1
        ranges = {p: (0, min(per, log.watermarks(p)[1])) for p in parts}
        messages = log.read_ranges(ranges, timeout_s=600)
    spec = WindowSpec(settings.window_seconds)
    started = time.perf_counter()
    windows = pipeline_core(messages, spec, parquet=True)
    seconds = time.perf_counter() - started
    return len(messages) / seconds, windows / seconds


def drop_topic(topic: str) -> None:
    """Delete a finished repeat's topic. The test broker keeps every message in memory
    (6.9 GB for one 10.8M-row topic, measured): three would need ~21 GB of this 24 GiB
    machine, which has no swap, and session 11's third repeat's ingest crawled."""
    from confluent_kafka.admin import AdminClient

    settings = load_settings(topic=topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_client})
    for future in admin.delete_topics([topic], operation_timeout=60).values():
        future.result()


def med(values: list[float]) -> str:
    v = sorted(values)
    return f"{statistics.median(v):,.1f} ({v[0]:,.1f}..{v[-1]:,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=10_000_000)
    parser.add_argument("--product", choices=(HOURLY, TEN_MINUTES), default=HOURLY)
    parser.add_argument("--days", type=int, default=365, help="days of history per station")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="at least this many topic partitions (the shape of a larger topic: with one "
        "station's year per partition per run, re-publications fall into the next run)",
    )
    parser.add_argument(
        "--workers", default="1,2", help="comma-separated worker counts (setting `workers`)"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="hand every command to the home's warm runner (as after `streamnotary up`)",
    )
    parser.add_argument(
        "--groups",
        default="1",
        help="comma-separated partition-group counts (setting `partition_groups`)",
    )
    parser.add_argument(
        "--dask-cluster",
        action="store_true",
        help="worker counts > 1: one long-running local Dask cluster each, started once "
        "(setting `dask_scheduler_address`) instead of one per anchor process",
    )
    parser.add_argument(
        "--modes",
        default="catch-up",
        help="comma-separated: catch-up (one `anchor --until-caught-up` process), runs "
        "(one `anchor` process per run)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="also anchor with this tree's code: mode `baseline`",
    )
    parser.add_argument(
        "--baseline-mode",
        choices=("runs", "catch-up"),
        default="runs",
        help="how the baseline tree's code anchors the backlog (default: a process per run)",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        help="catch-up mode of this tree: at most this many runs per anchor process "
        "(`anchor --until-caught-up --max-runs`), a new process until the backlog is 0",
    )
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= {"catch-up", "runs"}:
        parser.error(f"--modes: catch-up or runs, got {args.modes!r}")
    if args.baseline_tree:
        if args.warm:  # the warm runner runs this tree's code
            parser.error("--baseline-tree runs cold processes: drop --warm")
        modes.append("baseline")
        MODE_TEXT["baseline"] = (
            f"baseline code of {args.baseline_tree}, " + MODE_TEXT[args.baseline_mode]
        )
    configs = [
        (int(w), int(g), m)
        for w in args.workers.split(",")
        for g in args.groups.split(",")
        for m in modes
    ]
    stations = max(1, round(args.observations / (ROWS_PER_DAY[args.product] * args.days)))
    options = SynthOptions(
        seed=10, stations=stations, start=date(2015, 1, 1), days=args.days, product=args.product
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sn-backfill-bench-") as tmp:
        home = Path(tmp) / "home"
        history = Path(tmp) / "history"
        t0 = time.perf_counter()
        written = write_history(options, history)
        generated = sum(q["rows"] for _, q in written)
        print(
            f"generated {len(written)} archives, {generated:,} rows, {stations} stations x "
            f"{args.days} days ({args.product}) in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        partitions = max(
            3,
            args.partitions,
            2 * max(g for _, g, _ in configs),
            math.ceil(generated / MAX_PARTITION_MESSAGES),
        )
        start_services(home)
        api, _ = start_server(home)
        if args.warm:
            from streamnotary.warm import start_runner

            os.environ["PREFECT_API_URL"] = api  # the runner's own settings, as after `up`
            start_runner(home)
        clusters = shared_clusters(configs, api) if args.dask_cluster else {}
        try:
            # repeats alternate between configurations, so a change of load hits them alike
            for i, (workers, groups, mode) in [(i, c) for i in range(args.repeat) for c in configs]:
                topic = f"bench.backfill.{os.getpid()}.{workers}.{groups}.{mode}.{i}"
                os.environ["STREAMNOTARY_WORKERS"] = str(workers)
                if workers in clusters:
                    os.environ["STREAMNOTARY_DASK_SCHEDULER_ADDRESS"] = clusters[workers]
                else:
                    os.environ.pop("STREAMNOTARY_DASK_SCHEDULER_ADDRESS", None)
                set_profile(
                    home,
                    topic=topic,
                    ledger="local",
                    window_seconds=86_400,
                    partitions=partitions,
                    partition_groups=[list(range(k, partitions, groups)) for k in range(groups)]
                    if groups > 1
                    else [],
                )
                os.environ["STREAMNOTARY_HOME"] = str(home)
                sources = [str(p) for p, _ in written]
                ingest_s, ingest_rss, _ = run_cli(home, api, "ingest", *sources, warm=args.warm)
                check_partition_sizes(topic)
                # one anchor run reads at most max_messages_per_run offsets: run until the
                # backlog is gone, as a backfill does, and count every run
                anchor_s, anchor_rss, runs, processes = 0.0, 0, [], 0
                while not runs or runs[-1]["backlog"]:
                    catch_up = mode == "catch-up" or (
                        mode == "baseline" and args.baseline_mode == "catch-up"
                    )
                    more = ("--until-caught-up",) if catch_up else ()
                    if catch_up and args.max_runs and mode != "baseline":
                        more += ("--max-runs", str(args.max_runs))
                    processes += 1
                    seconds, rss, out = run_cli(
                        home,
                        api,
                        "anchor",
                        "--drain",
                        *more,
                        "--json",
                        warm=args.warm,
                        tree=args.baseline_tree if mode == "baseline" else ROOT,
                    )
                    anchor_s, anchor_rss = anchor_s + seconds, max(anchor_rss, rss)
                    runs += runs_of(json.loads(out))
                summary = added(runs)
                row = {
                    "workers": workers,
                    "groups": groups,
                    "mode": mode,
                    "ingest_s": ingest_s,
                    "anchor_s": anchor_s,
                    "messages": summary["messages_read"],
                    "reread": summary["offsets_reread"],
                    "reused": summary["offsets_reused"],
                    "cache_hits": summary["cache_hits"],
                    "cache_misses": summary["cache_misses"],
                    "cache_located": summary["cache_located"],
                    "runs": len(runs),
                    "processes": processes,
                    "partitions": partitions,
                    "windows": summary["new_anchors"],
                    "rss": anchor_rss,
                    "ingest_rss": ingest_rss,
                    "timings": summary["timings"],
                    "broker": broker_ceiling(topic),
                    "page": page_read_rate(topic),
                    "puts": put_ceiling(topic),
                    "core": core_ceiling(topic),
                    "peak_rises": peak_rises(runs),
                    # per run: RSS at its end and the process's peak so far, MiB
                    "rss_by_run": [
                        [
                            round((m.get(k) or 0) / 2**20)
                            for k in ("rss_end_bytes", "peak_rss_bytes")
                        ]
                        for m in (r.get("memory") or {} for r in runs)
                    ],
                }
                drop_topic(topic)  # its figures are taken; free the broker's memory
                rows.append(row)
                print(
                    f"workers {workers}, groups {groups}, {mode}, repeat {i + 1}: "
                    f"ingest {ingest_s:.0f} s, "
                    f"anchor {anchor_s:.0f} s in {len(runs)} run(s), "
                    f"{row['messages']:,} messages, {row['windows']:,} windows",
                    file=sys.stderr,
                )
                # every figure of the repeat, now: a run stopped before the table keeps them
                print(f"repeat figures: {json.dumps(row, default=str)}", file=sys.stderr)
        finally:
            if clusters:
                from flows.window_build import close_local_clusters

                close_local_clusters()
            if args.warm:
                from streamnotary.warm import stop_runner

                stop_runner(home)
            stop_server(home)
            stop_services(home)
    for workers, groups, mode in configs:
        report(
            args,
            stations,
            generated,
            [r for r in rows if (r["workers"], r["groups"], r["mode"]) == (workers, groups, mode)],
        )


def peak_rises(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that raised their anchor process's peak RSS (`memory` of the run summary):
    which run of a catch-up set the peak, and what it read, re-read and anchored."""
    rises, peak = [], 0
    for number, run in enumerate(runs, 1):
        memory = run.get("memory") or {}
        now = memory.get("peak_rss_bytes")
        if now is None:
            continue
        if now < peak:  # a new anchor process: its peak starts again
            peak = 0
        if now > peak:
            rises.append(
                {
                    "run": number,
                    "peak_mib": round(now / 2**20, 1),
                    "rise_mib": round((now - peak) / 2**20, 1),
                    "rss_start_mib": round((memory.get("rss_start_bytes") or 0) / 2**20, 1),
                    "rss_end_mib": round((memory.get("rss_end_bytes") or 0) / 2**20, 1),
                    "messages_read": run["messages_read"],
                    "offsets_reread": run.get("offsets_reread", 0),
                    "new_anchors": run["new_anchors"],
                    "late_revisions": sum(
                        row["revisions"] for row in run.get("stations", {}).values()
                    ),
                }
            )
            peak = now
    return rises


def runs_of(output: dict[str, Any]) -> list[dict[str, Any]]:
    """The run summaries of one `anchor --json` process: one run, or `--until-caught-up`'s
    ``{"runs": [...]}``; with groups, the groups' n-th runs combined (they ran together)."""
    if "runs" in output:
        return [combined(r) for r in output["runs"]]
    if "groups" in output and "runs" in next(iter(output["groups"].values()), {}):
        by_group = [g["runs"] for g in output["groups"].values()]
        return [
            added([runs[k] for runs in by_group if k < len(runs)], wall=max)
            for k in range(max(map(len, by_group)))
        ]
    return [combined(output)]


def combined(summary: dict[str, Any]) -> dict[str, Any]:
    """One run summary for `anchor --json`'s output, also with partition groups.

    With groups the output is ``{"groups": {name: summary}}`` (one process each, run at the
    same time): messages and windows add up, stage seconds add up (seconds of work, more
    than the wall time when the groups overlap), the flow's wall time is the longest.
    """
    if "groups" not in summary:
        return summary
    return added(list(summary["groups"].values()), wall=max)


def added(parts: list[dict[str, Any]], wall: Any = sum) -> dict[str, Any]:
    """Run summaries added up: counts and stage seconds summed, flow wall time by `wall`
    (`max` for groups that ran at the same time, `sum` for runs one after the other)."""
    names = parts[0]["timings"]["stages"]
    return {
        "messages_read": sum(p["messages_read"] for p in parts),
        "offsets_reread": sum(p.get("offsets_reread", 0) for p in parts),
        "offsets_reused": sum(p.get("offsets_reused", 0) for p in parts),
        # anchor-log objects found in the catch-up's log cache / fetched from the bucket
        "cache_hits": sum((p.get("log_cache") or {}).get("hits", 0) for p in parts),
        "cache_misses": sum((p.get("log_cache") or {}).get("misses", 0) for p in parts),
        # late windows found by where the catch-up appended their entry (no log walk)
        "cache_located": sum((p.get("log_cache") or {}).get("located", 0) for p in parts),
        "new_anchors": sum(p["new_anchors"] for p in parts),
        "backlog": sum(p["backlog"] for p in parts) if wall is max else parts[-1]["backlog"],
        "timings": {
            "stages": {k: sum(p["timings"]["stages"][k] for p in parts) for k in names},
            "unattributed_s": sum(p["timings"]["unattributed_s"] for p in parts),
            "wall_s": wall(p["timings"]["wall_s"] for p in parts),
        },
    }


def shared_clusters(configs: list[tuple[int, int]], api: str) -> dict[int, str]:
    """Worker count -> scheduler address of a local Dask cluster started now, for every
    worker count above 1 (`flows.window_build.local_cluster`, stopped at the end)."""
    from flows.window_build import local_cluster

    os.environ["PREFECT_API_URL"] = api  # the workers report their task runs here
    return {w: local_cluster(w).scheduler_address for w in sorted({w for w, _ in configs if w > 1})}


def report(
    args: argparse.Namespace, stations: int, generated: int, rows: list[dict[str, Any]]
) -> None:
    rec = [r["messages"] / r["anchor_s"] for r in rows]
    win = [r["windows"] / r["anchor_s"] for r in rows]
    print(
        f"# backfill benchmark: {generated:,} generated rows ({args.product}, {stations} "
        f"stations x {args.days} days), workers {rows[0]['workers']}"
        f"{' (one long-running cluster)' if args.dask_cluster and rows[0]['workers'] > 1 else ''}"
        f", partition groups "
        f"{rows[0]['groups']}{', warm runner' if args.warm else ''}, "
        f"{MODE_TEXT[rows[0]['mode']]}, topic of "
        f"{rows[0]['partitions']} partitions, {len(rows)} repeats of "
        f"{med([r['runs'] for r in rows])} anchor run(s), load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print()
    print("| measurement | median (min..max) |")
    print("|---|---:|")
    print(f"| anchor run, messages/s end to end | {med(rec)} |")
    print(f"| anchor run, windows/s end to end | {med(win)} |")
    print(f"| anchor run wall s | {med([r['anchor_s'] for r in rows])} |")
    # the rows ingested (the anchor runs read the same messages once they drained the backlog)
    print(f"| ingest, messages/s | {med([generated / r['ingest_s'] for r in rows])} |")
    if not args.warm:
        print(f"| anchor peak RSS MiB | {med([r['rss'] / 2**20 for r in rows])} |")
        print(f"| ingest peak RSS MiB | {med([r['ingest_rss'] / 2**20 for r in rows])} |")
    print(f"| late windows: offsets read again | {med([r['reread'] for r in rows])} |")
    reused = med([r["reused"] for r in rows])
    print(f"| late windows: offsets taken from the run's read | {reused} |")
    for k, text in (("cache_hits", "remembered"), ("cache_misses", "fetched back")):
        print(f"| anchor-log objects read, {text} | {med([r[k] for r in rows])} |")
    located = med([r.get("cache_located", 0) for r in rows])
    print(f"| late windows found by their appended position | {located} |")
    for stage in rows[0]["timings"]["stages"]:
        print(f"| stage {stage} s | {med([r['timings']['stages'][stage] for r in rows])} |")
    for k in ("unattributed_s", "wall_s"):
        print(f"| {k} | {med([r['timings'][k] for r in rows])} |")
    print(f"| ceiling: broker read messages/s | {med([r['broker'] for r in rows])} |")
    print(f"| broker: one run's bounded reads, messages/s | {med([r['page'] for r in rows])} |")
    print(f"| ceiling: S3 PUT/s (8 threads) | {med([r['puts'] for r in rows])} |")
    print(f"| ceiling: core with decoding rec/s | {med([r['core'][0] for r in rows])} |")
    print(f"| ceiling: core with decoding windows/s | {med([r['core'][1] for r in rows])} |")
    print()
    rec_target, win_target = TARGETS[args.product]
    rss = statistics.median(r["rss"] for r in rows)
    print(f"target records/s >= {rec_target:,}: {_met(statistics.median(rec) >= rec_target)}")
    if win_target:
        print(f"target windows/s >= {win_target:,}: {_met(statistics.median(win) >= win_target)}")
    if not args.warm:
        print(f"target peak RSS <= 1 GiB: {_met(rss <= RSS_TARGET)}")
    if generated < 10_000_000:
        print(f"(at {generated:,} rows, not the 10,000,000 of the target's definition)")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
