"""The ledger interface every anchoring backend implements.

A ledger commits to small JSON documents (`AnchorEntry.body`) under a deterministic key.
Anchoring is idempotent by key: anchoring an entry whose key is already present returns
the existing reference when the digests agree and raises `AnchorConflict` when they do
not, so a re-run after a crash never writes a duplicate anchor.

Two kinds of entries are anchored per pipeline run (see docs/design.md):
* one ``batch`` entry: the RFC 6962 root over the run's checkpoint digests;
* on ledgers with keyed items (`supports_window_items`), one ``window`` entry per window
  revision, so that an auditor can find a window by key.

An entry is *final* once it has `required_confirmations`; until then audits report it as
pending.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tasks.canonical import canonical_digest

EntryKind = Literal["batch", "window", "head"]


class LedgerError(RuntimeError):
    """Base class of ledger failures."""


class LedgerUnavailable(LedgerError):
    """The ledger could not be reached (after the backend's own retries)."""


class AnchorConflict(LedgerError):
    """An entry with the same key but a different digest is already anchored."""


class EntryNotFound(LedgerError):
    """No entry is anchored under the requested key or reference."""


class LedgerCorrupted(LedgerError):
    """The ledger's own integrity check failed (e.g. a broken hash chain)."""


class LedgerIdentityMismatch(LedgerError):
    """The ledger is not the one the trust policy pins (another chain, file, or writer)."""


@dataclass(frozen=True, slots=True)
class AnchorEntry:
    """A document to anchor, under an idempotency key.

    `index_keys` are the lookup keys a keyed-stream ledger publishes the entry under
    (MultiChain: ``[window id, station, topic]``).
    """

    key: str
    kind: EntryKind
    body: dict[str, Any]
    index_keys: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return canonical_digest(self.body)


@dataclass(frozen=True, slots=True)
class AnchorRef:
    """Where an entry sits on a ledger and how settled it is."""

    backend: str
    key: str
    digest: str
    locator: dict[str, Any] = field(default_factory=dict)
    confirmations: int = 0
    required_confirmations: int = 0

    @property
    def final(self) -> bool:
        return self.confirmations >= self.required_confirmations

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "key": self.key,
            "digest": self.digest,
            "locator": self.locator,
            "confirmations": self.confirmations,
            "required_confirmations": self.required_confirmations,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AnchorRef:
        return cls(
            backend=value["backend"],
            key=value["key"],
            digest=value["digest"],
            locator=dict(value.get("locator", {})),
            confirmations=int(value.get("confirmations", 0)),
            required_confirmations=int(value.get("required_confirmations", 0)),
        )


class Ledger(ABC):
    """An append-only place to commit anchor entries."""

    backend: str = "abstract"
    supports_window_items: bool = False
    required_confirmations: int = 0
    # What the auditor pinned (`streamnotary trust export`); backends that can tell writers
    # apart ignore entries not written by it (docs/audit.md, "threat model").
    trusted_identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """What an auditor pins to recognise this ledger and its writer (JSON-serialisable).

        Always has ``backend``; each backend adds what identifies it (docs/formats.md,
        "Trust policy"). The default names only the backend.
        """
        return {"backend": self.backend}

    def pin(self, trusted_identity: dict[str, Any] | None) -> None:
        """Accept only the pinned ledger/writer from now on.

        The default checks the backend name and remembers the identity; backends compare
        the rest where they can (`LedgerIdentityMismatch`) and filter foreign entries.
        """
        if trusted_identity is None:
            return
        if trusted_identity.get("backend") != self.backend:
            raise LedgerIdentityMismatch(
                f"trust policy pins a {trusted_identity.get('backend')!r} ledger, "
                f"this is {self.backend!r}"
            )
        self.trusted_identity = dict(trusted_identity)

    @abstractmethod
    def anchor(self, entry: AnchorEntry) -> AnchorRef:
        """Commit `entry` once; idempotent by `entry.key` (see module docstring)."""

    @abstractmethod
    def lookup(self, key: str) -> AnchorRef | None:
        """The current reference (with fresh confirmations) of the entry under `key`, if any."""

    @abstractmethod
    def read(self, ref: AnchorRef) -> dict[str, Any]:
        """The body as committed on the ledger (the auditor recomputes its digest)."""

    def anchor_many(self, entries: Sequence[AnchorEntry]) -> list[AnchorRef]:
        """Anchor several entries, each idempotent by key, in order.

        Backends that can commit several entries in one transaction (MultiChain
        ``publishmulti``) override this; the default is one `anchor` per entry.
        """
        return [self.anchor(entry) for entry in entries]

    def foreign_entries(self, key: str) -> list[dict[str, Any]]:
        """Entries under `key` written by someone other than the pinned writer, which
        `lookup` ignores; the audit reports them as ``info`` (default: none)."""
        return []

    def verify_integrity(self) -> None:  # noqa: B027 - optional hook, most chains need none
        """Check the ledger's own integrity where the backend can (hash chain, ...)."""

    def locate(self, key: str, locator: dict[str, Any]) -> AnchorRef | None:
        """The entry under `key` at the place a receipt recorded (`AnchorRef.locator`).

        Auditors call this with the receipt's locator: backends that cannot search by key
        without the writer's wallet (Bitcoin family: by txid) override it; the located
        entry must still be the pinned writer's. Default: `lookup`, which ignores locators.
        """
        return self.lookup(key)

    def close(self) -> None:  # noqa: B027
        """Release connections."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
