"""Which StreamNotaryAnchor contract an EVM ledger uses, and where that is remembered.

The compiled contract (ABI + bytecode) is ``contracts/StreamNotaryAnchor.json``, produced by
``node scripts/compile_contract.mjs`` with the pinned npm ``solc``. The address a ledger
deployed is remembered per chain id in ``<home>/evm_contract.json`` (`DeploymentRecord`):
address and block only, mode 0600, never the node URL (hosted URLs carry API keys).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from eth_utils import keccak
from web3.exceptions import Web3RPCError

from storage.ledger.base import LedgerError

ARTIFACT = "StreamNotaryAnchor.json"
DEPLOYMENTS_FILE = "evm_contract.json"


class ContractMissing(LedgerError):
    """No StreamNotaryAnchor code at the configured, recorded or pinned address."""


@cache
def contract_artifact() -> dict[str, Any]:
    """The committed compiler output (ABI, bytecode, solc version and settings)."""
    text = resources.files("storage.ledger").joinpath("contracts", ARTIFACT).read_text()
    return dict(json.loads(text))


def entry_root(entry_body: dict[str, Any], digest_hex: str) -> bytes:
    """The indexed `root` of an entry: the batch root if the body names one, else its digest."""
    root = entry_body.get("root")
    if isinstance(root, str) and len(root) == 64:
        try:
            return bytes.fromhex(root)
        except ValueError:
            pass
    return bytes.fromhex(digest_hex)


def key_hash(key: str) -> bytes:
    """keccak256 of the UTF-8 key, exactly as the contract computes it."""
    return bytes(keccak(key.encode()))


@dataclass(frozen=True, slots=True)
class Deployment:
    """A contract address and the block it was deployed in (log scans start there)."""

    address: str
    block: int


def first_block_with_code(has_code: Callable[[int], bool], head: int) -> int:
    """The first block in ``[0, head]`` at which `has_code` holds (binary search: about 25
    `eth_getCode` calls on mainnet), so that scans of a pinned contract start there."""
    lo, hi = 0, head
    while lo < hi:
        mid = (lo + hi) // 2
        if has_code(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def scan_in_chunks(
    fetch: Callable[[int, int], list[Any]], start: int, head: int, chunk: int
) -> list[Any]:
    """``fetch(from, to)`` over ``[start, head]`` in block ranges of at most `chunk`.

    Hosted providers refuse ``eth_getLogs`` over wide ranges (10k blocks, 2k, sometimes
    less); when one refuses even `chunk`, the range is halved until it answers, down to a
    single block (then its error propagates).
    """
    out: list[Any] = []
    chunk = max(chunk, 1)
    while start <= head:
        end = min(start + chunk - 1, head)
        try:
            out += fetch(start, end)
        except Web3RPCError:
            if chunk == 1:
                raise
            chunk = max(chunk // 2, 1)  # the provider's range limit is below ours
            continue
        start = end + 1
    return out


@dataclass(frozen=True)
class DeploymentRecord:
    """``{"deployments": {"<chain id>": {"address", "block"}}}`` in a 0600 file."""

    path: Path | None

    def get(self, chain_id: int) -> Deployment | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            doc = json.loads(self.path.read_text())
            rec = doc.get("deployments", {}).get(str(chain_id))
            return Deployment(str(rec["address"]), int(rec["block"])) if rec else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerError(f"unreadable deployment record {self.path}: {exc}") from exc

    def put(self, chain_id: int, dep: Deployment) -> None:
        if self.path is None:
            return
        doc: dict[str, Any] = {"deployments": {}}
        if self.path.is_file():
            doc = json.loads(self.path.read_text())
        deployments = doc.setdefault("deployments", {})
        deployments[str(chain_id)] = {"address": dep.address, "block": dep.block}
        for rec in deployments.values():
            rec.pop("url", None)  # written by older versions; may carry an API key
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
