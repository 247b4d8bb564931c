"""`keygen`, `trust export` and ledger pinning: the key stays secret, the policy is valid.

The trust policy validates against docs/schemas/trust.schema.json, its verifier key checks
the signature of a checkpoint the log key signed, and a local ledger that is not the
pinned one (another genesis) is refused.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jsonschema
import pytest

from storage.ledger.base import AnchorEntry, LedgerIdentityMismatch
from storage.ledger.factory import open_ledger
from storage.ledger.local import LocalLedger
from storage.logkey import LogKeyExposed, LogKeyMissing, load_signer, read_key
from streamnotary.cli import main
from streamnotary.config import load_settings
from tasks import merkle
from tasks.tlog.checkpoint import LogCheckpoint, open_checkpoint, sign_checkpoint
from tasks.tlog.note import Verifier

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs/schemas/trust.schema.json").read_text()
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("STREAMNOTARY_HOME", str(home))
    monkeypatch.setenv("STREAMNOTARY_TOPIC", "dwd.trust")
    monkeypatch.setenv("STREAMNOTARY_LEDGER", "local")
    for name in ("STREAMNOTARY_LOG_KEY_PATH", "STREAMNOTARY_CONFIG", "STREAMNOTARY_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_keygen_writes_a_0600_key_and_never_prints_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    path = home / "log.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert secret.startswith("PRIVATE+KEY+streamnotary+")
    assert "PRIVATE" not in out and secret.split("+", 4)[4] not in out
    assert "streamnotary/dwd.trust+" in out  # the verifier key of the topic's log
    assert main(["keygen"]) == 2  # never overwrites a key


def test_exposed_or_missing_key_is_refused(home: Path, tmp_path: Path) -> None:
    assert main(["keygen"]) == 0
    (home / "log.key").chmod(0o644)
    with pytest.raises(LogKeyExposed):
        read_key(home / "log.key")
    settings = load_settings(log_key_path=str(tmp_path / "nowhere.key"))
    with pytest.raises(LogKeyMissing):
        load_signer(settings)  # an explicitly configured key is never invented


def test_trust_export_is_schema_valid_and_pins_the_log_key_and_ledger(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen"]) == 0
    capsys.readouterr()
    settings = load_settings()
    with open_ledger(settings) as ledger:
        ledger.anchor(AnchorEntry("head/dwd.trust/1", "head", {"kind": "head", "n": 1}))
    assert main(["trust", "export"]) == 0
    policy = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(SCHEMA).validate(policy)
    assert policy["log"]["origin"] == "streamnotary/dwd.trust"
    with LocalLedger(home / "ledger.sqlite3") as ledger:
        assert policy["ledger"] == ledger.identity()
        assert policy["ledger"]["genesis"] == ledger.head()[1]

    # the pinned verifier key checks what the configured key signs
    signer = load_signer(settings)
    cp = LogCheckpoint(policy["log"]["origin"], 1, merkle.merkle_root([b"x"]))
    verifier = Verifier.from_key(policy["log"]["verifier_key"])
    assert open_checkpoint(sign_checkpoint(cp, signer), verifier)[0] == cp

    # a ledger with another history is not the pinned one
    with open_ledger(settings, trusted_identity=policy["ledger"]):
        pass
    other = home / "other.sqlite3"
    with LocalLedger(other) as ledger:
        ledger.anchor(AnchorEntry("head/dwd.trust/1", "head", {"kind": "head", "n": 2}))
    with pytest.raises(LedgerIdentityMismatch):
        open_ledger(load_settings(ledger_url=str(other)), trusted_identity=policy["ledger"])
    with pytest.raises(LedgerIdentityMismatch):
        open_ledger(settings, trusted_identity={**policy["ledger"], "backend": "evm"})
