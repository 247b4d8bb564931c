"""Layout pack writes no receipts: each run's head-anchor record lets a walletless auditor
find the anchored heads on a Bitcoin-family chain (issue 8 item 4: anchors are found by
txid with `getrawtransaction`, no wallet).

On the real broker, SeaweedFS and a litecoind regtest node: the operator anchors in layout
`pack` (the default), the auditor audits through a ledger opened without any wallet and
pinned to the operator's identity. With the records in the bucket every head is found and
the log check passes; with the records deleted (the defence removed) the heads cannot be
found without the operator's wallet and the log check does not pass.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import Selection, run_audit
from flows.audit_log import TrustPolicy
from storage.kafka import KafkaLog
from storage.ledger.bitcoin import BitcoinLedger
from storage.logkey import log_origin
from storage.tlog import head_anchor_key
from streamnotary.chain_nodes import LitecoindNode
from streamnotary.commands.trust import trust_policy
from streamnotary.config import Settings, load_settings
from tasks.canonical import parse_document
from tests.audit_env import audit_observations
from tests.pipeline_env import PipelineEnv, make_env
from tests.test_ledger_bitcoin_defences import funded_wallet
from tests.test_schemas import assert_valid


@contextmanager
def on_bitcoin(env: PipelineEnv) -> Iterator[Settings]:
    """`env.active()` with the ledger switched to the litecoind node (set by the test)."""
    with env.active():
        os.environ["STREAMNOTARY_LEDGER"] = "bitcoin"
        yield load_settings()


def _audit(env: PipelineEnv, node: LitecoindNode, trust: dict[str, Any]) -> dict[str, Any]:
    auditor = BitcoinLedger(
        node.url, user=node.user, password=node.password, trusted_identity=trust["ledger"]
    )
    with env.active() as settings, KafkaLog(env.kafka_bootstrap, env.topic) as kafka:
        return run_audit(
            store=env.store(),
            ledger=auditor,
            kafka=kafka,
            topic=settings.topic,
            selection=Selection(all=True),
            trust=TrustPolicy.from_json(trust, "test"),
            fallback=(log_origin(settings), None),
        )


@pytest.mark.usefixtures("prefect_harness")
def test_walletless_auditor_finds_pack_heads_by_their_records(
    tmp_path: Any,
    kafka_bootstrap: str,
    s3_server: Any,
    litecoind_node: LitecoindNode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = litecoind_node
    funded_wallet(node, f"other-{secrets.token_hex(4)}")  # two wallets: none is implicit
    monkeypatch.setenv("STREAMNOTARY_OBJECT_LAYOUT", "pack")
    monkeypatch.setenv("STREAMNOTARY_LEDGER_URL", f"{node.url}/wallet/{node.wallet}")
    monkeypatch.setenv("STREAMNOTARY_LEDGER_USER", node.user)
    monkeypatch.setenv("STREAMNOTARY_LEDGER_PASSWORD", node.password)
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    observations = audit_observations()
    env.produce_observations(observations[: len(observations) // 2])
    with on_bitcoin(env):
        first = anchor_windows(drain=False)
    env.produce_observations(observations[len(observations) // 2 :])
    with on_bitcoin(env) as settings:
        second = anchor_windows(drain=True)
        trust = trust_policy(settings)
    node.mine(1)
    sizes = [s["log_size"] for s in (first, second) if s["log_size"]]
    assert len(sizes) == 2, (first, second)

    store = env.store()
    for size in sizes:
        record = parse_document(store.get(head_anchor_key(env.topic, size)))
        assert_valid("head_anchor.schema.json", record, "head anchor record")
        assert record["ledger"]["key"] == f"head/{env.topic}/{size}"
        assert record["ledger"]["locator"]["address"] == trust["ledger"]["operator_address"]

    report = _audit(env, node, trust)
    assert report["log"]["verdict"] == "pass", report["log"]
    assert report["verdict"] == "pass"

    for size in sizes:  # the defence removed: no locator, and the auditor has no wallet
        store.delete(head_anchor_key(env.topic, size))
    blind = _audit(env, node, trust)
    assert blind["log"]["verdict"] != "pass", blind["log"]

    for size in sizes:  # a bucket writer plants hostile records: findings, never a traceback
        hostile = {"schema": "streamnotary.head-anchor/1", "size": size, "ledger": {"locator": 7}}
        store.put(head_anchor_key(env.topic, size), json.dumps(hostile).encode())
    planted = _audit(env, node, trust)
    assert planted["log"]["verdict"] != "pass", planted["log"]
