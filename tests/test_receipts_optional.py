"""Runs anchor the log head, not a batch; receipts are optional (object layout `pack`).

On the real broker, SeaweedFS and the local ledger: a run in layout `pack` writes no
receipt, no batch manifest and no batch ledger entry; its run entry in the signed log says
so, the audit passes without receipts and still fails a window whose checkpoint is gone
(by name), `prove` takes the inclusion proof from the log tiles and both bundle verifiers
accept the bundle. A receipt deleted in layout `per_window` fails its window by name.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit import parse_time, prove_record
from storage import layout
from storage.ledger.local import LocalLedger
from storage.logkey import load_signer, log_origin
from storage.tlog import LogReader
from tasks.proof_bundle import verify_bundle
from tests.audit_env import audit_observations, audit_report, check, codes, ledger_path
from tests.pipeline_env import PipelineEnv, make_env
from tests.test_exactly_once import ledger_keys

VERIFIER = Path(__file__).resolve().parents[1] / "docs" / "verify_bundle.py"
WINDOW = "00433_20190907T000000Z_86400s"


def _anchor(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, object_layout: str) -> None:
    monkeypatch.setenv("STREAMNOTARY_OBJECT_LAYOUT", object_layout)
    env.produce_observations(audit_observations())
    with env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 6, summary
    assert summary["ledger_entries"] == 1 + 6  # the log head + one keyed entry per window


def _trust(env: PipelineEnv, path: Path) -> tuple[Path, Any]:
    with env.active() as settings:
        origin = log_origin(settings)
        verifier = load_signer(settings).named(origin).verifier()
    policy = {"origin": origin, "verifier_key": verifier.encode()}
    ledger = {"backend": "local", "path_hint": "ledger.sqlite3", "genesis": None}
    path.write_text(
        json.dumps({"schema": "streamnotary.trust/v1", "log": policy, "ledger": ledger})
    )
    return path, verifier


@pytest.mark.usefixtures("prefect_harness")
def test_layout_pack_writes_no_receipt_and_audit_and_prove_use_the_log(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    _anchor(env, monkeypatch, "pack")
    store = env.store()
    assert not list(store.list(layout.receipts_prefix(env.topic)))
    assert not list(store.list(f"batches/{env.topic}/"))
    reader = LogReader(store, env.topic)
    head = reader.checkpoint()
    assert head is not None
    (run,) = [e for e in reader.entries(0, head.size) if e["type"] == "run"]
    assert run["layout"] == "pack"  # the signed log says no receipt is due
    keys = ledger_keys(env)  # every entry the run wrote: one head, one per window, no batch
    assert sorted(k.split("/", 1)[0] for k in keys) == ["head"] + ["window"] * 6

    report = audit_report(env)
    assert report["verdict"] == "pass", json.dumps(report["summary"])
    assert report["summary"]["checks"]["anchored"]["pass"] == 6

    # prove: the inclusion proof comes from the tiles; both verifiers accept the bundle
    trust, verifier = _trust(env, tmp_path / "trust.json")
    with env.active() as settings, LocalLedger(ledger_path(env)) as ledger:
        bundle = prove_record(
            store=store,
            ledger=ledger,
            topic=settings.topic,
            station="00433",
            at=parse_time("2019-09-07T17:00Z"),
            window_seconds=settings.window_seconds,
            verifier=verifier,
        )
    assert bundle["schema"] == "streamnotary.proof-bundle/2" and "batch" not in bundle
    assert bundle["log"]["size"] == head.size
    steps = verify_bundle(bundle, (verifier.name, verifier))
    assert any(s.startswith(f"proved: {WINDOW} revision 0") for s in steps)
    spec = importlib.util.spec_from_file_location("verify_bundle_pack", VERIFIER)
    assert spec is not None and spec.loader is not None
    standalone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standalone)
    assert standalone.verify_v2(bundle, standalone.load_trust(trust))[:2] == steps[:2]

    # without receipts (and without per-window checkpoints: they are in the run's
    # checkpoint pack) vanished evidence still fails by name: its log entry names it
    assert list(store.list(f"checkpoints/{env.topic}/")) == []
    store.delete(layout.checkpoint_pack_key(env.topic, 1))
    failed = audit_report(env)
    assert failed["verdict"] == "fail"
    assert "checkpoint_missing" in codes(check(failed, WINDOW, "anchored"))
    assert "receipt_missing" not in codes(check(failed, WINDOW, "anchored"))


@pytest.mark.usefixtures("prefect_harness")
def test_layout_per_window_writes_receipts_v2_and_a_deleted_one_fails_its_window(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    _anchor(env, monkeypatch, "per_window")
    store = env.store()
    receipts = sorted(store.list(layout.receipts_prefix(env.topic)))
    assert len(receipts) == 6
    assert {json.loads(store.get(k))["schema"] for k in receipts} == {"streamnotary.receipt/2"}
    assert audit_report(env)["verdict"] == "pass"
    store.delete(next(k for k in receipts if "/00433/20190907T" in k))
    failed = audit_report(env)
    assert codes(check(failed, WINDOW, "anchored")) == {"receipt_missing"}
