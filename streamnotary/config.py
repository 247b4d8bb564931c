"""Configuration: defaults < embedded services < config file < environment < explicit overrides.

* built-in defaults (below);
* the embedded services started by ``streamnotary up`` (their URLs, from
  ``<home>/services.json``), so that the demo needs no configuration at all;
* a TOML file: ``$STREAMNOTARY_CONFIG``, else ``./streamnotary.toml`` if present;
* environment variables ``STREAMNOTARY_<FIELD>`` (upper-case field name);
* explicit overrides (CLI flags, flow parameters).

Pointing the pipeline at a real Kafka cluster and MinIO is therefore a change of URLs and
credentials only. Secrets never appear in `repr()`, `public_dict()` or logs: masked by
name (`*secret*`, `*password*`, `*token*`, `*private_key*`, librdkafka `sasl.password`,
`ssl.key.*`, `*.pem`, `sasl.oauthbearer.config`) and, for every other value, by value
(PEM blocks, `clientSecret=`-style pairs, URL userinfo and query; streamnotary/masking.py).
`load_settings` also installs a log-record filter that masks the configured secret values
wherever they would appear in a log line.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.dwd import DwdLimits
    from tasks.groups import LogScope

from streamnotary.masking import MASK, install_log_masking, mask_text, safe_url, url_secrets

ENV_PREFIX = "STREAMNOTARY_"
DWD_OPEN_DATA = ("https://opendata.dwd.de/climate_environment/CDC/",)
# Setting (and librdkafka property) names whose values are secret as a whole.
_SECRET_MARKERS = (
    "secret",
    "password",
    "token",
    "private_key",
    ".pem",  # ssl.key.pem, ssl.certificate.pem, ssl.ca.pem: PEM text inline
    "ssl.key",  # ssl.key.location is harmless, ssl.key.password/ssl.key.pem are not
    "oauthbearer.config",  # clientSecret=... inside
    "sasl.jaas.config",
)
_URL_WITH_KEY = ("ledger_url",)  # hosted JSON-RPC URLs carry the API key in the path


def default_home() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}HOME", Path.home() / ".streamnotary"))


@dataclass(frozen=True)
class Settings:
    home: str = ""
    # Kafka
    kafka_bootstrap: str = ""
    topic: str = "dwd.observations"
    partitions: int = 3
    kafka_client: dict[str, str] = field(default_factory=dict)  # extra librdkafka properties
    read_timeout_seconds: float = 30.0  # deadline of one read page (read_page_messages)
    # Object store: s3://bucket[/prefix] or file:///path
    store_uri: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    object_lock_days: int = 0  # > 0: every write-once object gets an Object Lock retention
    object_lock_mode: str = "COMPLIANCE"  # or GOVERNANCE
    # Ledger
    ledger: str = "local"  # local | multichain | evm | bitcoin
    ledger_url: str = ""
    ledger_user: str = ""
    ledger_password: str = ""
    ledger_chain_name: str = ""
    ledger_stream: str = "streamnotary"
    ledger_private_key: str = ""
    ledger_contract: str = ""
    ledger_confirmations: int = 0  # MultiChain, EVM, Bitcoin: at least 1 (0 = mempool)
    # issue 11 (MultiChain)
    ledger_publisher: str = ""  # MultiChain address to publish from (default: stream creator)
    ledger_publish_chunk: int = 32  # MultiChain items per publishmulti transaction (chain cap 32)
    ledger_multichain_conf: str = ""  # multichain.conf to read rpcuser/rpcpassword from
    # Windows
    window_seconds: int = 86_400
    allowed_lateness_seconds: int = 3_600
    idle_timeout_seconds: int = 0  # 0 = never close windows on idleness
    # issue 9 (i9sec): what flow parameters may name, EVM transaction handling
    report_dir: str = ""  # audit flow json_path/html_path resolve in here (default <home>/reports)
    ingest_roots: list[str] = field(default_factory=list)  # local ingest sources must lie below
    ingest_url_prefixes: list[str] = field(default_factory=lambda: list(DWD_OPEN_DATA))
    ledger_tx_timeout_seconds: float = 180.0  # evm: wait for mining, then retry (same nonce)
    ledger_deploy: str = "first-use"  # evm: first-use | never | replace (contract deployment)
    ledger_log_chunk_blocks: int = 2_000  # evm: eth_getLogs block range per request
    ledger_operator_address: str = ""  # bitcoin: address paying for anchors (default: labelled)
    # issue 9 (i9input): input limits, documented in docs/operations.md "Input limits"
    dwd_max_member_bytes: int = 64 << 20  # a DWD product file or zip member, expanded
    dwd_max_total_bytes: int = 128 << 20  # all product/metadata members of one zip, expanded
    dwd_max_metadata_bytes: int = 1 << 20  # one Metadaten_Parameter file or member
    dwd_max_line_chars: int = 1024  # one DWD product or metadata line
    url_max_bytes: int = 64 << 20  # one downloaded body (DWD archive, Bright Sky answer)
    url_deadline_seconds: float = 300.0  # one download, retries and redirects included
    url_max_redirects: int = 5  # same scheme or http->https only
    url_allow_private_redirects: bool = False  # allow redirects to loopback/private hosts
    url_retry_after_cap_seconds: float = 60.0  # longest Retry-After wait honoured
    # issue 8 (i8audit): what the auditor pins and remembers
    audit_trust_path: str = ""  # trust policy (streamnotary.trust/v1) the audit flow pins
    audit_state_dir: str = ""  # where the audit remembers the last verified log head
    # issue 8: the signed anchor log
    log_key_path: str = ""  # Ed25519 signer key file (0600); "" = <home>/log.key
    log_origin: str = "streamnotary/{topic}"  # checkpoint origin and key name; {topic} expands
    # issue 9 (i9ops): one writer per topic, bounded reads, write-once probe
    lease_seconds: int = 300  # lifetime of the topic lease; renewed every third of it
    # offsets per Kafka read page (read_timeout_seconds each), and the least a run with a
    # backlog reads of one partition: each partition a run reads costs a fetch restart, so
    # 100,000 (two partitions a run at the default cap) caught up 1.16x faster than 50,000
    # at 2M rows (docs/benchmarks.md, "Session 25")
    read_page_messages: int = 100_000
    # offsets one run reads at most; the rest next run. A run holds what it read (~1.7 KiB
    # per message): 500,000 peaked at 954-1,018 MiB, 200,000 stays near 500 MiB
    max_messages_per_run: int = 200_000
    # issue 10: object layout of a run. "per_window": payload, checkpoint and receipt per
    # window revision; "pack": one Parquet payload pack per run, checkpoints per window and
    # no receipts (auditor and prover take inclusion proofs from the anchor log's tiles).
    object_layout: str = "pack"
    # issue 10: parallel window building (flows/window_build.py, docs/operations.md)
    workers: int = 1  # > 1: a local Dask cluster of that many worker processes
    dask_scheduler_address: str = ""  # an existing Dask scheduler (tcp://host:8786) instead
    # helper processes that encode Parquet payloads while the run builds windows
    # (tasks/payload_process.py); 0 = in the run's own process. Runs without Dask only.
    payload_processes: int = 2
    # issue 10 item 3: partition groups, e.g. [[0, 1], [2, 3]]: each group anchors its own
    # partitions into its own log under its own lease (docs/design.md, "Partition groups").
    partition_groups: list[list[int]] = field(default_factory=list)  # [] = one writer per topic
    group: str = ""  # the group a run anchors (set per run by the flow/CLI, e.g. "p0_1")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            parts.append(f"{f.name}={redact(f.name, v)!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    @property
    def log_scope(self) -> LogScope:
        """Whose state and log this run writes: the topic, or the topic's group `group`."""
        from tasks.groups import LogScope

        return LogScope(self.topic, self.group or None)

    @property
    def group_partitions(self) -> frozenset[int] | None:
        """The partitions the run's group owns; None without a group (all partitions)."""
        if not self.group:
            return None
        from tasks.groups import find_group

        return find_group(self.partition_groups, self.group).partitions

    @property
    def home_path(self) -> Path:
        return Path(self.home) if self.home else default_home()

    @property
    def report_path(self) -> Path:
        """Directory the audit flow's report files are confined to."""
        return Path(self.report_dir) if self.report_dir else self.home_path / "reports"

    @property
    def ingest_root_paths(self) -> list[Path]:
        """Where local ingest sources may lie: configured roots, else ``<home>/incoming``;
        the packaged demo data is always allowed."""
        from importlib import resources

        demo = Path(str(resources.files("streamnotary").joinpath("demo_data")))
        roots = [Path(r) for r in self.ingest_roots] or [self.home_path / "incoming"]
        return [*roots, demo]

    @property
    def dwd_limits(self) -> DwdLimits:
        """The DWD reader's size limits from the `dwd_max_*` settings."""
        from tasks.dwd import DwdLimits

        return DwdLimits(
            max_member_bytes=self.dwd_max_member_bytes,
            max_total_bytes=self.dwd_max_total_bytes,
            max_metadata_bytes=self.dwd_max_metadata_bytes,
            max_line_chars=self.dwd_max_line_chars,
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **{k: _coerce(k, v) for k, v in clean.items()})

    def secret_values(self) -> list[str]:
        """Every configured secret value (for masking by value in logs and messages)."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                out += [str(v) for k, v in value.items() if v and is_secret(k)]
            elif isinstance(value, str) and value and is_secret(f.name):
                out.append(value)
        return out + (url_secrets(self.ledger_url)[1:] if self.ledger_url else [])

    def public_dict(self) -> dict[str, Any]:
        """All settings with secrets masked: safe to print and log."""
        return {f.name: redact(f.name, getattr(self, f.name)) for f in fields(self)}


def is_secret(name: str) -> bool:
    return any(m in name.lower() for m in _SECRET_MARKERS)


def redact(name: str, value: Any) -> Any:
    """`value` safe to show: secret by name → ``***``; any other string masked by value
    (PEM blocks, ``clientSecret=``, URL userinfo and queries; streamnotary/masking.py), and
    URLs that may carry an API key in their path (``ledger_url``) reduced to scheme, host
    and port."""
    if isinstance(value, dict):
        return {k: redact(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(name, v) for v in value]
    if value and is_secret(name):
        return MASK
    if isinstance(value, str) and value:
        if name in _URL_WITH_KEY and "://" in value:
            return safe_url(value)
        return mask_text(value)
    return value


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}
_BOOL_TEXT = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_TEXT |= {"0": False, "false": False, "no": False, "off": False, "": False}


OBJECT_LAYOUTS = ("pack", "per_window")


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELD_TYPES:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(_FIELD_TYPES))}")
    if name == "object_layout" and str(value) not in OBJECT_LAYOUTS:
        raise ValueError(f"setting object_layout must be one of {OBJECT_LAYOUTS}, got {value!r}")
    if name == "partition_groups":
        from tasks.groups import parse_groups

        return parse_groups(value)
    kind = _FIELD_TYPES[name]
    if kind == "bool":
        if isinstance(value, str):
            text = value.strip().lower()
            if text not in _BOOL_TEXT:
                raise ValueError(f"setting {name} must be true or false, got {value!r}")
            return _BOOL_TEXT[text]
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind.startswith("list"):
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        return [str(v).strip() for v in value if str(v).strip()]
    if kind.startswith("dict"):
        if isinstance(value, str):
            value = json.loads(value)
        return {str(k): str(v) for k, v in dict(value).items()}
    return str(value)


def _config_file() -> Path | None:
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_PREFIX}CONFIG points to a missing file: {path}")
        return path
    local = Path("streamnotary.toml")
    return local if local.is_file() else None


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[kafka] bootstrap = ...`` → ``kafka_bootstrap``; ``[kafka.client]`` stays a dict."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in _FIELD_TYPES:
            out.update(_flatten(v, f"{name}_"))
        else:
            out[name] = v
    return out


def embedded_defaults(home: Path) -> dict[str, Any]:
    """URLs of the services `streamnotary up` started under `home`, if any."""
    path = home / "services.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in doc.get("settings", {}).items() if k in _FIELD_TYPES}


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings with the documented precedence."""
    values: dict[str, Any] = {}
    file_values: dict[str, Any] = {}
    path = _config_file()
    if path is not None:
        file_values = _flatten(tomllib.loads(path.read_text()))
    env_values = {
        name: os.environ[f"{ENV_PREFIX}{name.upper()}"]
        for name in _FIELD_TYPES
        if f"{ENV_PREFIX}{name.upper()}" in os.environ
    }
    home = Path(
        overrides.get("home") or env_values.get("home") or file_values.get("home") or default_home()
    )
    values.update(embedded_defaults(home))
    values.update(file_values)
    values.update(env_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["home"] = str(home)
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    if not settings.store_uri:
        settings = replace(settings, store_uri=(home / "objects").as_uri())
    install_log_masking(settings.secret_values())
    return settings
