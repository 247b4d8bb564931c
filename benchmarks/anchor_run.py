"""Benchmark of the demo's anchor run: `streamnotary anchor --drain` as a user runs it.

    python benchmarks/anchor_run.py [--repeat 3] [--prefect-api URL | --local-prefect]
                                    [--modes cold,warm]

Starts the embedded broker and S3 server in a temporary home, ingests the two shared DWD
files (26,400 hourly records, 1,100 daily windows) into a fresh topic per repeat, then
times the CLI process `streamnotary anchor --drain --json` (imports, Prefect flow engine,
the run itself) and prints its per-stage timings (`streamnotary.stage_timings/1`).
Without `--prefect-api` every CLI process starts Prefect's temporary server, as a fresh
install does; with it, the runs report to that server. The issue 10 baseline was 41-44 s
per anchor run on this 2-core machine. Services are stopped at the end (by PID).

`--modes cold,warm` (the default) measures, in the same run and alternating per repeat, a
cold CLI process (``STREAMNOTARY_WARM=0``: it imports everything itself) and a command
handed to the home's warm runner (`streamnotary.warm`, started as `streamnotary up` does).

`--audit` also times `streamnotary audit --all --json` of each anchored topic (same mode),
the auditor's check of those 1,100 windows: discovery, documents, one Kafka read, every
window's payload and checks, the stored report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamnotary.demo import set_profile  # noqa: E402
from streamnotary.services import start_services, stop_services  # noqa: E402
from tasks.dwd import demo_files  # noqa: E402


def cli(
    home: Path, *args: str, api: str | None, layout: str | None = None, warm: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STREAMNOTARY_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }
    env["STREAMNOTARY_WARM"] = "1" if warm else "0"
    if layout:
        env["STREAMNOTARY_OBJECT_LAYOUT"] = layout
    if api:
        env["PREFECT_API_URL"] = api
    else:
        env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,  # `python -m` puts the working directory first on sys.path
    )
    if done.returncode != 0:
        sys.exit(f"streamnotary {args[0]} failed:\n{done.stderr[-3000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefect-api", help="PREFECT_API_URL of a running Prefect server")
    parser.add_argument(
        "--local-prefect",
        action="store_true",
        help="start the home's Prefect server first, as `streamnotary up` does",
    )
    parser.add_argument(
        "--layout",
        choices=("pack", "per_window"),
        help="object_layout of the anchor runs (default: the configured one)",
    )
    parser.add_argument(
        "--modes",
        default="cold,warm",
        help="comma-separated: cold (a CLI process that imports everything) and/or warm "
        "(the command handed to the home's warm runner)",
    )
    parser.add_argument(
        "--audit", action="store_true", help="also time `audit --all` of each anchored topic"
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sources = [str(p) for p in demo_files()]
    rows: dict[str, list[tuple[float, dict]]] = {mode: [] for mode in modes}
    audits: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="sn-anchor-bench-") as tmp:
        home = Path(tmp)
        start_services(home)
        if args.local_prefect:
            from streamnotary.prefect_server import start_server

            args.prefect_api, _ = start_server(home)
        if "warm" in modes:
            from streamnotary.warm import start_runner

            start_runner(home)
        try:
            for i in range(args.repeat):
                for mode in modes:
                    topic = f"bench.anchor.{os.getpid()}.{i}.{mode}"
                    set_profile(home, topic=topic, ledger="local")
                    cli(home, "ingest", *sources, api=args.prefect_api)
                    started = time.perf_counter()
                    out = cli(
                        home, "anchor", "--drain", "--json", api=args.prefect_api,
                        layout=args.layout, warm=mode == "warm",
                    )  # fmt: skip
                    wall = time.perf_counter() - started
                    summary = json.loads(out.stdout)
                    assert summary["new_anchors"] == 1100, summary["new_anchors"]
                    rows[mode].append((wall, summary.get("timings") or {"stages": {}}))
                    print(f"run {i + 1} {mode}: {wall:.1f} s", file=sys.stderr)
                    if args.audit:
                        started = time.perf_counter()
                        out = cli(
                            home, "audit", "--all", "--json", api=args.prefect_api,
                            warm=mode == "warm",
                        )  # fmt: skip
                        audits[mode].append(time.perf_counter() - started)
                        report_doc = json.loads(out.stdout)
                        assert report_doc["verdict"] == "pass", report_doc["summary"]
                        assert report_doc["summary"]["windows"] == 1100
                        print(f"audit {i + 1} {mode}: {audits[mode][-1]:.1f} s", file=sys.stderr)
        finally:
            from streamnotary.warm import stop_runner

            stop_runner(home)
            if args.local_prefect:
                from streamnotary.prefect_server import stop_server

                stop_server(home)
            stop_services(home)
    print(
        f"# anchor run of the demo data (1,100 windows, 26,400 records), {args.repeat} runs "
        f"per mode, load average {os.getloadavg()[0]:.1f}, layout {args.layout or 'default'}, "
        f"Prefect "
        f"{'server ' + args.prefect_api if args.prefect_api else 'temporary server per process'}"
    )
    for mode in modes:
        print()
        print(f"## {mode}" + (" (handed to the warm runner)" if mode == "warm" else ""))
        report(rows[mode])
        if audits[mode]:
            walls = sorted(audits[mode])
            print(
                f"| audit --all: CLI process wall time | {statistics.median(walls):.1f} s | "
                f"{walls[0]:.1f}..{walls[-1]:.1f} |"
            )
            print(f"| audit --all: windows/s | {1_100 / statistics.median(walls):,.0f} | |")


def report(rows: list[tuple[float, dict]]) -> None:
    walls = sorted(w for w, _ in rows)
    print()
    print("| measurement | median | min..max |")
    print("|---|---:|---:|")
    print(
        f"| CLI process wall time | {statistics.median(walls):.1f} s | "
        f"{walls[0]:.1f}..{walls[-1]:.1f} |"
    )
    med = statistics.median(walls)
    print(
        f"| records/s end to end | {26_400 / med:,.0f} | "
        f"{26_400 / walls[-1]:,.0f}..{26_400 / walls[0]:,.0f} |"
    )
    print(
        f"| windows/s end to end | {1_100 / med:,.0f} | "
        f"{1_100 / walls[-1]:,.0f}..{1_100 / walls[0]:,.0f} |"
    )
    keys = ["wall_s", "unattributed_s", "call_s", "flow_overhead_s"]
    stages = list(rows[0][1]["stages"])  # empty for code before stage timings
    for k in stages:
        vals = sorted(t["stages"][k] for _, t in rows)
        print(f"| stage {k} | {statistics.median(vals):.2f} s | {vals[0]:.2f}..{vals[-1]:.2f} |")
    for k in keys:
        vals = sorted(t.get(k, 0.0) for _, t in rows)
        print(f"| {k} | {statistics.median(vals):.2f} s | {vals[0]:.2f}..{vals[-1]:.2f} |")


if __name__ == "__main__":
    main()
