"""Helpers for the issue 8 drills on real chains (anvil, the live MultiChain node).

A `ChainEnv` is a `PipelineEnv` whose ledger is a chain node: the same session servers
(noida-db, SeaweedFS, anvil / MultiChain) with a fresh topic, bucket, home and (EVM)
contract or (MultiChain) stream. The auditor side pins the exported trust policy, as
`audit --trust` / `verify-proof --trust` do; the attacker side builds proof bundles on a
third party's ledger entries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flows.audit import Selection, run_audit
from flows.audit_log import TrustPolicy
from storage import layout
from storage.kafka import KafkaLog
from storage.ledger.base import AnchorEntry, Ledger
from storage.ledger.factory import open_ledger
from storage.logkey import log_origin
from storage.tlog import LogReader
from streamnotary.commands.trust import trust_policy
from tasks.merkle import consistency_proof, merkle_root
from tasks.run_log import head_entry
from tasks.tlog.entries import entry_bytes
from tests.pipeline_env import PipelineEnv, demo_observations

VERIFIER = Path(__file__).resolve().parents[1] / "docs" / "verify_bundle.py"


class ChainEnv(PipelineEnv):
    """A pipeline environment whose ledger settings come from `ledger_env`."""

    ledger_env: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.ledger_env}


def chain_env(base: PipelineEnv, ledger_env: dict[str, str]) -> ChainEnv:
    env = ChainEnv(**base.__dict__)
    env.ledger_env = ledger_env
    return env


def observations_between(first: str, end: str) -> list[Any]:
    """Demo observations with `first` <= observed_at < `end` (ISO dates, UTC)."""
    from datetime import UTC, datetime

    lo = datetime.fromisoformat(first).replace(tzinfo=UTC)
    hi = datetime.fromisoformat(end).replace(tzinfo=UTC)
    return [o for o in demo_observations() if lo <= o.observed_at < hi]


def export_trust(env: PipelineEnv, path: Path) -> dict[str, Any]:
    """`streamnotary trust export > path` for the env (after its first anchor)."""
    with env.active() as settings:
        policy = trust_policy(settings)
    path.write_text(json.dumps(policy))
    return policy


def pinned_audit(env: PipelineEnv, trust_path: Path, state: Path | None = None) -> dict[str, Any]:
    """`audit --all --trust trust_path [--state state]`: the ledger opened with the pinned
    identity (foreign entries ignored), the log key and origin from the policy."""
    trust = TrustPolicy.load(trust_path)
    with (
        env.active() as settings,
        open_ledger(settings, trusted_identity=trust.ledger) as ledger,
        KafkaLog(env.kafka_bootstrap, env.topic) as kafka,
    ):
        return run_audit(
            store=env.store(),
            ledger=ledger,
            kafka=kafka,
            topic=settings.topic,
            selection=Selection(all=True),
            trust=trust,
            fallback=(log_origin(settings), None),
            state_dir=str(state) if state else None,
        )


def log_codes(report: dict[str, Any], severity: str | None = None) -> set[str]:
    return {
        f["code"]
        for f in report["log"]["findings"]
        if severity is None or f["severity"] == severity
    }


def prove(env: PipelineEnv, trust_path: Path, station: str, at: str) -> dict[str, Any]:
    """`streamnotary prove --station S --at T`: a v2 bundle of the operator's data."""
    from flows.audit import parse_time, prove_record

    trust = TrustPolicy.load(trust_path)
    with env.active() as settings, open_ledger(settings, trusted_identity=trust.ledger) as ledger:
        return prove_record(
            store=env.store(),
            ledger=ledger,
            topic=settings.topic,
            station=station,
            at=parse_time(at),
            window_seconds=settings.window_seconds,
            verifier=trust.verifier,
        )


def log_size(env: PipelineEnv, trust_path: Path) -> int:
    trust = TrustPolicy.load(trust_path)
    head = LogReader(env.store(), env.topic, trust.verifier, trust.origin).checkpoint()
    assert head is not None
    return head.size


def extended_head(
    env: PipelineEnv, trust_path: Path, from_size: int, to_size: int
) -> tuple[AnchorEntry, list[bytes]]:
    """What a third party who can read the bucket computes: the operator's log extended by
    forged entries to `to_size`, its head entry (a valid root) and the consistency proof
    from `from_size`. It cannot sign this head (no log key), only anchor it."""
    trust = TrustPolicy.load(trust_path)
    reader = LogReader(env.store(), env.topic, trust.verifier, trust.origin)
    head = reader.checkpoint()
    assert head is not None
    leaves = [entry_bytes(e) for e in reader.entries(0, head.size)]
    while len(leaves) < to_size:
        leaves.append(b'{"forged":%d}' % len(leaves))
    entry = head_entry(env.topic, len(leaves), merkle_root(leaves).hex(), head.size)
    return entry, consistency_proof(leaves, from_size)


def copied_head(env: PipelineEnv, ledger: Ledger, size: int) -> AnchorEntry:
    """The operator's anchored head entry of `size`, copied body and all."""
    ref = ledger.lookup(layout.head_entry_key(env.topic, size))
    assert ref is not None
    return AnchorEntry(ref.key, "head", ledger.read(ref))


def with_anchor(
    bundle: dict[str, Any], ref: dict[str, Any], body: dict[str, Any], consistency: list[bytes]
) -> dict[str, Any]:
    """`bundle` with its anchored head replaced by another ledger entry."""
    forged = json.loads(json.dumps(bundle))
    forged["anchor"] = {
        **forged["anchor"],
        "ref": ref,
        "body": body,
        "consistency": [h.hex() for h in consistency],
    }
    return forged


def verify_all(
    env: PipelineEnv, bundle: dict[str, Any], trust_path: Path, tmp: Path, name: str
) -> dict[str, tuple[int, str]]:
    """(exit status, output) of `verify-proof --trust`, `verify-proof --trust --online` and
    `python docs/verify_bundle.py --trust`, each run as the real program."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(bundle))
    out = {}
    for mode, args in (
        ("offline", ["verify-proof", "--trust", str(trust_path), str(path)]),
        ("online", ["verify-proof", "--online", "--trust", str(trust_path), str(path)]),
    ):
        done = env.run_cli(*args)
        out[mode] = (done.returncode, done.stdout + done.stderr)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(VERIFIER), "--trust", str(trust_path), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out["standalone"] = (done.returncode, done.stdout + done.stderr)
    return out
