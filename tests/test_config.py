"""Settings precedence and secret handling (streamnotary/config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamnotary.config import load_settings

SECRET = "s3cr3t-never-print-me"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("STREAMNOTARY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STREAMNOTARY_HOME", str(home))
    return home


def test_each_layer_overrides_the_one_below(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = clean_env
    assert load_settings().topic == "dwd.observations"  # built-in default
    assert load_settings().store_uri == (home / "objects").as_uri()

    (home / "services.json").write_text(
        json.dumps({"settings": {"kafka_bootstrap": "127.0.0.1:1", "topic": "from-services"}})
    )
    assert load_settings().kafka_bootstrap == "127.0.0.1:1"
    assert load_settings().topic == "from-services"

    Path("streamnotary.toml").write_text(
        'topic = "from-file"\n'
        '[kafka]\nbootstrap = "broker:9092"\nclient = { "security.protocol" = "SSL" }\n'
        '[s3]\nendpoint_url = "https://minio:9000"\n'
    )
    s = load_settings()
    assert (s.topic, s.kafka_bootstrap, s.s3_endpoint_url) == (
        "from-file",
        "broker:9092",
        "https://minio:9000",
    )
    assert s.kafka_client == {"security.protocol": "SSL"}

    monkeypatch.setenv("STREAMNOTARY_TOPIC", "from-env")
    monkeypatch.setenv("STREAMNOTARY_WINDOW_SECONDS", "3600")
    s = load_settings()
    assert (s.topic, s.window_seconds) == ("from-env", 3600)

    assert load_settings(topic="from-flag", window_seconds=None).topic == "from-flag"


def test_explicit_config_file_must_exist(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMNOTARY_CONFIG", str(clean_env / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        load_settings()


def test_unknown_setting_is_an_error_not_silently_ignored(clean_env: Path) -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        load_settings(tpoic="typo")


def test_secrets_never_appear_in_repr_or_public_dict(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMNOTARY_S3_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("STREAMNOTARY_LEDGER_PASSWORD", SECRET)
    s = load_settings(kafka_client={"sasl.password": SECRET, "sasl.username": "notary"})
    assert s.s3_secret_access_key == SECRET  # usable by the code...
    for text in (repr(s), str(s), json.dumps(s.public_dict())):  # ...but never printed
        assert SECRET not in text
    assert s.public_dict()["kafka_client"] == {"sasl.password": "***", "sasl.username": "notary"}


PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + SECRET + "\n"
    "-----END PRIVATE KEY-----\n"
)


def _secret_settings(clean_env: Path) -> object:
    return load_settings(
        kafka_client={
            "ssl.key.pem": PEM,  # secret by name
            "sasl.kerberos.keytab.content": PEM,  # only its value says it is secret
            "sasl.oauthbearer.config": f"clientId=notary clientSecret={SECRET} scope=kafka",
            "sasl.oauthbearer.extensions": f"logicalCluster=lkc-1,token={SECRET}",
            "security.protocol": "SASL_SSL",
        },
        ledger_url=f"https://notary:pw{SECRET}@eth.example/v3/{SECRET}?apikey={SECRET}",
        s3_endpoint_url=f"https://minio.internal:9000/?X-Amz-Signature={SECRET}",
    )


def test_secrets_are_masked_by_value_not_only_by_name(clean_env: Path) -> None:
    s = _secret_settings(clean_env)
    assert s.kafka_client["ssl.key.pem"] == PEM  # usable by the code...
    public = s.public_dict()
    for text in (repr(s), str(s), json.dumps(public)):  # ...never shown
        assert SECRET not in text and "MIIEvQ" not in text
    assert public["ledger_url"] == "https://eth.example/…"
    assert public["kafka_client"]["security.protocol"] == "SASL_SSL"
    assert "clientId=notary" in public["kafka_client"]["sasl.oauthbearer.config"] or (
        public["kafka_client"]["sasl.oauthbearer.config"] == "***"
    )


def test_log_lines_mask_configured_secrets(
    clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    s = _secret_settings(clean_env)
    with caplog.at_level(logging.INFO):
        logging.getLogger("prefect.flow_runs").info("connecting to %s", s.ledger_url)
        logging.getLogger("streamnotary.test").warning(
            "kafka config %s / %s", s.kafka_client["sasl.oauthbearer.config"], PEM
        )
        logging.getLogger("streamnotary.test").error("node said: bad key " + SECRET)
    assert caplog.records and SECRET not in caplog.text and "MIIEvQ" not in caplog.text
    assert "connecting to https://" in caplog.text


def test_object_layout_is_pack_or_per_window(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().object_layout == "pack"
    assert load_settings(object_layout="pack").object_layout == "pack"
    monkeypatch.setenv("STREAMNOTARY_OBJECT_LAYOUT", "per-window")
    with pytest.raises(ValueError, match="object_layout must be one of"):
        load_settings()
