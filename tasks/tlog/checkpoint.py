"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): a log's signed tree head as note text.

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <base64 RFC 6962 root hash>\\n
    [<extension line>\\n ...]

signed as a C2SP signed note (`tasks.tlog.note`). The log key's name is the origin, as
the format recommends, so `Verifier.name == origin` for the log's own signature. Every
failure raises a subclass of `LogCheckpointError`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tasks.merkle import HASH_SIZE
from tasks.tlog.note import Note, NoteError, Signer, Verifier, open_note, sign_note


class LogCheckpointError(ValueError):
    """Base class of every log checkpoint failure."""


class MalformedCheckpoint(LogCheckpointError):
    """The note text is not a tlog-checkpoint body (tlog-checkpoint §Note text)."""


class OriginMismatch(LogCheckpointError):
    """The checkpoint names another log than the one the verifier pinned."""


class CheckpointSignatureError(LogCheckpointError):
    """The checkpoint note does not carry a valid signature by the pinned log key."""


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """A tree head: the log's origin, its size and its RFC 6962 root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedCheckpoint("origin must be a non-empty single line")
        if self.size < 0:
            raise MalformedCheckpoint("tree size must be non-negative")
        if len(self.root) != HASH_SIZE:
            raise MalformedCheckpoint("root must be a 32-byte SHA-256 hash")
        if any(not line or "\n" in line for line in self.extensions):
            raise MalformedCheckpoint("extension lines must be non-empty single lines")

    def text(self) -> str:
        """The note text, byte-exact as tlog-checkpoint specifies."""
        root = base64.b64encode(self.root).decode()
        lines = (self.origin, str(self.size), root, *self.extensions)
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> LogCheckpoint:
        """Strict parse of a note text: three lines, canonical decimal size, 32-byte root."""
        if not text.endswith("\n"):
            raise MalformedCheckpoint("checkpoint text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise MalformedCheckpoint("checkpoint needs at least three non-empty lines")
        origin, size_text, root_text, *extensions = lines
        if not size_text.isascii() or not size_text.isdigit() or str(int(size_text)) != size_text:
            raise MalformedCheckpoint(f"tree size {size_text!r} is not a canonical decimal")
        try:
            root = base64.b64decode(root_text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise MalformedCheckpoint("root hash is not standard base64") from exc
        if base64.b64encode(root).decode() != root_text:
            raise MalformedCheckpoint("root hash is not canonical base64")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: LogCheckpoint, signer: Signer) -> bytes:
    """The signed checkpoint note (`<log prefix>/checkpoint`), signed as the origin."""
    return sign_note(checkpoint.text(), [signer.named(checkpoint.origin)])


def open_checkpoint(
    data: bytes, verifier: Verifier, origin: str | None = None
) -> tuple[LogCheckpoint, Note]:
    """Verify the log's signature and parse the checkpoint; optionally pin the origin."""
    try:
        note = open_note(data, [verifier])
    except NoteError as exc:
        raise CheckpointSignatureError(f"checkpoint signature: {exc}") from exc
    checkpoint = LogCheckpoint.parse(note.text)
    want = origin if origin is not None else verifier.name
    if checkpoint.origin != want:
        raise OriginMismatch(f"checkpoint origin {checkpoint.origin!r} is not {want!r}")
    return checkpoint, note
