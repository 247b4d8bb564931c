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
# key=value pairs whose key names a secret (sasl.oauthbearer.config, connection strings):
# found by the secret word, then extended by hand, so that no pattern can backtrack
# quadratically on long log lines.
_SECRET_WORD = re.compile(r"(?i)secret|passw(?:or)?d|pwd|token|api[_-]?key|private_?key|credential")
_ASSIGNMENT = re.compile(r"[ \t]*[=:][ \t]*(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)")
_SCHEME_BEFORE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}\Z")
_TOKEN = re.compile(r"[^\s'\"(<>]+")
_URL_REST = re.compile(r"[^\s\"'<>]+")
_NAME_TAIL = re.compile(r"[\w.\-]{0,64}")


def _mask_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _SECRET_WORD.finditer(text):
        if m.start() < pos:
            continue
        tail = _NAME_TAIL.match(text, m.end())
        value = _ASSIGNMENT.match(text, tail.end() if tail else m.end())
        if value is None:
            continue
        out += [text[pos : value.start(1)], MASK]
        pos = value.end(1)
    out.append(text[pos:])
    return "".join(out)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with PEM blocks, secret-named pairs, URL userinfo, URL queries and every
    literal value in `secrets` (e.g. the configured passwords and ledger URL) masked."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _PEM.sub(MASK, text)
    text = _mask_urls(text)
    text = _mask_relative_queries(text)
    return _mask_pairs(text)


def _mask_urls(text: str) -> str:
    """Userinfo and query of every ``scheme://...`` in `text` masked (linear: each ``://``
    is found with str.find and its scheme read from at most 32 characters before it)."""
    out: list[str] = []
    pos = 0
    i = text.find("://")
    while i != -1:
        scheme = _SCHEME_BEFORE.search(text, max(pos, i - 32), i)
        rest = None if scheme is None else _URL_REST.match(text, i + 3)
        if scheme is None or rest is None:
            i = text.find("://", i + 3)
            continue
        out.append(text[pos : scheme.start()])
        out.append(_mask_url(text[scheme.start() : rest.end()]))
        pos = rest.end()
        i = text.find("://", pos)
    out.append(text[pos:])
    return "".join(out)


def _mask_relative_queries(text: str) -> str:
    """The query of a bare ``/path?query`` token (urllib3's retry warnings log only the
    request target) masked. One linear pass over the tokens of `text`."""
    if "?" not in text:
        return text

    def mask(m: re.Match[str]) -> str:
        token = m.group()
        q = token.find("?")
        if q <= 0 or not token.startswith("/") or token[q + 1 :].startswith(MASK):
            return token
        return token[: q + 1] + MASK

    return _TOKEN.sub(mask, text)


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    url = f"{scheme}://{authority}{slash}{path}"
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
