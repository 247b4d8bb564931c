"""Node and source URLs can carry credentials (userinfo, an API key in the path or query):
no error message of any client names them (issue 9 item 7). Each client is pointed at a
real closed port, so the real connection-error path of requests/urllib3 (which echoes the
URL) is what gets masked.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from storage.ledger.base import LedgerUnavailable
from storage.ledger.bitcoin_rpc import BitcoinRpc
from storage.ledger.multichain_rpc import MultiChainRpc
from storage.sources import FetchLimits, SourceError, fetch_url
from streamnotary.chain_nodes import free_port
from streamnotary.masking import install_log_masking


@pytest.fixture
def token() -> str:
    return secrets.token_hex(12)


def _url(token: str) -> str:
    return f"http://user:pw{token}@127.0.0.1:{free_port()}/v3/{token}?apikey={token}"


def test_multichain_messages_hide_url_credentials(token: str) -> None:
    rpc = MultiChainRpc(_url(token), user="u", password=f"p{token}", retries=1, backoff=0.01)
    with pytest.raises(LedgerUnavailable) as caught:
        rpc.call("getinfo")
    assert token not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is None  # no chained exception re-printing the URL


def test_bitcoin_messages_hide_url_credentials(token: str) -> None:
    rpc = BitcoinRpc(_url(token), "u", f"p{token}", retries=1)
    with pytest.raises(LedgerUnavailable) as caught:
        rpc.call("getblockchaininfo")
    assert token not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is None


def test_source_messages_and_logs_hide_url_credentials(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A download URL's path is shown (it names the DWD file); userinfo and query are not,
    neither in the error nor in urllib3's retry warnings."""
    install_log_masking([])
    url = f"http://user:pw{token}@127.0.0.1:{free_port()}/climate/x.zip?X-Amz-Signature={token}"
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as caught:
        fetch_url(url, limits=FetchLimits(deadline_seconds=5.0))
    assert token not in str(caught.value) and "127.0.0.1:" in str(caught.value)
    assert "/climate/x.zip" in str(caught.value)
    assert caught.value.__cause__ is None
    assert "x.zip" in caplog.text and token not in caplog.text
