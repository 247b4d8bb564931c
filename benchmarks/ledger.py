"""Anchors per second for each ledger backend that runs here: per window, chunked, per batch.

The same N synthetic checkpoint digests (default 200 windows) are anchored on every
backend, `--repeats` times (default 3, fresh keys each time); each figure is the median
with its spread (min–max) over the repeats:

* ``per window``: one ledger entry per window (a batch of one: root = RFC 6962 leaf hash
  of the window's checkpoint digest), N entries, one `anchor` call (one transaction) each;
* ``publishmulti`` (MultiChain only): the same N per-window entries through
  `anchor_many`, which sends them in ``publishmultifrom`` transactions of `--chunk` items
  (default 32, the chain's ``max-std-op-returns-count``): ceil(N / chunk) transactions;
* ``per batch``: one ledger entry for batches of B windows (one batch root per run, each
  window proven by its receipt's inclusion proof), N / B entries.

Backends: ``local`` (SQLite hash chain), ``evm`` (a real anvil, auto-mining one block per
transaction), ``bitcoin`` (a real litecoind in regtest; anchors return at 0 confirmations,
in the mempool), ``multichain`` (a real MultiChain 2.3.3 node on a fresh chain, 2 s blocks,
started by `streamnotary.multichain_node`; it also reports the time from publishing to the
first confirmation). Nodes are stopped by PID.

    python benchmarks/ledger.py [--windows 200] [--batch 50] [--repeats 3] [--chunk 32]
                                [--backends local,evm,bitcoin,multichain]

Prints a Markdown table (and writes it to benchmarks/out/ledger.md).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import statistics
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
    entries: int  # ledger transactions / entries per run
    seconds: list[float]  # one per repeat

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, n: int) -> tuple[float, float, float]:
        """(median, min, max) of n / seconds over the repeats."""
        rates = [n / s for s in self.seconds]
        return statistics.median(rates), min(rates), max(rates)


def synthetic_members(n: int, salt: str) -> list[BatchMember]:
    """N checkpoint digests of N distinct daily windows (salted so reruns never collide)."""
    return [
        BatchMember(
            f"{salt}-station{i:04d}-20240101T000000Z-86400s",
            0,
            hashlib.sha256(f"{salt}/{i}".encode()).hexdigest(),
        )
        for i in range(n)
    ]


def batch_entry(members: list[BatchMember]) -> AnchorEntry:
    """The batch entry of `members` (shape every backend, including bitcoin, accepts)."""
    root = Batch.of(TOPIC, members).root.hex()
    body = {"kind": "batch", "topic": TOPIC, "root": root, "size": len(members)}
    return AnchorEntry(batch_entry_key(TOPIC, root), "batch", body)


Settle = Callable[[int], None]


def window_entries(members: list[BatchMember]) -> list[AnchorEntry]:
    return [batch_entry([m]) for m in members]


def modes(n: int, batch_size: int, chunked: bool) -> list[tuple[str, list[list[AnchorEntry]]]]:
    """Each mode as a list of `anchor_many` calls (a call of one entry is one `anchor`), on
    its own fresh checkpoints: a mode must never find the previous mode's keys anchored."""

    def fresh() -> list[BatchMember]:
        return synthetic_members(n, secrets.token_hex(4))

    out = [("per window", [[e] for e in window_entries(fresh())])]
    if chunked:
        out.append(("publishmulti", [window_entries(fresh())]))
    members = fresh()
    batches = [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    out.append((f"per batch of {batch_size}", [[batch_entry(b)] for b in batches]))
    return out


def run_once(
    ledger: Ledger, calls: list[list[AnchorEntry]], settle: Settle | None
) -> tuple[float, int]:
    """Seconds spent anchoring (untimed settles), and the number of distinct transactions."""
    spent, txs = 0.0, set()
    for n, call in enumerate(calls, 1):
        started = time.perf_counter()
        refs = ledger.anchor_many(call) if len(call) > 1 else [ledger.anchor(call[0])]
        spent += time.perf_counter() - started
        txs.update(
            str(r.locator.get("txid") or r.locator.get("tx_hash") or (r.key, i))
            for i, r in enumerate(refs)
        )
        if settle is not None:
            settle(n)
    return spent, len(txs)


def run(
    backend: str,
    ledger: Ledger,
    n: int,
    batch_size: int,
    repeats: int,
    settle: Settle | None = None,
    chunked: bool = False,
) -> list[Result]:
    """Time every mode `repeats` times, each on fresh keys."""
    seconds: dict[str, list[float]] = {}
    entries: dict[str, int] = {}
    for _ in range(repeats):
        for mode, calls in modes(n, batch_size, chunked):
            spent, txs = run_once(ledger, calls, settle)
            seconds.setdefault(mode, []).append(spent)
            entries[mode] = txs
    return [Result(backend, mode, n, entries[mode], s) for mode, s in seconds.items()]


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


CONFIRMATION_TIMES: list[float] = []


@contextmanager
def multichain_ledger() -> Iterator[tuple[Ledger, Settle | None]]:
    from storage.ledger.multichain import MultiChainLedger
    from streamnotary.multichain_node import start_multichain

    with tempfile.TemporaryDirectory() as d:
        node = start_multichain(datadir=Path(d))
        ledger = MultiChainLedger(
            node.url,
            user=node.user,
            password=node.password,
            chain_name=node.chain_name,
            stream="bench",
            publish_chunk=CHUNK[0],
            timeout=60.0,  # a loaded machine can stall the node for seconds
        )
        try:
            yield ledger, None
            CONFIRMATION_TIMES.extend(confirmation_times(ledger))
        finally:
            ledger.close()
            node.stop()


def confirmation_times(ledger: Ledger, samples: int = 5) -> list[float]:
    """Seconds from `anchor` returning to the entry having one confirmation (polled)."""
    out = []
    for member in synthetic_members(samples, secrets.token_hex(4)):
        entry = batch_entry([member])
        started = time.perf_counter()
        ledger.anchor(entry)
        while not (ref := ledger.lookup(entry.key)) or not ref.final:
            time.sleep(0.05)
        out.append(time.perf_counter() - started)
    return out


CHUNK = [32]


BACKENDS: dict[str, tuple[str, Callable[[], contextmanager]]] = {  # type: ignore[type-arg]
    "local": ("local (SQLite)", local_ledger),
    "evm": ("evm (anvil 1.7.1)", evm_ledger),
    "bitcoin": ("bitcoin (litecoind 0.21.2 regtest)", bitcoin_ledger),
    "multichain": ("multichain (MultiChain 2.3.3 node)", multichain_ledger),
}


def table(results: list[Result]) -> str:
    lines = [
        "| backend | mode | windows | ledger transactions | seconds (median) "
        "| windows/s median (min–max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        med, lo, hi = r.rate(r.windows)
        lines.append(
            f"| {r.backend} | {r.mode} | {r.windows} | {r.entries} | {r.median_s:.2f} "
            f"| {med:.1f} ({lo:.1f}–{hi:.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=200, help="checkpoints (windows)")
    ap.add_argument("--batch", type=int, default=50, help="windows per batch entry")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (median, spread)")
    ap.add_argument("--chunk", type=int, default=32, help="MultiChain items per publishmulti")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    args = ap.parse_args(argv)
    CHUNK[0] = args.chunk
    results: list[Result] = []
    for name in args.backends.split(","):
        label, opener = BACKENDS[name]
        with opener() as (ledger, settle):
            got = run(
                label,
                ledger,
                args.windows,
                args.batch,
                max(1, args.repeats),
                settle,
                chunked=name == "multichain",
            )
        results += got
        print("\n".join(table(got).splitlines()[2:]), file=sys.stderr)
    out = table(results)
    if CONFIRMATION_TIMES:
        c = CONFIRMATION_TIMES
        out += (
            f"\n\nMultiChain (2 s target block time): anchor → 1 confirmation in "
            f"{statistics.median(c):.2f} s median ({min(c):.2f}–{max(c):.2f} s, n={len(c)})"
        )
    print(out)
    target = REPO / "benchmarks" / "out" / "ledger.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
