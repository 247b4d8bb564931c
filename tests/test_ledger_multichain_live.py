"""The MultiChain backend against a LIVE MultiChain node (2.x), when one is configured.

No MultiChain node installs on the build machines, so this module runs only when
``MULTICHAIN_RPC_URL`` (plus ``MULTICHAIN_RPC_USER``, ``MULTICHAIN_RPC_PASSWORD`` and
optionally ``MULTICHAIN_CHAIN_NAME``) point at one; otherwise it is skipped with that
reason (the README documents this). The node's address needs create and send permission
(the default for the chain's first node). Everything runs on a fresh, uniquely named
stream, so it can be repeated on the same chain.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pytest

from storage.layout import batch_entry_key, window_entry_key
from storage.ledger.base import AnchorEntry
from storage.ledger.multichain import MultiChainLedger
from tasks.window import WindowKey

pytestmark = pytest.mark.live

SKIP_REASON = "no MultiChain node installs here; set MULTICHAIN_RPC_URL to run against a live node"
CONFIRMATION_DEADLINE_S = 90.0  # the recorded node waited up to ~30 s for a first confirmation
TOPIC = "dwd.observations"


@pytest.fixture(scope="module")
def live_ledger() -> Iterator[MultiChainLedger]:
    url = os.environ.get("MULTICHAIN_RPC_URL", "")
    if not url:
        pytest.skip(SKIP_REASON)
    ledger = MultiChainLedger(
        url,
        user=os.environ.get("MULTICHAIN_RPC_USER", "multichainrpc"),
        password=os.environ.get("MULTICHAIN_RPC_PASSWORD", ""),
        chain_name=os.environ.get("MULTICHAIN_CHAIN_NAME", ""),
        stream=f"sn-live-{int(time.time())}-{secrets.token_hex(3)}",
        required_confirmations=1,
    )
    yield ledger
    ledger.close()


def test_anchor_lookup_read_confirm_and_reanchor_on_a_live_node(
    live_ledger: MultiChainLedger,
) -> None:
    window = WindowKey(station_id="10381", index=435_000, size_seconds=3600)
    window_entry = AnchorEntry(
        key=window_entry_key(TOPIC, window, 0),
        kind="window",
        body={"checkpoint_digest": secrets.token_hex(32), "revision": 0},
        index_keys=(window.window_id, window.station_id, TOPIC),
    )
    root = secrets.token_hex(32)
    # Over maxshowndata (16 KiB by default): the node lists it as a reference only.
    batch_entry = AnchorEntry(
        key=batch_entry_key(TOPIC, root),
        kind="batch",
        body={"root": root, "checkpoints": [secrets.token_hex(32) for _ in range(300)]},
    )

    refs = [live_ledger.anchor(entry) for entry in (window_entry, batch_entry)]
    for entry, ref in zip((window_entry, batch_entry), refs, strict=True):
        found = live_ledger.lookup(entry.key)
        assert found is not None and found.locator["txid"] == ref.locator["txid"]
        assert found.digest == entry.digest
        assert live_ledger.read(found) == entry.body
    for key in window_entry.index_keys:
        items = live_ledger.rpc.call("liststreamkeyitems", live_ledger.stream, key, False, 10, 0)
        assert [item["txid"] for item in items] == [refs[0].locator["txid"]]
    shown = live_ledger.rpc.call("getstreamitem", live_ledger.stream, refs[1].locator["txid"])
    assert set(shown["data"]) == {"txid", "vout", "format", "size"}

    deadline = time.monotonic() + CONFIRMATION_DEADLINE_S
    confirmed = live_ledger.lookup(window_entry.key)
    while confirmed is not None and not confirmed.final and time.monotonic() < deadline:
        time.sleep(1.0)  # polling a live node for a block; the deadline bounds it
        confirmed = live_ledger.lookup(window_entry.key)
    assert confirmed is not None and confirmed.final, "no confirmation within 90 s"

    again = [live_ledger.anchor(entry) for entry in (window_entry, batch_entry)]
    assert [r.locator["txid"] for r in again] == [r.locator["txid"] for r in refs]
