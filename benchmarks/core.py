"""Benchmark of the deterministic window core: canonicalize + dedup + Merkle root.

    python benchmarks/core.py [--n 1000000] [--baseline-tree DIR]

Synthetic input: `n` observations of 100 stations, hour after hour in arrival order, with
1 % of the messages re-delivered (duplicates), as a replayed Kafka topic looks.

Prints, in one run:
* batch-core records/s of one `deduplicate` call (which canonicalizes every record) followed by
  `merkle_root` over the surviving leaves (target >= 300,000 records/s on one core);
* the Merkle root time of `tasks.merkle.merkle_root` beside pymerkle 7.0.0 (in-memory
  tree, its default RFC 6962 prefixes) and beside the bare-hashlib floor: one list
  comprehension of the n leaf hashes SHA-256(0x00 || leaf) and one of n-1 node hashes
  SHA-256(0x01 || a || b) over 32-byte inputs, i.e. the same 2n-1 hashes on inputs of the
  same sizes with no tree bookkeeping (target: within 1.25x of the floor);
* the generic `rfc8785` encoder's records/s, which is why tasks/record.py has its own;
* **pipeline-shaped end to end**, as anchor-windows runs it: every record as Kafka message
  bytes, `classify` (fixed-schema fast decoder, general decoder as fallback), grouped into
  daily windows, then one `build_window` call per window (dedup, Merkle root, aggregates),
  with and without one Parquet payload per window; beside it the general decoder
  (`decode_record`) and the fast one (`decode_canonical`) alone. The batch figures above
  call dedup once over all records, which the pipeline never does (it calls it once per
  ~24-record window), so they are the core's ceiling, not the pipeline's rate.

Every measurement runs `--repeat` times (default 3); the table shows the median and the
spread (min..max). With `--baseline-tree DIR` (a git worktree of another commit) the
pipeline-shaped end to end with Parquet is also measured for DIR's code and this tree's,
each run in a fresh process of its own tree, alternating, on the same synthetic messages.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rfc8785

from tasks.dedup import deduplicate
from tasks.merkle import merkle_root
from tasks.message import SourceMessage, classify
from tasks.record import Observation, canonical_bytes, decode_record, to_json_value
from tasks.record_fast import decode_canonical
from tasks.window import WindowSpec
from tasks.window_content import build_window
from tasks.window_jobs import build_all

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
STATIONS = 100


def synthetic(n: int) -> list[Observation]:
    """`n` messages: 99 % distinct observations, 1 % re-deliveries of earlier ones."""
    start = datetime(2019, 1, 1, tzinfo=UTC)
    out: list[Observation] = []
    for i in range(n):
        if i % 100 == 99:
            out.append(out[i - 50])  # a re-delivered message
            continue
        hour, station = divmod(i, STATIONS)
        temperature = None if i % 997 == 0 else (i * 37) % 700 - 200
        humidity = None if i % 331 == 0 else (i * 13) % 1001
        out.append(
            Observation(
                f"{station + 400:05d}", start + timedelta(hours=hour), temperature, humidity, 3
            )
        )
    return out


def as_messages(observations: list[Observation]) -> list[SourceMessage]:
    """The observations as the producer writes them: key = station, value = canonical bytes."""
    return [
        SourceMessage(
            "bench",
            i % 3,
            i,
            o.station_id.encode(),
            canonical_bytes(o),
            int(o.observed_at.timestamp() * 1000),
        )
        for i, o in enumerate(observations)
    ]


def pipeline_core(messages: list[SourceMessage], spec: WindowSpec, parquet: bool) -> int:
    """classify every message, group by window, one build_window (+ payload) per window."""
    windows: dict = defaultdict(list)
    for c in (classify(m, spec) for m in messages):
        windows[c.window].append(c)
    if parquet:  # as the pipeline: contents, then the payloads encoded together
        build_all(list(windows.items()))
    else:
        for key, items in windows.items():
            build_window(key, items)
    return len(windows)


def repeated(fn: Callable[[], T], repeat: int) -> tuple[list[float], T]:
    """CPU seconds of `repeat` runs of `fn` and the last result."""
    times = []
    for _ in range(repeat):
        t, result = timed(fn)
        times.append(t)
    return times, result


def rate(count: int, times: list[float], unit: str = "rec/s") -> str:
    """Median rate with its spread over the runs."""
    rates = sorted(count / t for t in times)
    return f"{statistics.median(rates):,.0f} {unit} ({rates[0]:,.0f}..{rates[-1]:,.0f})"


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """CPU seconds of this process spent in `fn` (single-threaded code: one core's work).

    CPU time rather than wall time, because the build machines are shared and a wall clock
    would mostly measure the other tenants; the wall time is printed beside it.
    """
    w0, t0 = time.perf_counter(), time.process_time()
    result = fn()
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    WALL.append(wall)
    return cpu, result


WALL: list[float] = []


def bare_hash_floor(leaves: list[bytes]) -> None:
    """The 2n-1 SHA-256 computations of an RFC 6962 tree, without the tree."""
    sha256 = hashlib.sha256
    leaf_hashes = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    node = leaf_hashes[0]
    _ = [sha256(b"\x01" + node + node).digest() for _ in range(len(leaves) - 1)]


def pymerkle_root(leaves: list[bytes]) -> bytes:
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm="sha256")  # 0x00/0x01 prefixes: RFC 6962 hashing
    for leaf in leaves:
        tree.append_entry(leaf)
    return tree.get_root()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of observations")
    parser.add_argument("--skip-pymerkle", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument(
        "--baseline-tree", type=Path, help="also time DIR's pipeline core (fresh processes)"
    )
    args = parser.parse_args()
    n = args.n
    observations = synthetic(n)

    # End to end: canonical bytes of every message, dedup, canonical order, Merkle root.
    t_dedup, result = timed(lambda: deduplicate(observations))
    t_root, root = timed(lambda: merkle_root(result.leaves))
    total = t_dedup + t_root
    leaves = result.leaves

    t_floor, _ = timed(lambda: bare_hash_floor(leaves))
    t_pym = None
    if not args.skip_pymerkle:
        t_pym, pym = timed(lambda: pymerkle_root(leaves))
        assert pym == root, "pymerkle disagrees with tasks.merkle"

    sample = observations[: min(n, 100_000)]
    t_generic, _ = timed(lambda: [rfc8785.dumps(to_json_value(o)) for o in sample])

    print(
        f"# streamnotary core benchmark: n = {n:,}, Python {platform.python_version()}, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"# times are CPU seconds; wall seconds were {', '.join(f'{w:.3f}' for w in WALL)}")
    print(
        f"distinct records {len(leaves):,}, duplicates {result.duplicates:,}, "
        f"conflicts {result.conflicts:,}, root {root.hex()}"
    )
    print()
    print("| measurement | seconds | rate |")
    print("|---|---:|---:|")
    print(f"| canonicalize + dedup ({n:,} messages) | {t_dedup:.3f} | {n / t_dedup:,.0f} rec/s |")
    print(
        f"| Merkle root, tasks.merkle ({len(leaves):,} leaves) | {t_root:.3f} | "
        f"{len(leaves) / t_root:,.0f} leaves/s |"
    )
    print(
        f"| batch core, one call (canonicalize + dedup + Merkle) | {total:.3f} | "
        f"**{n / total:,.0f} rec/s** |"
    )
    print(
        f"| bare hashlib floor (2n-1 hashes) | {t_floor:.3f} | "
        f"{len(leaves) / t_floor:,.0f} leaves/s |"
    )
    if t_pym is not None:
        print(
            f"| pymerkle 7.0.0 InmemoryTree root | {t_pym:.3f} | "
            f"{len(leaves) / t_pym:,.0f} leaves/s |"
        )
    print(
        f"| generic rfc8785.dumps ({len(sample):,} records) | {t_generic:.3f} | "
        f"{len(sample) / t_generic:,.0f} rec/s |"
    )
    print()
    print(f"Merkle root / bare-hash floor: {t_root / t_floor:.2f}x (target <= 1.25x)")
    if t_pym is not None:
        print(f"pymerkle / tasks.merkle: {t_pym / t_root:.1f}x slower")
    print(f"batch core (one dedup over all records): {n / total:,.0f} rec/s")
    pipeline_table(observations, args.repeat)
    if args.baseline_tree:
        baseline_table(n, args.repeat, args.baseline_tree)


def pipeline_table(observations: list[Observation], repeat: int) -> None:
    """The pipeline-shaped measurements, median of `repeat` runs with spread."""
    n = len(observations)
    spec = WindowSpec(86_400)
    messages = as_messages(observations)
    values = [m.value for m in messages]
    sample = values[: min(n, 100_000)]
    t_general, _ = repeated(lambda: [decode_record(v) for v in sample], repeat)
    t_fast, _ = repeated(lambda: [decode_canonical(v) for v in sample], repeat)
    t_core, windows = repeated(lambda: pipeline_core(messages, spec, False), repeat)
    t_parquet, _ = repeated(lambda: pipeline_core(messages, spec, True), repeat)
    print()
    print(f"pipeline-shaped, {n:,} messages in {windows:,} daily windows, {repeat} runs each")
    print()
    print("| measurement | median rate (min..max) |")
    print("|---|---:|")
    print(f"| decode_record, general ({len(sample):,}) | {rate(len(sample), t_general)} |")
    print(f"| decode_canonical, fast ({len(sample):,}) | {rate(len(sample), t_fast)} |")
    print(f"| **end to end**: classify + build_window per window | **{rate(n, t_core)}** |")
    print(f"| same, windows/s | {rate(windows, t_core, 'windows/s')} |")
    print(f"| end to end + Parquet payload per window | {rate(n, t_parquet)} |")
    print(f"| same, windows/s | {rate(windows, t_parquet, 'windows/s')} |")


# One pipeline-shaped run (classify, windows, contents, Parquet) in a fresh process of a
# tree, on the same synthetic messages: seconds on stdout.
_ONE_RUN = """
import sys, time
from benchmarks.core import as_messages, pipeline_core, synthetic
from tasks.window import WindowSpec
messages = as_messages(synthetic(int(sys.argv[1])))
spec = WindowSpec(86_400)
pipeline_core(messages[:20_000], spec, True)  # warm: caches, imports
started = time.process_time()
pipeline_core(messages, spec, True)
print(time.process_time() - started)
"""


def baseline_table(n: int, repeat: int, baseline: Path) -> None:
    """This tree's pipeline core beside `baseline`'s, alternating fresh processes."""
    trees = {"this tree": ROOT, f"baseline {baseline}": baseline.resolve()}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(repeat):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run(
                [sys.executable, "-c", _ONE_RUN, str(n)],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    print()
    print(f"pipeline-shaped end to end + Parquet, {n:,} messages, fresh processes, CPU seconds")
    print()
    print("| code | median rate (min..max) |")
    print("|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {rate(n, t)} |")


if __name__ == "__main__":
    main()
