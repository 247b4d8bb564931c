"""Where one catch-up's time goes: py-spy samples of an `anchor --until-caught-up` process.

    python benchmarks/profile_anchor.py [--observations 600000] [--partitions 3]
                                        [--out anchor.raw] [--gil] [--top 40]

Generates hourly DWD history (tasks/synth.py), starts the embedded broker, SeaweedFS and a
local Prefect server in a temporary home, ingests the history, then runs `streamnotary
anchor --drain --until-caught-up --json` under `py-spy record` (100 samples/s; wall clock,
waits included through py-spy's `--idle`, without which it drops the samples of a thread
waiting on the network or a lock; with `--gil`, only the GIL holder's samples). Prints each
run's stage timings and the frames of the main thread that hold the most samples
(inclusive), and keeps py-spy's raw (collapsed) output in `--out` for a flame graph. The
stage timings of `benchmarks/backfill.py` say which stage is slow; this says which lines.
Needs py-spy (`pip install py-spy`), which is not a dependency of the package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.backfill import run_cli
from streamnotary.commands.generate import write_history
from streamnotary.demo import set_profile
from streamnotary.prefect_server import start_server, stop_server
from streamnotary.services import start_services, stop_services
from tasks.synth import SynthOptions

ROOT = Path(__file__).resolve().parent.parent
MAIN_THREAD = "_run_module_as_main"  # py-spy's outermost frame of `python -m`'s thread


def main_thread_frames(raw: Path) -> tuple[int, Counter[str]]:
    """Samples of the main thread, and per frame the samples whose stack holds it."""
    frames: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith(MAIN_THREAD):
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            frames[frame] += int(count)
    return total, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, default=600_000)
    parser.add_argument(
        "--partitions",
        type=int,
        default=3,
        help="topic partitions (benchmarks/backfill.py uses one per 500,000 rows, at least 3)",
    )
    parser.add_argument("--out", type=Path, default=Path("anchor.raw"))
    parser.add_argument("--gil", action="store_true", help="sample only the GIL's holder")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    stations = max(1, round(args.observations / (24 * 365)))
    options = SynthOptions(seed=10, stations=stations, start=date(2015, 1, 1), days=365)
    with tempfile.TemporaryDirectory(prefix="sn-backfill-bench-") as tmp:
        home, history = Path(tmp) / "home", Path(tmp) / "history"
        written = write_history(options, history)
        start_services(home)
        api, _ = start_server(home)
        try:
            topic = f"profile.anchor.{os.getpid()}"
            set_profile(
                home, topic=topic, ledger="local", window_seconds=86_400, partitions=args.partitions
            )
            os.environ["STREAMNOTARY_HOME"] = str(home)
            run_cli(home, api, "ingest", *[str(p) for p, _ in written], warm=False)
            env = {
                **os.environ,
                "STREAMNOTARY_WARM": "0",
                "PYTHONPATH": str(ROOT),
                "PREFECT_API_URL": api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            command = [
                "py-spy", "record", "-r", "100", "--format", "raw", "-o", str(args.out),
                *(["--gil"] if args.gil else ["--idle"]), "--",
                sys.executable, "-m", "streamnotary.cli",
                "anchor", "--drain", "--until-caught-up", "--json",
            ]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - started
        finally:
            stop_server(home)
            stop_services(home)
    if done.returncode != 0:
        sys.exit(f"the anchor process failed:\n{done.stderr[-3000:]}")
    # py-spy writes its own "py-spy> ..." lines to the same stdout
    out = "\n".join(x for x in done.stdout.splitlines() if not x.startswith("py-spy>"))
    runs = json.loads(out)["runs"]
    rows = sum(q["rows"] for _, q in written)
    print(f"# {rows:,} generated rows anchored in {len(runs)} runs, {wall:.1f} s under py-spy")
    for run in runs:  # stage seconds, then what the run read, re-read and reused
        counts = {k: run.get(k) for k in ("messages_read", "offsets_reread", "offsets_reused")}
        print(json.dumps(run.get("timings", {}).get("stages", {})), json.dumps(counts))
    total, frames = main_thread_frames(args.out)
    print(f"\nmain thread: {total} samples; frames holding the most (inclusive):")
    for frame, count in frames.most_common(args.top):
        print(f"{count / total * 100:5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    main()
