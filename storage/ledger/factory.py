"""Open the ledger named by the settings (`ledger = local | multichain | evm | bitcoin`)."""

from __future__ import annotations

from typing import Any

from storage.ledger.base import Ledger, LedgerError
from streamnotary.config import Settings

BACKENDS = ("local", "multichain", "evm", "bitcoin")


def open_ledger(settings: Settings, trusted_identity: dict[str, Any] | None = None) -> Ledger:
    """Construct the configured backend, pinned to `trusted_identity` when given.

    Imports are lazy so optional extras stay optional.
    """
    ledger = _construct(settings)
    try:
        ledger.pin(trusted_identity)
    except BaseException:
        ledger.close()
        raise
    return ledger


def _construct(settings: Settings) -> Ledger:
    kind = settings.ledger
    if kind == "local":
        from storage.ledger.local import LocalLedger

        return LocalLedger.from_settings(settings)
    if kind == "multichain":
        from storage.ledger.multichain import MultiChainLedger

        return MultiChainLedger.from_settings(settings)
    if kind == "evm":
        from storage.ledger.evm import EvmLedger

        return EvmLedger.from_settings(settings)
    if kind == "bitcoin":
        from storage.ledger.bitcoin import BitcoinLedger

        return BitcoinLedger.from_settings(settings)
    raise LedgerError(f"unknown ledger {kind!r}; choose one of {', '.join(BACKENDS)}")
