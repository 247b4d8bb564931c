"""Drill on the real services (noida-db, SeaweedFS, a live MultiChain 2.3.3 node):
a second publisher pre-publishes the next window keys.

The attacker is another address of the chain that was granted write on the operator's
stream (a misconfigured grant, or another tenant of a shared chain). Knowing the key
scheme (``window/<topic>/<window id>/r<rev>``), it publishes well-formed streamnotary
documents under the keys of the windows the operator will anchor next. Defence: every
item's ``publishers`` are checked against the trusted publishers (storage/ledger/multichain.py).
Outcome: the operator's run still anchors every window, the audit passes with the foreign
items reported as ``info``. Without the defence (a ledger that trusts every writer) the
same anchoring is refused as a conflict: the second half of the test shows it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import Selection, run_audit
from storage.kafka import KafkaLog
from storage.layout import window_entry_key
from storage.ledger.base import AnchorConflict, AnchorEntry
from storage.ledger.multichain import MultiChainLedger
from tasks.canonical import canonical_digest
from tasks.window import WindowSpec
from tests.audit_env import audit_observations
from tests.pipeline_env import PipelineEnv, make_env

CONFIRMATION_DEADLINE_S = 60.0


def _ledger_env(env: PipelineEnv, node: Any, stream: str) -> dict[str, str]:
    return {
        "STREAMNOTARY_LEDGER": "multichain",
        "STREAMNOTARY_LEDGER_URL": node.url,
        "STREAMNOTARY_LEDGER_USER": node.user,
        "STREAMNOTARY_LEDGER_PASSWORD": node.password,
        "STREAMNOTARY_LEDGER_CHAIN_NAME": node.chain_name,
        "STREAMNOTARY_LEDGER_STREAM": stream,
        "STREAMNOTARY_LEDGER_CONFIRMATIONS": "1",
    }


class MultiChainEnv(PipelineEnv):
    ledger_env: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.ledger_env}


@pytest.fixture
def multichain_env(
    tmp_path: Any,
    kafka_bootstrap: str,
    s3_server: Any,
    prefect_harness: None,
    multichain_node: Any,
) -> Iterator[tuple[MultiChainEnv, MultiChainLedger]]:
    base = make_env(tmp_path, kafka_bootstrap, s3_server)
    env = MultiChainEnv(**base.__dict__)
    stream = f"sn-drill-{secrets.token_hex(4)}"
    env.ledger_env = _ledger_env(env, multichain_node, stream)
    operator = MultiChainLedger(
        multichain_node.url,
        user=multichain_node.user,
        password=multichain_node.password,
        chain_name=multichain_node.chain_name,
        stream=stream,
    )
    operator.ensure_stream()  # the operator's stream, write-restricted, as `anchor` creates it
    yield env, operator
    operator.close()


def _window_keys(topic: str) -> list[str]:
    keys = set()
    for o in audit_observations():
        w = WindowSpec(86_400).key_of(o.station_id, o.observed_at)
        keys.add(window_entry_key(topic, w, 0))
    return sorted(keys)


def test_second_publisher_squatting_next_window_keys_is_ignored(
    multichain_env: tuple[MultiChainEnv, MultiChainLedger],
    multichain_node: Any,
) -> None:
    env, operator = multichain_env
    squatter = str(operator.rpc.call("getnewaddress"))
    operator.rpc.call("grant", squatter, "send")
    operator.rpc.call("grant", squatter, f"{operator.stream}.write")  # the misconfiguration
    keys = _window_keys(env.topic)
    assert len(keys) == 6
    forged = [
        {
            "keys": [key],
            "data": {
                "json": {
                    "entry_key": key,
                    "kind": "window",
                    "digest": canonical_digest({"forged": key}),
                    "body": {"forged": key},
                }
            },
        }
        for key in keys
    ]
    squat_txid = operator.rpc.call("publishmultifrom", squatter, operator.stream, forged)

    env.produce_observations(audit_observations())
    with env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 6, summary  # the squatter blocked nothing

    for key in keys:
        ref = operator.lookup(key)
        assert ref is not None and ref.locator["publisher"] == operator.operator_address()
        assert ref.locator["txid"] != squat_txid
        assert [f["txid"] for f in operator.foreign_entries(key)] == [squat_txid]

    report = _audit_when_final(env, operator)
    assert report["verdict"] == "pass", [
        (w["window_id"], w["verdict"]) for w in report["windows"] if w["verdict"] != "pass"
    ]
    for w in report["windows"]:
        [revision] = w["revisions"]
        findings = revision["checks"]["anchored"]["findings"]
        foreign = [f for f in findings if f["code"] == "window_entry_foreign_items"]
        assert [f["severity"] for f in foreign] == ["info"], findings
        assert squatter in foreign[0]["message"]

    # Defence removed: a ledger that trusts every writer of the stream takes the squatter's
    # item as the anchor of the key, and the operator's entry then conflicts.
    trusting = MultiChainLedger(
        multichain_node.url,
        user=multichain_node.user,
        password=multichain_node.password,
        chain_name=multichain_node.chain_name,
        stream=operator.stream,
        trusted_identity={
            **operator.identity(),
            "publishers": [operator.operator_address(), squatter],
        },
    )
    entry_ref = operator.lookup(keys[0])
    assert entry_ref is not None
    body = operator.read(entry_ref)
    with pytest.raises(AnchorConflict):
        trusting.anchor(AnchorEntry(keys[0], "window", body))
    trusting.close()


def _audit_when_final(env: MultiChainEnv, ledger: MultiChainLedger) -> dict[str, Any]:
    """Audit until no entry is pending (blocks come every 2 s on the test chain)."""
    deadline = time.monotonic() + CONFIRMATION_DEADLINE_S
    while True:
        with env.active() as settings, KafkaLog(env.kafka_bootstrap, env.topic) as kafka:
            report = run_audit(
                store=env.store(),
                ledger=ledger,
                kafka=kafka,
                topic=settings.topic,
                selection=Selection(all=True),
            )
        if report["verdict"] != "pending" or time.monotonic() > deadline:
            return report
        _next_block(ledger, deadline)


def _next_block(ledger: MultiChainLedger, deadline: float) -> None:
    """Wait until the chain grows by a block (2 s on the test chain), at most to `deadline`:
    a pending entry gains its confirmation only then, so auditing sooner is wasted work."""
    height = int(ledger.rpc.call("getblockcount"))
    while int(ledger.rpc.call("getblockcount")) <= height and time.monotonic() < deadline:
        time.sleep(0.05)


def _publish_as(
    operator: MultiChainLedger, squatter: str, entries: list[AnchorEntry]
) -> list[dict[str, Any]]:
    """The second publisher writes streamnotary-shaped items; their references (JSON)."""
    items = [
        {
            "keys": [e.key],
            "data": {
                "json": {"entry_key": e.key, "kind": e.kind, "digest": e.digest, "body": e.body}
            },
        }
        for e in entries
    ]
    txid = operator.rpc.call("publishmultifrom", squatter, operator.stream, items)
    vouts = {
        item["data"]["json"]["entry_key"]: int(item["vout"])
        for item in operator.rpc.call("liststreamtxitems", operator.stream, txid, True)
    }
    return [
        {
            "backend": "multichain",
            "key": e.key,
            "digest": e.digest,
            "locator": {
                "txid": txid,
                "vout": vouts[e.key],
                "stream": operator.stream,
                "publisher": squatter,
            },
            "confirmations": 0,
            "required_confirmations": 1,
        }
        for e in entries
    ]


def test_second_publisher_head_keys_and_bundles_on_its_items_are_rejected(
    multichain_env: tuple[MultiChainEnv, MultiChainLedger], tmp_path: Any
) -> None:
    """The second publisher pre-publishes log head keys too, and later builds proof bundles
    on its own items. Defences: the pinned publishers (audit: `head_entry_foreign_items` is
    info), `tasks.bundle_identity` (offline, both verifiers) and `flows.prove._read_own_ref`
    (`verify-proof --online` reads the referenced item through the pinned ledger)."""
    from tests.chain_drill_env import (
        copied_head,
        export_trust,
        extended_head,
        log_codes,
        log_size,
        pinned_audit,
        prove,
        verify_all,
        with_anchor,
    )

    env, operator = multichain_env
    squatter = str(operator.rpc.call("getnewaddress"))
    operator.rpc.call("grant", squatter, "send")
    operator.rpc.call("grant", squatter, f"{operator.stream}.write")  # the misconfiguration
    heads = [
        AnchorEntry(
            f"head/{env.topic}/{s}",
            "head",
            {"kind": "head", "topic": env.topic, "size": s, "root": "ab" * 32, "previous_size": 0},
        )
        for s in range(1, 13)
    ]
    squats = _publish_as(operator, squatter, heads + [
        AnchorEntry(k, "window", {"forged": k}) for k in _window_keys(env.topic)
    ])  # fmt: skip

    env.produce_observations(audit_observations())
    with env.active():
        assert anchor_windows(drain=True)["new_anchors"] == 6
    trust = tmp_path / "trust.json"
    policy = export_trust(env, trust)
    assert policy["ledger"]["publishers"] == [operator.operator_address()] != [squatter]
    size = log_size(env, trust)
    assert size <= 12  # its head key was squatted

    deadline = time.monotonic() + CONFIRMATION_DEADLINE_S
    report = pinned_audit(env, trust)
    while report["verdict"] == "pending" and time.monotonic() < deadline:
        _next_block(operator, deadline)
        report = pinned_audit(env, trust)
    assert report["verdict"] == "pass", [f for f in report["log"]["findings"]]
    assert "head_entry_foreign_items" in log_codes(report, "info")
    assert any(squatter in f["message"] for f in report["log"]["findings"])

    honest = prove(env, trust, "00433", "2019-09-07T17:00Z")
    assert honest["anchor"]["ref"]["locator"]["publisher"] == operator.operator_address()
    ok = verify_all(env, honest, trust, tmp_path, "honest")
    assert {mode: rc for mode, (rc, _) in ok.items()} == {
        "offline": 0, "online": 0, "standalone": 0,
    }, ok  # fmt: skip

    # (a) the head of a forged extension of the log, a valid consistency proof, published
    # by the second publisher under a key the operator has not used.
    entry, proof = extended_head(env, trust, honest["log"]["size"], 20)
    [ref] = _publish_as(operator, squatter, [entry])
    out = verify_all(env, with_anchor(honest, ref, entry.body, proof), trust, tmp_path, "ext")
    for mode in ("offline", "online", "standalone"):
        rc, text = out[mode]
        assert rc == 1 and "NOT VERIFIED" in text, (mode, text)
    for mode in ("offline", "standalone"):
        assert f"published by {squatter}" in out[mode][1], out[mode][1]

    # (b) its copy of the operator's real head, the locator claiming the operator: offline
    # nothing can tell, online the referenced item is read and refused.
    copy = copied_head(env, operator, honest["anchor"]["body"]["size"])
    [copy_ref] = _publish_as(operator, squatter, [copy])
    lying = {
        **copy_ref,
        "locator": {**copy_ref["locator"], "publisher": operator.operator_address()},
    }
    consistency = [bytes.fromhex(h) for h in honest["anchor"]["consistency"]]
    out = verify_all(env, with_anchor(honest, lying, copy.body, consistency), trust, tmp_path, "b")
    rc, text = out["online"]
    assert rc == 1 and "ForeignPublisher" in text, text
    assert copy_ref["locator"]["txid"] in out["offline"][1]  # the item an outsider must look up

    # (c) the pre-published item at the operator's real head key (a made-up root)
    squat_ref, squat_entry = next(
        (r, e) for r, e in zip(squats, heads, strict=False) if e.body["size"] == size
    )
    squatted = with_anchor(honest, squat_ref, squat_entry.body, [])
    out = verify_all(env, squatted, trust, tmp_path, "c")
    assert {mode: rc for mode, (rc, _) in out.items()} == {
        "offline": 1, "online": 1, "standalone": 1,
    }, out  # fmt: skip
