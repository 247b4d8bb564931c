"""`streamnotary demo` as a user runs it: real CLI processes, embedded services, then audit.

Each test uses its own STREAMNOTARY_HOME, so `demo` starts its own noida-db and SeaweedFS
(and, with `--ledger evm` / `multichain`, its own anvil / MultiChain node) exactly as on a
fresh machine, and stops them with `streamnotary down` at the end. Flow runs report to the
session's Prefect test server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamnotary.report import validate_report

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

REPO = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMNOTARY_")}
    env.update({"STREAMNOTARY_HOME": str(home), "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    done = subprocess.run(
        [sys.executable, "-m", "streamnotary.cli", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"streamnotary {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    path.mkdir()
    try:
        yield path
    finally:
        cli(path, "down", check=False)


def test_demo_anchors_everything_once_and_the_audit_passes(home: Path) -> None:
    first = json.loads(cli(home, "demo", "--json").stdout)
    assert first["new_anchors"] == 1100
    assert isinstance(first["new_anchors"], int)
    assert {s: r["records"] for s, r in first["stations"].items()} == {
        "00427": 13_200,
        "00433": 13_200,
    }
    assert first["stations"]["00433"]["missing_values"] == 36 + 239

    second = cli(home, "demo")
    assert "Nothing new to anchor" in second.stdout
    assert json.loads(cli(home, "demo", "--json").stdout)["new_anchors"] == 0

    report = json.loads(cli(home, "audit", "--all", "--json").stdout)
    validate_report(report)
    assert report["verdict"] == "pass"
    assert report["summary"]["windows"] == 1100
    assert report["summary"]["by_verdict"]["pass"] == 1100
    assert report["ledger"] == {"backend": "local", "integrity": report["ledger"]["integrity"]}
    assert report["ledger"]["integrity"]["ok"] is True
    coverage = report["log"]["coverage"]  # every offset of the demo topic is accounted for
    assert coverage["verdict"] == "pass" and coverage["partitions"]
    assert all(c["accounted"] == c["offsets"] > 0 for c in coverage["partitions"])

    trust = home / "trust.json"
    trust.write_text(cli(home, "trust", "export").stdout)
    bundle = home / "bundle.json"
    cli(home, "prove", "--station", "00433", "--at", "2019-09-07T17:00Z", "--out", str(bundle))
    doc = json.loads(bundle.read_text())
    assert (
        json.loads(doc["record"])["temperature_c_tenths"] is None
    )  # 2019-09-07 17:00 is a -999 gap
    cli(home, "verify-proof", "--trust", str(trust), str(bundle))
    verifier = str(REPO / "docs" / "verify_bundle.py")
    standalone = subprocess.run(
        [sys.executable, "-I", "-S", verifier, "--trust", str(trust), str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert standalone.returncode == 0, standalone.stdout + standalone.stderr


def test_demo_on_an_evm_chain_and_audit_against_the_chain(home: Path) -> None:
    summary = json.loads(cli(home, "demo", "--ledger", "evm", "--json").stdout)
    assert summary["ledger"] == "evm"
    assert summary["new_anchors"] == 1100
    assert summary["ledger_entries"] == 1  # the log head only; windows are proven by the log
    anvil = json.loads((home / "anvil" / "anvil.json").read_text())
    assert anvil["url"].startswith("http://127.0.0.1:")

    report = json.loads(cli(home, "audit", "--all", "--json").stdout)
    validate_report(report)
    assert report["verdict"] == "pass"
    assert report["ledger"]["backend"] == "evm"
    assert report["summary"]["checks"]["anchored"]["pass"] == 1100


def test_demo_on_a_multichain_node_and_audit_against_it(home: Path, multichain_bin_dir: Path):
    """`demo --ledger multichain` starts a chain under the home, anchors the window items in
    publishmulti transactions, `audit --all` verifies against the node, `down` stops it."""
    summary = json.loads(cli(home, "demo", "--ledger", "multichain", "--json").stdout)
    assert summary["ledger"] == "multichain"
    assert summary["new_anchors"] == 1100
    assert summary["ledger_entries"] >= 1 + 1100  # the log head + one keyed item per window
    node = json.loads((home / "multichain" / "node.json").read_text())
    assert node["url"].startswith("http://127.0.0.1:")
    services = json.loads((home / "services.json").read_text())
    assert "ledger_password" not in services["settings"]  # read from the chain's own conf

    trust = json.loads(cli(home, "trust", "export").stdout)
    assert trust["ledger"] == {
        "backend": "multichain",
        "chain_name": "streamnotary",
        "stream": "streamnotary",
        "publishers": [trust["ledger"]["publishers"][0]],
    }
    (home / "trust.json").write_text(json.dumps(trust))
    deadline = time.monotonic() + 120
    while True:  # blocks come every 2 s on the demo chain; poll until nothing is pending
        audit = cli(home, "audit", "--all", "--json", "--trust", "trust.json", check=False)
        report = json.loads(audit.stdout)
        if report["verdict"] != "pending" or time.monotonic() > deadline:
            break
    validate_report(report)
    assert report["verdict"] == "pass"
    assert report["ledger"]["backend"] == "multichain"
    assert report["summary"]["checks"]["anchored"]["pass"] == 1100

    assert "multichain" in cli(home, "down").stdout
    assert (
        not Path(f"/proc/{node['pid']}").exists()
        or b"multichaind" not in Path(f"/proc/{node['pid']}/cmdline").read_bytes()
    )
