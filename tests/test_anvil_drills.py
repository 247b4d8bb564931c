"""Drills of issue 8 with the log heads anchored on a real anvil node (EVM ledger).

The pipeline runs on the session servers (noida-db, SeaweedFS, anvil) with its own
contract; the auditor pins the exported trust policy. Each drill names the defence whose
removal makes it pass silently (docs/audit.md, "Threat model"):

* the operator rebuilds the log from scratch with one window changed; it cannot rewrite
  the chain -> `anchored_head_mismatch` against the heads on anvil, and
  `inconsistent_with_remembered_head` against the auditor's `--state`
  (defences: tasks/audit/log.py `_anchored_root`, `_check_remembered`);
* a second account pre-publishes the next window keys and log head keys -> the
  operator's runs still anchor, the audit passes and reports the foreign items as `info`
  (defence: the EVM lookups filter by `msg.sender`), and a proof bundle built on a foreign
  head entry is rejected by `verify-proof --trust` (offline: `tasks.bundle_identity`),
  `verify-proof --online` (`flows.prove._read_own_ref`) and docs/verify_bundle.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from storage import layout
from storage.ledger.base import AnchorEntry
from storage.ledger.evm import EvmLedger
from storage.ledger.factory import open_ledger
from streamnotary.chain_nodes import AnvilNode
from tasks.window import WindowSpec
from tests.audit_env import anchor_demo_days, window
from tests.chain_drill_env import (
    ChainEnv,
    chain_env,
    copied_head,
    export_trust,
    extended_head,
    log_codes,
    log_size,
    observations_between,
    pinned_audit,
    prove,
    verify_all,
    with_anchor,
)
from tests.pipeline_env import make_env
from tests.test_audit_log_drills import TARGET, _rebuild_log
from tests.test_ledger_evm_defences import THIRD_PARTY, THIRD_PARTY_KEY

FOURTH_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # anvil #3


@pytest.fixture
def evm_env(
    tmp_path: Path,
    kafka_bootstrap: str,
    s3_server: Any,
    prefect_harness: None,
    anvil_node: AnvilNode,
) -> Iterator[ChainEnv]:
    """A fresh topic, bucket and home anchoring on the session anvil (its own contract,
    deployed on first use, signed by the node's account 0)."""
    base = make_env(tmp_path, kafka_bootstrap, s3_server)
    yield chain_env(
        base,
        {
            "STREAMNOTARY_LEDGER": "evm",
            "STREAMNOTARY_LEDGER_URL": anvil_node.url,
            "STREAMNOTARY_LEDGER_CONFIRMATIONS": "1",
        },
    )


def test_rebuilt_log_fails_against_heads_on_anvil_and_the_remembered_head(
    evm_env: ChainEnv, tmp_path: Path
) -> None:
    """The operator holds the log key and the bucket, not the chain: a log rebuilt from
    scratch with TARGET's entry naming another checkpoint is signed consistently, but its
    roots are not the ones anchored on anvil, nor an extension of the remembered head."""
    anchor_demo_days(evm_env)
    trust = tmp_path / "trust.json"
    export_trust(evm_env, trust)
    state = tmp_path / "auditor-state"
    honest = pinned_audit(evm_env, trust, state)
    assert honest["verdict"] == "pass" and honest["log"]["key_pinned"], honest["log"]["findings"]
    assert len(honest["log"]["anchored_heads"]) == 1

    _rebuild_log(evm_env)

    against_chain = pinned_audit(evm_env, trust)
    assert against_chain["verdict"] == "fail"
    assert against_chain["log"]["verdict"] == "fail"
    assert "anchored_head_mismatch" in log_codes(against_chain, "fail")
    assert "log_signature_invalid" not in log_codes(against_chain)  # signed with the real key
    assert window(against_chain, TARGET)["verdict"] == "fail"

    against_state = pinned_audit(evm_env, trust, state)
    assert {"anchored_head_mismatch", "inconsistent_with_remembered_head"} <= log_codes(
        against_state, "fail"
    )


def _squat(
    third: EvmLedger, keys: list[str], topic: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The third party anchors plausible documents under the operator's next keys:
    (reference, body) of each."""
    refs = []
    for key in keys:
        kind = key.split("/", 1)[0]
        body = {"kind": kind, "topic": topic, "forged": key}
        if kind == "head":
            body = {"kind": "head", "topic": topic, "size": int(key.rsplit("/", 1)[1]),
                    "root": "ab" * 32, "previous_size": 0}  # fmt: skip
        refs.append((third.anchor(AnchorEntry(key, kind, body)).to_json(), body))
    return refs


def test_second_account_squats_next_keys_and_bundles_on_its_entries_are_rejected(
    evm_env: ChainEnv, anvil_node: AnvilNode, tmp_path: Path
) -> None:
    anchor_demo_days(evm_env)
    trust = tmp_path / "trust.json"
    policy = export_trust(evm_env, trust)
    contract = policy["ledger"]["contract"]
    size = log_size(evm_env, trust)

    # -- the third party pre-publishes the next day's window keys and the next head keys
    third = EvmLedger(anvil_node.url, private_key=THIRD_PARTY_KEY, contract_address=contract)
    later = observations_between("2019-09-09", "2019-09-11")
    spec = WindowSpec(86_400)
    window_keys = sorted(
        {layout.window_entry_key(evm_env.topic, spec.key_of(o.station_id, o.observed_at), 0)
         for o in later}
    )  # fmt: skip
    head_keys = [layout.head_entry_key(evm_env.topic, s) for s in range(size + 1, size + 9)]
    squats = _squat(third, window_keys + head_keys, evm_env.topic)
    assert {r["locator"]["sender"] for r, _ in squats} == {THIRD_PARTY}

    evm_env.produce_observations(later)
    with evm_env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == len(window_keys) == 4, summary  # nothing was blocked
    new_size = log_size(evm_env, trust)
    assert size < new_size <= size + 8  # the operator's new head key was squatted too

    # -- the audit pins the operator: foreign items are notes, never the anchors
    report = pinned_audit(evm_env, trust)
    assert report["verdict"] == "pass", [
        (w["window_id"], w["verdict"]) for w in report["windows"] if w["verdict"] != "pass"
    ] + [f for f in report["log"]["findings"] if f["severity"] != "info"]
    assert "head_entry_foreign_items" in log_codes(report, "info")
    assert any(THIRD_PARTY in f["message"] for f in report["log"]["findings"])
    # (EVM anchors no per-window entries: the squatted window keys are never even read.)

    # -- bundles: the operator's verifies everywhere; ones on the third party's entries don't
    honest = prove(evm_env, trust, "00433", "2019-09-09T17:00Z")
    assert honest["anchor"]["ref"]["locator"]["sender"] == policy["ledger"]["operator"]
    ok = verify_all(evm_env, honest, trust, tmp_path, "honest")
    assert {mode: rc for mode, (rc, _) in ok.items()} == {
        "offline": 0, "online": 0, "standalone": 0,
    }, ok  # fmt: skip

    # (a) the head of a forged extension of the log, anchored by the third party with a
    # valid consistency proof from the bundle's signed head: every hash checks out.
    entry, proof = extended_head(evm_env, trust, honest["log"]["size"], size + 9)
    ref = third.anchor(entry).to_json()
    extension = with_anchor(honest, ref, entry.body, proof)
    out = verify_all(evm_env, extension, trust, tmp_path, "extension")
    for mode in ("offline", "online", "standalone"):
        rc, text = out[mode]
        assert rc == 1 and "NOT VERIFIED" in text, (mode, text)
    for mode in ("offline", "standalone"):
        assert f"anchored by {THIRD_PARTY}" in out[mode][1], out[mode][1]

    # (b) another account's copy of the operator's real head, its locator claiming the
    # operator as sender: offline nothing can tell; online the referenced event is read
    # through the pinned ledger and refused.
    with evm_env.active() as settings, open_ledger(settings) as operator_ledger:
        copy = copied_head(evm_env, operator_ledger, honest["anchor"]["body"]["size"])
    fourth = EvmLedger(anvil_node.url, private_key=FOURTH_KEY, contract_address=contract)
    copy_ref = fourth.anchor(copy).to_json()
    assert copy_ref["locator"]["tx"] != honest["anchor"]["ref"]["locator"]["tx"]
    lying = {**copy_ref, "locator": {**copy_ref["locator"], "sender": policy["ledger"]["operator"]}}
    replay = with_anchor(honest, lying, copy.body, [bytes.fromhex(h) for h in
                                                    honest["anchor"]["consistency"]])  # fmt: skip
    out = verify_all(evm_env, replay, trust, tmp_path, "replay")
    rc, text = out["online"]
    assert rc == 1 and "ForeignAnchor" in text and "not by the operator" in text, text
    assert copy_ref["locator"]["tx"] in out["offline"][1]  # the tx an outsider must look up

    # (c) the pre-published head entry at the operator's real next size (a made-up root)
    key = layout.head_entry_key(evm_env.topic, new_size)
    ref, body = next((r, b) for r, b in squats if r["key"] == key)
    out = verify_all(evm_env, with_anchor(honest, ref, body, []), trust, tmp_path, "squat")
    assert {mode: rc for mode, (rc, _) in out.items()} == {
        "offline": 1, "online": 1, "standalone": 1,
    }, out  # fmt: skip

    assert pinned_audit(evm_env, trust)["verdict"] == "pass"  # the forgeries changed nothing
