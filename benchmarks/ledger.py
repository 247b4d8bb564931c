"""Anchors per second for each ledger backend that runs here: per window vs per batch.

The same N synthetic checkpoint digests (default 200 windows) are anchored on every
backend in two ways:

* ``per window``: one ledger entry per window (a batch of one: root = RFC 6962 leaf hash
  of the window's checkpoint digest), N entries;
* ``per batch``: one ledger entry for batches of B windows (the pipeline's way: one batch
  root per run, each window proven by its receipt's inclusion proof), N / B entries.

Backends: ``local`` (SQLite hash chain), ``evm`` (a real anvil, auto-mining one block per
transaction), ``bitcoin`` (a real litecoind in regtest; anchors return at 0 confirmations,
in the mempool), and ``multichain`` against the in-process **emulator** of
tests/multichain_emulator.py (no MultiChain node installs here: its figure measures our
client and the emulator, not MultiChain). Nodes are started with `streamnotary.chain_nodes`
and stopped by PID.

    python benchmarks/ledger.py [--windows 200] [--batch 50] [--backends local,evm,...]

Prints a Markdown table (and writes it to benchmarks/out/ledger.md).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage.layout import batch_entry_key  # noqa: E402
from storage.ledger.base import AnchorEntry, Ledger  # noqa: E402
from streamnotary.chain_nodes import start_anvil, start_litecoind  # noqa: E402
from tasks.batch import Batch, BatchMember  # noqa: E402

TOPIC = "dwd.bench"


@dataclass(frozen=True)
class Result:
    backend: str
    mode: str
    windows: int
    entries: int
    seconds: float

    @property
    def anchors_per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.seconds


def synthetic_members(n: int, salt: str) -> list[BatchMember]:
    """N checkpoint digests of N distinct daily windows (salted so reruns never collide)."""
    return [
        BatchMember(f"{salt}-station{i:04d}-20240101T000000Z-86400s", 0,
                    hashlib.sha256(f"{salt}/{i}".encode()).hexdigest())
        for i in range(n)
    ]


def batch_entry(members: list[BatchMember]) -> AnchorEntry:
    """The batch entry of `members` (shape every backend, including bitcoin, accepts)."""
    root = Batch.of(TOPIC, members).root.hex()
    body = {"kind": "batch", "topic": TOPIC, "root": root, "size": len(members)}
    return AnchorEntry(batch_entry_key(TOPIC, root), "batch", body)


Settle = Callable[[int], None]


def run(backend: str, ledger: Ledger, members: list[BatchMember], batch_size: int,
        settle: Settle | None = None) -> list[Result]:
    """Time both modes over the same checkpoints (keys differ by root, so no collisions).

    `settle(n)` runs after the n-th anchor, untimed: the bitcoin run mines a block every
    20 anchors there, as a real chain would, to stay under the mempool's ancestor limit.
    """
    results = []
    for mode, groups in (
        ("per window", [[m] for m in members]),
        (f"per batch of {batch_size}",
         [members[i : i + batch_size] for i in range(0, len(members), batch_size)]),
    ):
        spent = 0.0
        for n, group in enumerate(groups, 1):
            started = time.perf_counter()
            ledger.anchor(batch_entry(group))
            spent += time.perf_counter() - started
            if settle is not None:
                settle(n)
        results.append(Result(backend, mode, len(members), len(groups), spent))
    return results


@contextmanager
def local_ledger() -> Iterator[tuple[Ledger, Settle | None]]:
    from storage.ledger.local import LocalLedger

    with tempfile.TemporaryDirectory() as d:
        ledger = LocalLedger(Path(d) / "ledger.sqlite3")
        yield ledger, None
        ledger.close()


@contextmanager
def evm_ledger() -> Iterator[tuple[Ledger, Settle | None]]:
    from storage.ledger.evm import EvmLedger

    node = start_anvil()
    try:
        yield EvmLedger(node.url, deployments_file=node.workdir / "evm_contract.json"), None
    finally:
        node.stop()


@contextmanager
def bitcoin_ledger() -> Iterator[tuple[Ledger, Settle | None]]:
    from storage.ledger.bitcoin import BitcoinLedger

    node = start_litecoind(blocks=101)
    ledger = BitcoinLedger(node.url, user=node.user, password=node.password, wallet=node.wallet)

    def settle(n: int) -> None:
        if n % 20 == 0:  # each anchor spends the previous change: stay under 25 ancestors
            node.mine(1)

    try:
        yield ledger, settle
    finally:
        ledger.close()
        node.stop()


@contextmanager
def multichain_emulator_ledger() -> Iterator[tuple[Ledger, Settle | None]]:
    from storage.ledger.multichain import MultiChainLedger
    from tests.multichain_emulator import MultiChainEmulator

    emulator = MultiChainEmulator(password=secrets.token_hex(16)).start()
    ledger = MultiChainLedger(emulator.url, user=emulator.user, password=emulator.password,
                              chain_name=emulator.chain_name, stream="bench")
    try:
        yield ledger, None
    finally:
        ledger.close()
        emulator.stop()


BACKENDS: dict[str, tuple[str, Callable[[], contextmanager]]] = {  # type: ignore[type-arg]
    "local": ("local (SQLite)", local_ledger),
    "evm": ("evm (anvil 1.7.1)", evm_ledger),
    "bitcoin": ("bitcoin (litecoind 0.21.2 regtest)", bitcoin_ledger),
    "multichain": ("multichain (EMULATOR, not a node)", multichain_emulator_ledger),
}


def table(results: list[Result]) -> str:
    lines = [
        "| backend | mode | windows | ledger entries | seconds | anchors/s | windows/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.mode} | {r.windows} | {r.entries} | {r.seconds:.2f} "
            f"| {r.anchors_per_s:.1f} | {r.windows_per_s:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=200, help="checkpoints (windows)")
    ap.add_argument("--batch", type=int, default=50, help="windows per batch entry")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    args = ap.parse_args(argv)
    members = synthetic_members(args.windows, secrets.token_hex(4))
    results: list[Result] = []
    for name in args.backends.split(","):
        label, opener = BACKENDS[name]
        with opener() as (ledger, settle):
            results += run(label, ledger, members, args.batch, settle)
        print("\n".join(table(results[-2:]).splitlines()[2:]), file=sys.stderr)
    out = table(results)
    print(out)
    target = REPO / "benchmarks" / "out" / "ledger.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
