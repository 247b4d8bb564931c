"""Mask secrets in text by *value*, not only by setting name.

Masking by name (``*password*``) misses secrets that travel inside other values: a PEM
private key in librdkafka's ``ssl.key.pem``, ``clientSecret=...`` inside
``sasl.oauthbearer.config``, an API key in a hosted EVM endpoint's userinfo, path or query
(``https://user:pw@host``, ``https://mainnet.example/v3/<key>``, ``?apikey=...``). Every
string that may reach a repr, a log line, status output or an exception message goes
through `mask_text`; URLs that are shown go through `safe_url`. Pure functions, no I/O —
except `install_log_masking`, which puts `mask_text` in front of every log record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"

# RFC 7468 textual encoding: any "-----BEGIN X-----" ... "-----END X-----" block.
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.S)
# key=value pairs whose key names a secret (sasl.oauthbearer.config, connection strings).
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w.\-]*(?:secret|password|passwd|pwd|token|apikey|api_key|api-key|"
    r"private_key|privatekey|credential)[\w.\-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)
# scheme://userinfo@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+")


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with PEM blocks, secret-named pairs, URL userinfo, URL queries and every
    literal value in `secrets` (e.g. the configured passwords and ledger URL) masked."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _PEM.sub(MASK, text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _URL.sub(lambda m: _mask_query(m.group(0)), text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def _mask_query(url: str) -> str:
    base, sep, _query = url.partition("?")
    return f"{base}?{MASK}" if sep else url


def safe_url(url: str) -> str:
    """`url` reduced to scheme, host and port: userinfo, path, query and fragment may all
    carry credentials (hosted JSON-RPC endpoints put the API key in the path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    hidden = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{netloc}{hidden}" if parts.scheme else MASK


def url_secrets(url: str) -> list[str]:
    """The parts of `url` that may be secret (userinfo, path, query), for `mask_text`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = [url]
    if parts.username:
        out.append(parts.username)
    if parts.password:
        out.append(parts.password)
    if parts.path not in ("", "/"):
        out.append(parts.path)
    if parts.query:
        out.append(parts.query)
    return out


_KNOWN_SECRETS: set[str] = set()
_INSTALLED: list[bool] = []


def install_log_masking(secrets: Iterable[str]) -> None:
    """Mask `secrets` (and every pattern `mask_text` knows) in all log records from now on.

    A log-record factory rather than a handler filter, so that records of every logger,
    Prefect's included, are masked before any handler formats or ships them. Idempotent;
    later calls add secret values.
    """
    _KNOWN_SECRETS.update(s for s in secrets if s and len(s) >= 4)
    if _INSTALLED:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed %-format: leave it to logging
            return record
        masked = mask_text(message, _KNOWN_SECRETS)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)
    _INSTALLED.append(True)
