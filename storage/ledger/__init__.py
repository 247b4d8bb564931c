"""Ledgers that anchor checkpoints: embedded hash chain, MultiChain, EVM, Bitcoin family."""

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    Ledger,
    LedgerCorrupted,
    LedgerError,
    LedgerIdentityMismatch,
    LedgerUnavailable,
)

__all__ = [
    "AnchorConflict",
    "AnchorEntry",
    "AnchorRef",
    "EntryNotFound",
    "Ledger",
    "LedgerCorrupted",
    "LedgerError",
    "LedgerIdentityMismatch",
    "LedgerUnavailable",
]
