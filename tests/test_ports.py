"""Ports for the servers we start: below the kernel's ephemeral range (streamnotary.ports).

The failure this prevents was seen in CI: the MultiChain node-restart drill restarted the
session's node on its port, the node could not bind it and exited, and every MultiChain test
after it failed with "connection refused". The last test shows, on a real node, what a
server does when an outgoing connection holds its port.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from streamnotary import ports
from streamnotary.chain_nodes import NodeStartError
from streamnotary.multichain_node import start_multichain
from streamnotary.services import GRPC_OFFSET, free_port_with_grpc_twin


def test_ports_are_below_the_ephemeral_range_bindable_and_never_repeated() -> None:
    low = ports.ephemeral_low()
    assert low > ports.FLOOR  # this machine's range leaves room (else the kernel chooses)
    chosen = [ports.free_port() for _ in range(300)]
    assert all(ports.FLOOR <= p < low for p in chosen)
    assert len(set(chosen)) == len(chosen)
    for port in chosen[:20]:
        with socket.socket() as s:
            s.bind((ports.HOST, port))  # raises if anything holds it


def test_a_twin_port_fits_below_the_ephemeral_range_too() -> None:
    taken: set[int] = set()
    chosen = [free_port_with_grpc_twin(taken) for _ in range(6)]
    assert all(p + GRPC_OFFSET < ports.ephemeral_low() for p in chosen)
    assert len(taken) == 12


def test_reseeding_the_global_random_does_not_repeat_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property tests reseed `random`; two processes doing so must not draw the same ports.
    Each draw starts with an empty memory of handed-out ports, as a fresh process does."""
    draws = []
    for _ in range(2):
        monkeypatch.setattr(ports, "_handed_out", set())
        random.seed(7)
        draws.append([ports.free_port() for _ in range(3)])
    assert draws[0] != draws[1]


def test_a_node_whose_port_an_outgoing_connection_holds_cannot_start(
    multichain_bin_dir: Path, tmp_path: Path
) -> None:
    """Why servers must not listen in the ephemeral range: the real node exits at once."""
    with socket.socket() as listener:
        listener.bind((ports.HOST, 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            held = client.getsockname()[1]
            assert held >= ports.ephemeral_low()  # where outgoing ports come from
            with pytest.raises(NodeStartError, match="Unable to bind any endpoint for RPC"):
                start_multichain(datadir=tmp_path, rpc_port=held, ready_timeout_s=30)
