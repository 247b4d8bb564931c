"""The MultiChain backend against exchanges recorded from a real MultiChain 2.3.3 node.

Three layers, all over real HTTP servers on free ports:
* the JSON-RPC client against a *replay* of the recorded exchanges (exact statuses and
  bodies): parsing, every recorded error's named exception, the big-item path, the
  default count of 10, unconfirmed vs confirmed items, auth, retries;
* the emulator (a test double) checked against every recording it can reproduce, so that
  the ledger tests below run against the node's real formats;
* `MultiChainLedger` against the live MultiChain 2.3.3 node the session starts
  (tests/fixtures/multichain.py): anchor, idempotency, conflicts, confirmations, keys, data
  above maxshowndata, HTTP behaviour. Permissions, publishers, paging and publishmulti
  are in test_ledger_multichain_live.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from storage.ledger.base import (
    AnchorConflict,
    AnchorEntry,
    AnchorRef,
    EntryNotFound,
    LedgerCorrupted,
    LedgerUnavailable,
)
from storage.ledger.factory import open_ledger
from storage.ledger.multichain import (
    BadData,
    EntityAlreadyExists,
    InsufficientFunds,
    InvalidParameter,
    ItemNotFound,
    MethodNotFound,
    MultiChainAuthError,
    MultiChainLedger,
    MultiChainRpc,
    MultiChainRpcError,
    NoPermission,
    NotSubscribed,
    StreamNotFound,
    rpc_error,
)
from streamnotary.config import Settings, load_settings
from tests.fixtures.multichain import RecordedExchange, ReplayServer
from tests.multichain_emulator import MultiChainEmulator

TXID_04 = "307e42e3ab07dd4ae34d3e04fe2116408550875cedffb5cfc3b537d9200112df"
TXID_21 = "14477e8234848da23dc6ede35e940dc0af5a65be1758eb3623f7bcb52490f1a1"


def rpc_for(replay: ReplayServer, **kwargs: Any) -> MultiChainRpc:
    return MultiChainRpc(replay.url, user=replay.user, password=replay.password, **kwargs)


def call_recorded(rpc: MultiChainRpc, exchange: RecordedExchange) -> Any:
    return rpc.call(exchange.method, *exchange.params)


# -- the client against the replay -----------------------------------------------------------


def test_stream_lifecycle_conversation(multichain_replay: ReplayServer) -> None:
    multichain_replay.play(
        "01_getinfo",
        "02_create_stream",
        "03_subscribe",
        "04_publish",
        "05_liststreamkeyitems_unconfirmed",
        "06_getstreamitem_unconfirmed",
    )
    rpc = rpc_for(multichain_replay)
    info = rpc.call("getinfo")
    assert (info["version"], info["chainname"], info["protocolversion"]) == (
        "2.3.3",
        "testchain",
        20013,
    )
    assert rpc.call("create", "stream", "anchors", True) == (
        "fccad352e0d2b2e8225a4703753c167c9d37edf81dcf6bbebe5e74999684a26d"
    )
    assert rpc.call("subscribe", "anchors") is None
    keys = ["window:433:2019-09-07T17", "topic:weather"]
    data = {"json": {"root": "ab" + "cd" * 31, "offsets": {"0": [10, 20]}}}
    assert rpc.call("publish", "anchors", keys, data) == TXID_04
    [item] = rpc.call("liststreamkeyitems", "anchors", keys[0])
    # Listed at once, before any block: zero confirmations and no blocktime yet.
    assert item["confirmations"] == 0 and "blocktime" not in item
    assert (item["txid"], item["keys"], item["data"]) == (TXID_04, keys, data)
    same = rpc.call("getstreamitem", "anchors", TXID_04)
    assert same == item


def test_confirmed_items_and_verbose_fields(multichain_replay: ReplayServer) -> None:
    multichain_replay.play(
        "12_liststreamkeyitems_confirmed",
        "13_liststreamkeyitems_verbose",
        "14_getstreamitem_confirmed",
        "15_getstreamitem_verbose",
    )
    rpc = rpc_for(multichain_replay)
    [plain] = rpc.call("liststreamkeyitems", "anchors", "window:433:2019-09-07T17")
    assert plain["confirmations"] == 1 and plain["blocktime"] == 1795275760
    assert "blockhash" not in plain and "vout" not in plain
    [verbose] = rpc.call("liststreamkeyitems", "anchors", "window:433:2019-09-07T17", True)
    assert (verbose["blockheight"], verbose["vout"], verbose["valid"]) == (43, 0, True)
    assert rpc.call("getstreamitem", "anchors", TXID_04)["confirmations"] == 1
    assert rpc.call("getstreamitem", "anchors", TXID_04, True)["blockindex"] == 2


ERRORS = [
    ("07_err_publish_unknown_stream", StreamNotFound, -708, 500),
    ("08_err_create_duplicate_stream", EntityAlreadyExists, -705, 500),
    ("09_err_liststreamkeyitems_unknown_stream", StreamNotFound, -708, 500),
    ("10_err_getstreamitem_unknown_txid", ItemNotFound, -710, 500),
    ("19_err_liststreamkeyitems_not_subscribed", NotSubscribed, -703, 500),
    ("23_gettxoutdata_big_item", InvalidParameter, -8, 500),
    ("24_err_publish_key_too_long", InvalidParameter, -8, 500),
    ("25_err_publish_bad_data", BadData, -702, 500),
    ("26_err_wrong_method", MethodNotFound, -32601, 404),
]


@pytest.mark.parametrize(("name", "exc_type", "code", "status"), ERRORS)
def test_recorded_errors_map_to_named_exceptions_and_are_not_retried(
    multichain_replay: ReplayServer,
    multichain_recordings: dict[str, RecordedExchange],
    name: str,
    exc_type: type[MultiChainRpcError],
    code: int,
    status: int,
) -> None:
    exchange = multichain_recordings[name]
    assert exchange.status == status  # the recording itself
    multichain_replay.play(name)
    rpc = rpc_for(multichain_replay, retries=3, backoff=0.01)
    with pytest.raises(exc_type) as caught:
        call_recorded(rpc, exchange)
    assert caught.value.code == code
    assert caught.value.message == exchange.response["error"]["message"]
    assert caught.value.http_status == status
    assert multichain_replay.requests == 1  # a JSON-RPC error is an answer: never retried


def test_unknown_txid_is_an_entry_not_found() -> None:
    assert isinstance(rpc_error(-710, "x"), EntryNotFound)
    assert isinstance(rpc_error(-704, "x"), NoPermission)
    assert isinstance(rpc_error(-716, "x"), InsufficientFunds)
    assert isinstance(rpc_error(-6, "Insufficient funds"), InsufficientFunds)
    generic = rpc_error(-1, "whatever")
    assert type(generic) is MultiChainRpcError and generic.code == -1


def test_default_count_returns_only_the_last_ten(multichain_replay: ReplayServer) -> None:
    """Recording 30: 100 items under one key, listed without count/start → items 90..99."""
    multichain_replay.play("30_liststreamkeyitems_default_count")
    items = rpc_for(multichain_replay).call("liststreamkeyitems", "anchors", "bench1:0")
    assert [int(i["data"]["json"]["root"], 16) for i in items] == list(range(90, 100))


def test_big_item_is_fetched_whole_with_gettxoutdata(
    multichain_replay: ReplayServer, multichain_recordings: dict[str, RecordedExchange]
) -> None:
    multichain_replay.play(
        "22_getstreamitem_big_item_over_maxshowndata", "23b_gettxoutdata_big_item_full"
    )
    ledger = MultiChainLedger(
        multichain_replay.url,
        user=multichain_replay.user,
        password=multichain_replay.password,
        stream="anchors",
    )
    item = ledger.rpc.call("getstreamitem", "anchors", TXID_21)
    assert item["data"] == {"txid": TXID_21, "vout": 0, "format": "json", "size": 20012}
    published = multichain_recordings["21_publish_big_item"].params[2]
    assert ledger.item_data(item) == published


def test_ledger_accepts_an_existing_stream(
    multichain_ledger_factory: Callable[..., MultiChainLedger],
) -> None:
    """First use creates the stream; -705 "already exists" is fine; then it subscribes."""
    first = multichain_ledger_factory(1)
    first.ensure_stream()
    with pytest.raises(EntityAlreadyExists):
        first.rpc.call("create", "stream", first.stream, {"restrict": "write"})
    second = multichain_ledger_factory(1, stream=first.stream)
    second.ensure_stream()
    second.ensure_stream()  # once per ledger object
    assert second.stream_info()["subscribed"] is True


def test_wrong_credentials_are_a_clear_error_not_retried(multichain_replay: ReplayServer) -> None:
    rpc = MultiChainRpc(multichain_replay.url, user="multichainrpc", password="wrong", retries=3)
    with pytest.raises(MultiChainAuthError):
        rpc.call("getinfo")
    assert multichain_replay.requests == 1


def test_connection_refused_retries_then_ledger_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rpc = MultiChainRpc(f"http://127.0.0.1:{port}", user="u", password="p", retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="after 3 attempts"):
        rpc.call("getinfo")
    assert time.monotonic() - started < 3.0


@pytest.fixture
def dropping_server() -> Iterator[tuple[str, list[int]]]:
    """A real TCP server that accepts each connection and closes it unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    listener.close()


def test_dropped_connections_are_retried_with_backoff(
    dropping_server: tuple[str, list[int]],
) -> None:
    url, accepted = dropping_server
    rpc = MultiChainRpc(url, user="u", password="p", retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        rpc.call("getinfo")
    elapsed = time.monotonic() - started
    assert len(accepted) == 3  # one attempt + two retries
    assert 0.15 <= elapsed < 3.0  # backoff 0.05 + 0.10 between attempts


def test_chain_name_is_sent_when_configured() -> None:
    rpc = MultiChainRpc("http://127.0.0.1:1", user="u", password="p", chain_name="testchain")
    body = rpc.request_body("getinfo", [])
    assert body["chain_name"] == "testchain" and body["jsonrpc"] == "1.0"
    assert "chain_name" not in MultiChainRpc("http://h:1", user="u", password="p").request_body(
        "x", []
    )


# -- the emulator checked against the recordings -----------------------------------------------

VOLATILE = {"txid", "createtxid", "blockhash", "blocktime", "time", "timereceived", "keypoololdest"}
# The emulator reports the compact-JSON length as `size`; the node its UBJSON size.
VOLATILE_DATA = {"size"}
NOT_EMULATED = {"16_liststreamkeys_anchors", "31_liststreamkeys_wildcard"}


def normalise(value: Any, key: str = "") -> Any:
    """Replace values that differ between runs (txids, hashes, times) by their type."""
    if key in VOLATILE | VOLATILE_DATA:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return [(k, normalise(v, k)) for k, v in value.items()]  # key ORDER matters too
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return "<txid>"
    return value


def test_emulator_reproduces_every_recorded_exchange(
    multichain_recordings: dict[str, RecordedExchange],
) -> None:
    emulator = MultiChainEmulator(chain_name="testchain")
    txids: dict[str, str] = {}  # recorded txid -> emulator txid

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return txids.get(value, value)
        if isinstance(value, list):
            return [substitute(v) for v in value]
        return value

    compared = []
    for name, exchange in multichain_recordings.items():
        if name in NOT_EMULATED:
            continue
        if name == "12_liststreamkeyitems_confirmed":
            emulator.mine(1)  # the recording was taken after the first block
        if name == "30_liststreamkeyitems_default_count":  # recorded in a later session
            for i in range(100):
                data = {"json": {"root": f"{i:064x}", "offsets": {"0": [i, i + 10]}}}
                emulator.state.dispatch("publish", ["anchors", ["bench1:0", "topic:bench1"], data])
            emulator.mine(4)
        request = dict(exchange.request, params=substitute(exchange.params))
        status, body = emulator.handle(json.dumps(request).encode())
        got = json.loads(body)
        recorded = exchange.response
        assert status == exchange.status, name
        assert list(got) == list(recorded), name
        if recorded["error"] is not None:
            assert got["error"] == recorded["error"], name
        else:
            if isinstance(recorded["result"], str) and isinstance(got["result"], str):
                txids[recorded["result"]] = got["result"]
            assert normalise(got["result"]) == normalise(recorded["result"]), name
        compared.append(name)
    assert len(compared) == len(multichain_recordings) - len(NOT_EMULATED) == 30


def test_emulator_answers_unknown_methods_like_the_node() -> None:
    emulator = MultiChainEmulator()
    status, body = emulator.handle(
        b'{"jsonrpc":"1.0","id":"x","method":"liststreamkeys","params":[]}'
    )
    assert status == 404 and b'"code":-32601' in body


# -- MultiChainLedger against the live node ----------------------------------------------------


def window_entry(revision: int = 0, **body: Any) -> AnchorEntry:
    window_id = "10381/2019-09-07T17:00Z/PT1H"
    return AnchorEntry(
        key=f"window/dwd.observations/{window_id}/r{revision}",
        kind="window",
        body={"checkpoint_digest": "ab" * 32, "revision": revision, **body},
        index_keys=(window_id, "10381", "dwd.observations"),
    )


def test_anchor_lookup_read_and_confirmations(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
    multichain_paused: Any,
) -> None:
    ledger = multichain_ledger_factory(1)
    entry = window_entry()
    ref = ledger.anchor(entry)
    assert (ref.backend, ref.key, ref.digest) == ("multichain", entry.key, entry.digest)
    assert ref.locator["stream"] == ledger.stream and len(ref.locator["txid"]) == 64
    assert ref.locator["publisher"] == ledger.operator_address() and ref.locator["vout"] == 0
    assert ref.confirmations == 0 and not ref.final

    pending = ledger.lookup(entry.key)
    assert pending is not None and pending.locator == ref.locator and not pending.final
    assert ledger.read(ref) == entry.body

    multichain_paused.mine(1)
    confirmed = ledger.lookup(entry.key)
    assert confirmed is not None and confirmed.confirmations == 1 and confirmed.final
    multichain_paused.mine(2)
    assert ledger.lookup(entry.key).confirmations == 3  # type: ignore[union-attr]
    assert ledger.lookup("window/dwd.observations/nothing/r0") is None


def test_anchor_is_idempotent_and_conflicts_are_refused(
    multichain_ledger_factory: Callable[..., MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(1)
    entry = window_entry()
    first = ledger.anchor(entry)
    # A fresh client (a re-run after a crash) finds the item instead of publishing again.
    again = multichain_ledger_factory(1, stream=ledger.stream)
    assert again.anchor(entry).locator["txid"] == first.locator["txid"]
    assert len(list(ledger.key_items(entry.key))) == 1
    with pytest.raises(AnchorConflict):
        ledger.anchor(window_entry(checkpoint_digest="cd" * 32))


def test_items_are_published_under_entry_and_index_keys(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(0)
    entry = window_entry()
    ref = ledger.anchor(entry)
    for key in (entry.key, *entry.index_keys):
        [item] = ledger.rpc.call("liststreamkeyitems", ledger.stream, key)
        assert item["txid"] == ref.locator["txid"]
        assert item["keys"] == [entry.key, *entry.index_keys]
        assert item["data"]["json"] == {
            "entry_key": entry.key,
            "kind": "window",
            "digest": entry.digest,
            "body": entry.body,
        }
    # An index key is not an entry key: looking it up finds no anchor.
    assert ledger.lookup(entry.index_keys[0]) is None


def test_lookup_pages_past_the_default_ten_items(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(0)
    ledger.key_items_page = 10
    ledger.ensure_stream()
    for i in range(25):
        ledger.rpc.call("publish", ledger.stream, ["shared-key"], {"json": {"n": i}})
    assert [i["data"]["json"]["n"] for i in ledger.key_items("shared-key")] == list(range(25))
    # The first anchor under a key wins even when later unrelated items share the key.
    entry = AnchorEntry(key="shared-key", kind="batch", body={"root": "00" * 32})
    ref = ledger.anchor(entry)
    assert ledger.lookup("shared-key") == ref


def test_body_above_maxshowndata_reads_back_whole(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(0)
    entry = AnchorEntry(
        key="batch/dwd.observations/" + "ef" * 32, kind="batch", body={"blob": "y" * 20_000}
    )
    ref = ledger.anchor(entry)
    listed = ledger.rpc.call("getstreamitem", ledger.stream, ref.locator["txid"])
    assert set(listed["data"]) == {"txid", "vout", "format", "size"}  # not shown inline
    assert ledger.read(ref) == entry.body
    assert ledger.lookup(entry.key) == ref
    assert ledger.anchor(entry) == ref  # idempotency also through gettxoutdata


def test_read_refuses_a_reference_that_does_not_match_the_item(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(0)
    ref = ledger.anchor(window_entry())
    forged = AnchorRef.from_json({**ref.to_json(), "digest": "00" * 32})
    with pytest.raises(LedgerCorrupted):
        ledger.read(forged)
    missing = AnchorRef.from_json(
        {**ref.to_json(), "locator": {"txid": "00" * 32, "stream": ledger.stream}}
    )
    with pytest.raises(EntryNotFound):
        ledger.read(missing)


def test_overlong_key_is_refused_before_publishing(
    multichain_ledger_factory: Callable[[int], MultiChainLedger],
) -> None:
    ledger = multichain_ledger_factory(0)
    entry = AnchorEntry(key="k" * 257, kind="batch", body={})
    with pytest.raises(InvalidParameter):
        ledger.anchor(entry)
    # The node would also refuse it (-8), as recorded.
    ledger.ensure_stream()
    with pytest.raises(InvalidParameter, match="Item key is too long"):
        ledger.rpc.call("publish", ledger.stream, "k" * 257, {"json": {}})


def test_open_ledger_from_settings(multichain_node: Any) -> None:
    settings = Settings(
        ledger="multichain",
        ledger_url=multichain_node.url,
        ledger_user=multichain_node.user,
        ledger_password=multichain_node.password,
        ledger_chain_name=multichain_node.chain_name,
        ledger_stream="settings-stream",
        ledger_confirmations=2,
    )
    with open_ledger(settings) as ledger:
        assert isinstance(ledger, MultiChainLedger)
        assert (ledger.stream, ledger.required_confirmations) == ("settings-stream", 2)
        ref = ledger.anchor(AnchorEntry(key="batch/t/" + "12" * 32, kind="batch", body={"n": 1}))
        assert ref.required_confirmations == 2 and not ref.final


def test_wrong_chain_name_is_caught(multichain_node: Any) -> None:
    ledger = MultiChainLedger(
        multichain_node.url,
        user=multichain_node.user,
        password=multichain_node.password,
        chain_name="otherchain",
    )
    # The live node answers -32600 "Wrong chain name" (the emulator used to word it its own way).
    with pytest.raises(MultiChainRpcError, match="Wrong chain name") as caught:
        ledger.ensure_stream()
    assert caught.value.code == -32600


def test_unsubscribed_reader_gets_not_subscribed(multichain_node: Any) -> None:
    rpc = MultiChainRpc(
        multichain_node.url,
        user=multichain_node.user,
        password=multichain_node.password,
    )
    rpc.call("create", "stream", "unsubscribed-reader", True)
    with pytest.raises(NotSubscribed):
        rpc.call("liststreamkeyitems", "unsubscribed-reader", "k")
    with pytest.raises(EntityAlreadyExists):
        rpc.call("create", "stream", "unsubscribed-reader", True)


def test_node_speaks_http_as_recorded(multichain_node: Any) -> None:
    body = {"jsonrpc": "1.0", "id": "z", "method": "nosuchmethod", "params": []}
    response = requests.post(
        multichain_node.url,
        json=body,
        auth=(multichain_node.user, multichain_node.password),
        timeout=5,
    )
    assert response.status_code == 404
    assert response.json() == {
        "result": None,
        "error": {"code": -32601, "message": "Method not found"},
        "id": "z",
    }
    assert requests.post(multichain_node.url, json=body, timeout=5).status_code == 401


def test_environment_variables_select_and_configure_multichain(
    multichain_node: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The documented STREAMNOTARY_LEDGER_* variables reach the backend."""
    monkeypatch.chdir(tmp_path)  # no stray streamnotary.toml
    monkeypatch.setenv("STREAMNOTARY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STREAMNOTARY_CONFIG", raising=False)
    for name, value in {
        "LEDGER": "multichain",
        "LEDGER_URL": multichain_node.url,
        "LEDGER_USER": multichain_node.user,
        "LEDGER_PASSWORD": multichain_node.password,
        "LEDGER_CHAIN_NAME": multichain_node.chain_name,
        "LEDGER_STREAM": "env-stream",
        "LEDGER_CONFIRMATIONS": "3",
    }.items():
        monkeypatch.setenv(f"STREAMNOTARY_{name}", value)

    with open_ledger(load_settings()) as ledger:
        assert isinstance(ledger, MultiChainLedger)
        assert (ledger.stream, ledger.required_confirmations) == ("env-stream", 3)
        assert ledger.rpc.chain_name == multichain_node.chain_name
        entry = AnchorEntry(key="batch/env/" + "34" * 32, kind="batch", body={"n": 2})
        assert ledger.lookup(entry.key) is None
        assert ledger.anchor(entry).required_confirmations == 3


def test_factory_ledger_on_an_unreachable_node_fails_cleanly(
    multichain_ledger_factory: Callable[..., MultiChainLedger],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = multichain_ledger_factory(1, url=f"http://127.0.0.1:{port}")
    with pytest.raises(LedgerUnavailable):
        ledger.anchor(window_entry())


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[int]]]:
    """A real TCP server that accepts each connection, reads the request, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[int] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.recv(65536)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_read_timeouts_are_retried_only_for_read_only_calls(
    silent_server: tuple[str, list[int]],
) -> None:
    """A stalled node: listing again is harmless, publishing again could publish twice."""
    url, accepted = silent_server
    rpc = MultiChainRpc(url, user="u", password="p", timeout=0.3, retries=2, backoff=0.01)
    with pytest.raises(LedgerUnavailable, match="after 3 attempts"):
        rpc.call("liststreamkeyitems", "s", "k", True, 200, 0)
    assert len(accepted) == 3
    with pytest.raises(LedgerUnavailable, match="not retried"):
        rpc.call("publish", "s", "k", {"json": {}})
    assert len(accepted) == 4
