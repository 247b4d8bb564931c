"""Proof bundles: produced from pipeline-anchored data, verified offline by two verifiers.

`streamnotary verify-proof` (tasks.proof_bundle) and the standard-library script
docs/verify_bundle.py must both accept a genuine bundle and both reject it after any single
byte of the record or of the audit path is changed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import rfc8785

from flows.audit import parse_time, prove_record
from storage.ledger.local import LocalLedger
from storage.logkey import load_signer, log_origin
from streamnotary.cli import main as cli_main
from tasks.proof_bundle import ProofBundleError, validate_bundle_schema, verify_bundle
from tests.audit_env import anchored_env, ledger_path
from tests.pipeline_env import PipelineEnv

__all__ = ["anchored_env"]

VERIFIER = Path(__file__).resolve().parents[1] / "docs" / "verify_bundle.py"


def _standalone() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_bundle_standalone", VERIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(anchored_env: PipelineEnv) -> dict[str, Any]:
    with anchored_env.active() as settings, LocalLedger(ledger_path(anchored_env)) as ledger:
        return prove_record(
            store=anchored_env.store(),
            ledger=ledger,
            topic=settings.topic,
            station="00433",
            at=parse_time("2019-09-07T17:00Z"),
            window_seconds=settings.window_seconds,
            verifier=_pinned(anchored_env)[1],
        )


def _pinned(env: PipelineEnv) -> tuple[str, Any]:
    """The env's log origin and verifier key, as an auditor's trust policy pins them."""
    with env.active() as settings:
        return log_origin(settings), load_signer(settings).named(log_origin(settings)).verifier()


@pytest.fixture(scope="module")
def trust(anchored_env: PipelineEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    origin, verifier = _pinned(anchored_env)
    path = tmp_path_factory.mktemp("trust") / "trust.json"
    ledger = {"backend": "local", "path_hint": "ledger.sqlite3", "genesis": None}
    policy = {"origin": origin, "verifier_key": verifier.encode()}
    path.write_text(
        json.dumps({"schema": "streamnotary.trust/v1", "log": policy, "ledger": ledger})
    )
    return path


def _both(bundle: dict[str, Any], trust: Path) -> tuple[list[str], list[str]]:
    """(steps of tasks.proof_bundle, steps of the standalone verifier) for either version."""
    from flows.audit_log import TrustPolicy

    policy = TrustPolicy.load(trust)
    ours = verify_bundle(bundle, (policy.origin, policy.verifier))
    standalone = _standalone()
    if bundle["schema"] == "streamnotary.proof-bundle/2":
        return ours, standalone.verify_v2(bundle, standalone.load_trust(trust))
    return ours, standalone.verify(bundle)


def test_bundle_names_the_record_and_verifies_with_both_verifiers(
    bundle: dict[str, Any], trust: Path
) -> None:
    validate_bundle_schema(bundle)
    record = json.loads(bundle["record"])
    assert record["station_id"] == "00433" and record["observed_at"] == "2019-09-07T17:00:00Z"
    assert record["temperature_c_tenths"] is None  # DWD has no temperature at this hour
    assert bundle["tree_size"] == 24 and bundle["leaf_index"] == 17
    assert len(bundle["audit_path"]) == 4  # 24 = 16 + 8: leaf 17 sits 1 + 3 levels deep
    steps, standalone = _both(bundle, trust)
    assert any(s.startswith("proved: 00433_20190907T000000Z_86400s revision 0") for s in steps)
    assert "to finish online" in steps[-1] and "local ledger" in steps[-1]
    assert len(standalone) == len(steps) and standalone[:2] == steps[:2]


def _flipped_bundles(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    record = bundle["record"].encode("ascii")
    for i in range(len(record)):
        b = bytearray(record)
        b[i] ^= 0x01
        tampered = copy.deepcopy(bundle)
        tampered["record"] = b.decode("ascii")
        out.append((f"record byte {i}", tampered))
    for h, value in enumerate(bundle["audit_path"]):
        raw = bytes.fromhex(value)
        for i in range(len(raw)):
            b = bytearray(raw)
            b[i] ^= 0x01
            tampered = copy.deepcopy(bundle)
            tampered["audit_path"][h] = b.hex()
            out.append((f"path hash {h} byte {i}", tampered))
    return out


def test_every_single_byte_flip_of_record_or_path_is_rejected_by_both_verifiers(
    bundle: dict[str, Any], trust: Path
) -> None:
    from flows.audit_log import TrustPolicy

    policy = TrustPolicy.load(trust)
    pinned = (policy.origin, policy.verifier)
    standalone = _standalone()
    cases = _flipped_bundles(bundle)
    assert len(cases) == len(bundle["record"]) + 32 * len(bundle["audit_path"])
    for what, tampered in cases:
        with pytest.raises(ProofBundleError):
            verify_bundle(tampered, pinned)
        with pytest.raises(standalone.NotVerified):
            standalone.verify_v2(tampered, standalone.load_trust(trust)) if tampered[
                "schema"
            ].endswith("/2") else standalone.verify(tampered)
        assert what  # named for the failure message of pytest.raises


def test_standalone_verifier_runs_in_a_clean_python_without_packages(
    bundle: dict[str, Any], tmp_path: Path, trust: Path
) -> None:
    venv = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    good = tmp_path / "bundle.json"
    good.write_text(json.dumps(bundle, indent=1))
    ok = subprocess.run(
        [python, "-I", "-S", VERIFIER, "--trust", trust, good],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout
    bad_doc = copy.deepcopy(bundle)
    bad_doc["record"] = bad_doc["record"].replace('"quality_level":', '"quality_level":1')
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_doc))
    no = subprocess.run(
        [python, "-I", "-S", VERIFIER, "--trust", trust, bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no.returncode == 1 and "NOT VERIFIED" in no.stdout


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [None, True, False, -7, 0], "é": "ü\u2028", "\U0001f600": "x", "\ue000": "y"},
        {"ctl": "\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f", "quote": '"\\/', "empty": {}, "list": []},
    ],
)
def test_standalone_jcs_subset_matches_rfc8785(value: dict[str, Any]) -> None:
    assert _standalone().jcs(value).encode("utf-8") == rfc8785.dumps(value)


def test_standalone_jcs_matches_rfc8785_on_the_checkpoint(bundle: dict[str, Any]) -> None:
    cp = bundle["checkpoint"]
    assert _standalone().jcs(cp).encode("utf-8") == rfc8785.dumps(cp)


def test_cli_prove_and_verify_proof(
    anchored_env: PipelineEnv, tmp_path: Path, capsys: Any, trust: Path
) -> None:
    out = tmp_path / "proof.json"
    with anchored_env.active():
        rc = cli_main(
            ["prove", "--station", "00433", "--at", "2019-09-07T17:00Z", "--out", str(out)]
        )
    assert rc == 0
    assert cli_main(["verify-proof", "--trust", str(trust), str(out)]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    doc["checkpoint"]["counts"]["records"] += 1
    out.write_text(json.dumps(doc))
    assert cli_main(["verify-proof", "--trust", str(trust), str(out)]) == 1
    with anchored_env.active():
        assert cli_main(["prove", "--station", "00433", "--at", "2019-09-07T17:30Z"]) == 1
