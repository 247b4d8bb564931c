"""Loopback ports for the servers we start (broker, S3, Prefect, chain nodes).

Why not "bind to port 0 and let the kernel choose"? The kernel answers from its *ephemeral*
range (``net.ipv4.ip_local_port_range``, 32768-60999 by default), the same range it
draws the local port of every outgoing connection from. A server that is stopped and
started again on its port (a node-restart drill, ``streamnotary up`` after ``down``) leaves
that port open to any outgoing connection for the gap; worse, a client that keeps
reconnecting to the stopped server's port can be given that very port as its own source
port and connect to itself (TCP simultaneous open). Either way the restarted server cannot
bind ("Unable to bind any endpoint for RPC server", measured on MultiChain 2.3.3 with its
RPC port held by an outgoing connection) and exits: seen once in CI as every MultiChain test
after the restart drill failing with "connection refused".

So a port is drawn at random from below the ephemeral range, where the kernel never
places an outgoing connection, and checked by binding it. Random (from the OS's entropy,
never the seedable global `random`, which tests and property tests reseed) so that two
processes choosing at the same time rarely meet; the bind check catches the rest, and a
process never hands out the same port twice.
"""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

HOST = "127.0.0.1"
FLOOR = 10_000  # below: well-known and registered services more often listen
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32_768  # Linux's default; IANA's dynamic range starts at 49152
_ATTEMPTS = 200

_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_low() -> int:
    """The lowest port the kernel may give an outgoing connection."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _binds(port: int, host: str, reuse: bool) -> bool:
    with socket.socket() as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as the servers use it:
    connections of a stopped server lingering in TIME_WAIT do not make the port busy."""
    return _binds(port, host, reuse=True)


def free_port(host: str = HOST, *, twin_offset: int = 0) -> int:
    """A port nothing is bound to, below the ephemeral range (see the module docstring).

    `twin_offset`: the server also listens on ``port + twin_offset`` (SeaweedFS's gRPC
    port is +10000), which must be free and below the ephemeral range too. Where that
    range leaves no room (an unusual ``ip_local_port_range``), the kernel chooses.
    """
    top = ephemeral_low() - twin_offset
    with _lock:
        for _ in range(_ATTEMPTS if top > FLOOR else 0):
            port = FLOOR + secrets.randbelow(top - FLOOR)
            pair = {port, port + twin_offset}
            if pair & _handed_out:
                continue
            # Strict (no SO_REUSEADDR): not even a lingering connection on it.
            if all(_binds(p, host, reuse=False) for p in pair):
                _handed_out.update(pair)
                return port
    return _kernel_port(host, twin_offset)


def _kernel_port(host: str, twin_offset: int) -> int:
    for _ in range(_ATTEMPTS):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if twin_offset == 0:
            return port
        if port + twin_offset <= 65_535 and port_is_free(port + twin_offset, host):
            return port
    raise OSError(f"no free port pair (P, P+{twin_offset}) on {host}")
