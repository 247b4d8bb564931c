"""C2SP signed-note (c2sp.org/signed-note): text signed by Ed25519 keys, byte for byte.

A signed note is the note text (ending in a newline), a blank line, then one line per
signature: em dash, space, key name, space, base64(uint32 key ID || signature). Keys are
written as golang.org/x/mod/sumdb/note does, which is what witnesses and tlog tooling read:

    verifier key  <name>+<key ID, 8 hex>+base64(0x01 || 32-byte Ed25519 public key)
    signer key    PRIVATE+KEY+<name>+<key ID, 8 hex>+base64(0x01 || 32-byte seed)
    key ID        SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian

Ed25519 (RFC 8032) signatures are deterministic, so the same key and text always give the
same note: a resumed run re-signs a checkpoint to identical bytes. Every failure raises a
subclass of `NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

EM_DASH = "\u2014"
ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # signed-note: verifiers SHOULD bound it and MUST accept at least 16
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """Base class of every signed-note failure."""


class MalformedKey(NoteError):
    """A signer or verifier key string is not in the sumdb/note encoding, or its ID is wrong."""


class MalformedNote(NoteError):
    """The bytes are not a well-formed signed note (signed-note §Format)."""


class InvalidSignature(NoteError):
    """A signature by a known key (same name and key ID) does not verify."""


class UnverifiedNote(NoteError):
    """No signature on the note is by a known key (signed-note: clients MUST reject it)."""


def is_valid_name(name: str) -> bool:
    """signed-note §Format: non-empty, no Unicode spaces, no plus (U+002B)."""
    return bool(name) and "+" not in name and not any(_is_space(c) for c in name)


def _is_space(c: str) -> bool:
    return c.isspace() or unicodedata.category(c) == "Zs"


def key_id(name: str, public_key: bytes) -> int:
    """signed-note §Signatures: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedKey("key material is not standard base64") from exc


def _split_key(text: str) -> tuple[str, int, bytes]:
    """``name+hash+base64`` -> (name, key ID, 0x01-prefixed key material)."""
    name, sep1, rest = text.partition("+")
    hash_hex, sep2, material = rest.partition("+")
    if not (sep1 and sep2) or not is_valid_name(name):
        raise MalformedKey("expected <name>+<8 hex digits>+<base64>")
    if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
        raise MalformedKey("key ID must be 8 lowercase hex digits")
    raw = _b64decode(material)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise MalformedKey("only Ed25519 keys (0x01 || 32 bytes) are supported")
    return name, int(hash_hex, 16), raw[1:]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that verifies signatures by `name` with key ID `key_id`."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """Parse a verifier key ``name+hash+base64``; `MalformedKey` if the hash is wrong."""
        name, kid, public = _split_key(vkey)
        if key_id(name, public) != kid:
            raise MalformedKey(f"key ID {kid:08x} does not match key {name!r}")
        return cls(name, kid, public)

    def encode(self) -> str:
        material = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (_CryptoInvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 private key (its 32-byte RFC 8032 seed) that signs as `name`."""

    name: str
    seed: bytes

    def __repr__(self) -> str:  # never show the seed
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"

    @classmethod
    def generate(cls, name: str) -> Signer:
        if not is_valid_name(name):
            raise MalformedKey(f"invalid key name {name!r}")
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(name, seed)

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+name+hash+base64``; the hash must match the derived public key."""
        if not skey.startswith(_PRIVATE_PREFIX):
            raise MalformedKey("a signer key starts with PRIVATE+KEY+")
        name, kid, seed = _split_key(skey[len(_PRIVATE_PREFIX) :])
        signer = cls(name, seed)
        if signer.key_id != kid:
            raise MalformedKey(f"key ID {kid:08x} does not match signer key {name!r}")
        return signer

    @property
    def public_key(self) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    def named(self, name: str) -> Signer:
        """The same key signing under another name (its key ID changes with the name)."""
        if not is_valid_name(name):
            raise MalformedKey(f"invalid key name {name!r}")
        return Signer(name, self.seed)

    def encode(self) -> str:
        material = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{material}"

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note's text and its signatures (verified ones only, after `open_note`)."""

    text: str
    signatures: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text must end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise MalformedNote("note text contains an ASCII control character")


def sign_note(text: str, signers: Sequence[Signer], existing: Sequence[Signature] = ()) -> bytes:
    """The signed note of `text`: text, blank line, one signature line per signer."""
    _check_text(text)
    message = text.encode()
    sigs = [*existing, *(Signature(s.name, s.key_id, s.sign(message)) for s in signers)]
    if not sigs:
        raise MalformedNote("a signed note needs at least one signature")
    return (text + "\n" + "".join(sig.line() for sig in sigs)).encode()


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and (unverified) signatures; `MalformedNote` if not one."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNote("a signed note must be UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise MalformedNote("signed note contains an ASCII control character")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line separates text and signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedNote("signature block must be non-empty and end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise MalformedNote("signature line must start with an em dash and a space")
        name, sep, blob = line[2:].rpartition(" ")
        if not sep or not is_valid_name(name):
            raise MalformedNote("signature line has no valid key name")
        try:
            raw = base64.b64decode(blob.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise MalformedNote("signature is not standard base64") from exc
        if len(raw) < 5:
            raise MalformedNote("signature is shorter than key ID plus one byte")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Parse and verify: the returned note keeps only signatures by the known `verifiers`.

    signed-note §Signatures: unknown keys are ignored; a known key whose signature fails
    rejects the note (`InvalidSignature`); no verified signature rejects it (`UnverifiedNote`).
    """
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode()
    verified = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise InvalidSignature(f"signature by {sig.name}+{sig.key_id:08x} does not verify")
        verified.append(sig)
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none"
        raise UnverifiedNote(f"no signature by a known key (known: {names})")
    return Note(note.text, tuple(verified))
