"""Where flow parameters may point: output files and ingest sources.

Anyone who can start a Prefect flow run (UI or API) chooses its parameters, but the run
executes with the worker's file system and network. A parameter that names a file is
therefore resolved *inside* a directory the operator configured, and an ingest source must
lie under a configured root or URL prefix; everything else is refused with a named error
before any byte is read or written. The command line is the operator's own choice and
passes its paths in explicitly (see streamnotary/commands/).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit


class UnsafePath(ValueError):
    """An output path parameter escapes the configured output directory."""


class SourceNotAllowed(ValueError):
    """An ingest source is neither under a configured root nor under a URL prefix."""


def resolve_output(directory: Path, name: str) -> Path:
    """`name` (relative, or absolute inside `directory`) as a path inside `directory`.

    Symlinks and ``..`` are resolved before the containment check, so neither a link in the
    directory nor a traversal leaves it. The directory is created (mode 0700) if missing.
    """
    if not name or "\x00" in name:
        raise UnsafePath(f"output path {name!r} is empty or holds a NUL byte")
    base = directory.expanduser().resolve()
    candidate = Path(name)
    target = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"output path {name!r} is outside the report directory {base}")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return target


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def check_source(source: str, roots: Iterable[str], url_prefixes: Iterable[str]) -> str:
    """Return `source` if it is allowed: a file under one of `roots` or a URL under one of
    `url_prefixes` (same scheme, host and port, path below the prefix's path, no userinfo)."""
    if is_url(source):
        if not any(_url_under(source, p) for p in url_prefixes):
            raise SourceNotAllowed(
                f"URL {redact_url(source)} is not under a configured prefix "
                "(setting ingest_url_prefixes)"
            )
        return source
    path = Path(source).expanduser().resolve()
    for root in roots:
        base = Path(root).expanduser().resolve()
        if path.is_relative_to(base):
            return source
    raise SourceNotAllowed(
        f"file {source!r} is not under a configured ingest root (setting ingest_roots)"
    )


def _url_under(url: str, prefix: str) -> bool:
    u, p = urlsplit(url), urlsplit(prefix)
    if u.username is not None or u.password is not None:
        return False
    try:
        same_origin = (u.scheme.lower(), u.hostname, u.port) == (
            p.scheme.lower(),
            p.hostname,
            p.port,
        )
    except ValueError:  # a malformed port
        return False
    path = unquote(u.path)
    if not same_origin or "/../" in f"{path}/" or "\\" in path:
        return False
    base = p.path if p.path.endswith("/") else p.path + "/"
    return (path if path.endswith("/") else path + "/").startswith(base) or path == p.path


def redact_url(url: str) -> str:
    """`url` without userinfo, query or fragment (they may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"
