"""Benchmark of the deterministic window core: canonicalize + dedup + Merkle root.

    python benchmarks/core.py [--n 1000000]

Synthetic input: `n` observations of 100 stations, hour after hour in arrival order, with
1 % of the messages re-delivered (duplicates), as a replayed Kafka topic looks.

Prints, in one run:
* end-to-end records/s of `deduplicate` (which canonicalizes every record) followed by
  `merkle_root` over the surviving leaves (target >= 300,000 records/s on one core);
* the Merkle root time of `tasks.merkle.merkle_root` beside pymerkle 7.0.0 (in-memory
  tree, its default RFC 6962 prefixes) and beside the bare-hashlib floor: one list
  comprehension of the n leaf hashes SHA-256(0x00 || leaf) and one of n-1 node hashes
  SHA-256(0x01 || a || b) over 32-byte inputs, i.e. the same 2n-1 hashes on inputs of the
  same sizes with no tree bookkeeping (target: within 1.25x of the floor);
* the generic `rfc8785` encoder's records/s, which is why tasks/record.py has its own.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rfc8785

from tasks.dedup import deduplicate
from tasks.merkle import merkle_root
from tasks.record import Observation, to_json_value

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
        f"| **end to end** (canonicalize + dedup + Merkle) | {total:.3f} | "
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
    print(f"end to end: {n / total:,.0f} rec/s (target >= 300,000)")


if __name__ == "__main__":
    main()
