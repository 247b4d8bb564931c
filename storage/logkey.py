"""The log signing key on disk: a C2SP signer key file, mode 0600, never printed.

The file holds one line, ``PRIVATE+KEY+<name>+<key ID>+<base64>`` (golang.org/x/mod
sumdb/note encoding), so standard note tooling can read it. The same Ed25519 key signs
every topic's log under that log's origin as key name (`Signer.named`), so a trust policy
pins ``<origin>+<key ID>+<public key>`` per log.

`streamnotary keygen` writes it; `up`, `demo` and the first anchor run create it under the
home when the setting `log_key_path` is left at its default and no key exists yet. A key
file readable by group or others is refused: whoever reads it can sign checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.tlog.note import NoteError, Signer, Verifier

if TYPE_CHECKING:
    from streamnotary.config import Settings

KEY_FILE = "log.key"
DEFAULT_KEY_NAME = "streamnotary"


class LogKeyError(RuntimeError):
    """The log signing key cannot be used."""


class LogKeyMissing(LogKeyError):
    """No key at the configured path (run `streamnotary keygen`)."""


class LogKeyExposed(LogKeyError):
    """The key file is readable or writable by group or others."""


class LogKeyExists(LogKeyError):
    """`keygen` refuses to overwrite an existing key."""


def key_path(settings: Settings) -> Path:
    return (
        Path(settings.log_key_path).expanduser()
        if settings.log_key_path
        else (settings.home_path / KEY_FILE)
    )


def generate_key(path: Path, name: str = DEFAULT_KEY_NAME) -> Verifier:
    """Create a new key file (0600, parent 0700 if created); `LogKeyExists` if present.

    The key is written whole to a private temporary file and published by a hard link,
    which fails if the name exists: another process never sees the name before the key is
    complete (processes of several partition groups create the default key at once), and
    an existing key is never replaced.
    """
    signer = Signer.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(signer.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise LogKeyExists(f"{path} already exists; refusing to overwrite a log key") from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name survives a crash
    finally:
        os.close(dir_fd)
    return signer.verifier()


def read_key(path: Path) -> Signer:
    """Load a key file; `LogKeyMissing`, `LogKeyExposed` or `LogKeyError` (malformed)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise LogKeyMissing(f"no log key at {path}; run `streamnotary keygen`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LogKeyExposed(f"{path} is accessible by group/others; chmod 600 it")
    try:
        return Signer.from_key(path.read_text().strip())
    except NoteError as exc:
        raise LogKeyError(f"{path} is not a signer key: {exc}") from exc


def load_signer(settings: Settings, *, create: bool = True) -> Signer:
    """The configured signer; with `create`, make the default key on first use."""
    path = key_path(settings)
    if create and not settings.log_key_path and not path.exists():
        with contextlib.suppress(LogKeyExists):  # another process created it first
            generate_key(path)
    return read_key(path)


def log_origin(settings: Settings, topic: str | None = None) -> str:
    """The origin of a log (`log_origin` with ``{topic}`` expanded to the scope name:
    the topic, or ``<topic>/<group>`` for the run's partition group)."""
    from storage.tlog import log_origin as expand

    return expand(settings.log_origin, topic or settings.log_scope.name)


def log_verifier(settings: Settings, topic: str | None = None) -> Verifier:
    """The verifier key an auditor pins for a log (`topic`: a scope name)."""
    return load_signer(settings, create=False).named(log_origin(settings, topic)).verifier()


def ensure_key(settings: Settings) -> Path:
    """`up` and `demo`: make the default key under the home if none exists; its path."""
    load_signer(settings, create=True)
    return key_path(settings)
