"""Start and stop local chain nodes: `anvil` (EVM) and `litecoind -regtest` (Bitcoin Core RPC).

The test fixtures, `benchmarks/ledger.py` and `streamnotary demo --ledger evm` all need a
real node on a free port in a private directory, ready before the first request and stopped
by the PID it was started with (never by name: other people's nodes may share the machine).
Keeping that logic here means all three start nodes the same way.

Binaries: anvil comes from the npm package ``@foundry-rs/anvil-linux-amd64`` (``npm ci`` at
the repo root puts it in ``node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil``), or from
``$STREAMNOTARY_ANVIL`` / ``PATH``; litecoind from Debian (``/usr/bin/litecoind``), or from
``$STREAMNOTARY_LITECOIND`` / ``PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from streamnotary.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
ANVIL_NPM_PATH = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")


class NodeStartError(RuntimeError):
    """A node binary is missing or the node did not become ready in time."""


def find_anvil() -> Path:
    """The anvil binary: $STREAMNOTARY_ANVIL, the repo's node_modules, ./node_modules, PATH."""
    candidates: list[Path] = []
    if os.environ.get("STREAMNOTARY_ANVIL"):
        candidates.append(Path(os.environ["STREAMNOTARY_ANVIL"]))
    candidates += [REPO_ROOT / ANVIL_NPM_PATH, Path.cwd() / ANVIL_NPM_PATH]
    on_path = shutil.which("anvil")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise NodeStartError(
        "anvil not found: run `npm ci` at the repository root (it installs "
        f"@foundry-rs/anvil-linux-amd64 into {ANVIL_NPM_PATH}) or set STREAMNOTARY_ANVIL"
    )


def find_litecoind() -> Path:
    """The litecoind binary: $STREAMNOTARY_LITECOIND, /usr/bin/litecoind, PATH."""
    env = os.environ.get("STREAMNOTARY_LITECOIND")
    for c in (env, "/usr/bin/litecoind", shutil.which("litecoind")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise NodeStartError(
        "litecoind not found: install it (`apt-get install -y litecoind`) "
        "or set STREAMNOTARY_LITECOIND to the binary"
    )


def _poll(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    deadline_s: float,
    what: str,
    log: Path,
) -> None:
    """Wait until `ready()` holds, the process dies, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NodeStartError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        try:
            if ready():
                return
        except (requests.RequestException, OSError, RuntimeError, ValueError):
            pass  # not listening yet, or warming up (RPC error -28)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    _stop_pid(proc, 5.0)
    raise NodeStartError(f"{what} not ready within {deadline_s}s: {_tail(log)}")


def _tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _stop_pid(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process we started (by its PID), then SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def _jsonrpc(
    url: str,
    method: str,
    params: list[Any],
    auth: tuple[str, str] | None = None,
    timeout: float = 5.0,
    version: str = "2.0",
) -> Any:
    r = requests.post(
        url,
        json={"jsonrpc": version, "id": 1, "method": method, "params": params},
        auth=auth,
        timeout=timeout,
    )
    doc = r.json()
    if doc.get("error"):
        raise RuntimeError(f"{method}: {doc['error']}")
    return doc["result"]


@dataclass
class AnvilNode:
    """A running anvil process. `state_file` (``--state``) survives `restart()`."""

    binary: Path
    workdir: Path
    port: int
    state_file: Path | None
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_timeout_s: float = 30.0) -> AnvilNode:
        args = [
            str(self.binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--silent",
            *self.extra_args,
        ]
        if self.state_file is not None:
            args += ["--state", str(self.state_file)]
        log = self.workdir / "anvil.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        try:
            _poll(
                lambda: _jsonrpc(self.url, "eth_chainId", [], timeout=1.0) is not None,
                self.proc,
                ready_timeout_s,
                "anvil",
                log,
            )
        except BaseException:
            _stop_pid(self.proc, 5.0)
            raise
        return self

    def rpc(self, method: str, *params: Any) -> Any:
        return _jsonrpc(self.url, method, list(params))

    def mine(self, blocks: int = 1) -> None:
        """Advance the chain by `blocks` empty blocks (moves anchors toward final)."""
        self.rpc("anvil_mine", hex(blocks))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop by PID; SIGTERM lets anvil dump its `--state` file on the way out."""
        if self.proc is not None:
            _stop_pid(self.proc, timeout_s)

    def restart(self) -> AnvilNode:
        """Stop and start again on the same port with the same state file."""
        self.stop()
        return self.start()


def start_anvil(
    *,
    port: int | None = None,
    workdir: Path | None = None,
    state_file: Path | None = None,
    persist_state: bool = True,
    extra_args: tuple[str, ...] = (),
    ready_timeout_s: float = 30.0,
) -> AnvilNode:
    """Start anvil on a free port; with `persist_state` its chain is kept in ``state.json``."""
    wd = workdir or Path(tempfile.mkdtemp(prefix="anvil-"))
    wd.mkdir(parents=True, exist_ok=True)
    if state_file is None and persist_state:
        state_file = wd / "state.json"
    node = AnvilNode(find_anvil(), wd, port or free_port(), state_file, extra_args)
    return node.start(ready_timeout_s)


def rpcauth_line(user: str, password: str, salt: str | None = None) -> str:
    """``rpcauth=<user>:<salt>$<HMAC-SHA256(salt, password)>`` as Bitcoin Core's
    share/rpcauth/rpcauth.py writes it: the node stores no password at all."""
    salt = salt or secrets.token_hex(16)
    digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"rpcauth={user}:{salt}${digest}"


def write_rpcauth_conf(datadir: Path, user: str, password: str) -> Path:
    """The node's config file (mode 0600, datadir 0700) with the RPC credential as
    `rpcauth`: passwords on a command line are readable by every local user in
    /proc/<pid>/cmdline."""
    datadir.mkdir(parents=True, exist_ok=True)
    datadir.chmod(0o700)
    conf = datadir / "litecoin.conf"
    text = f"regtest=1\n[regtest]\n{rpcauth_line(user, password)}\n"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return conf


@dataclass
class LitecoindNode:
    """A running ``litecoind -regtest`` with one wallet and a funded mining address."""

    binary: Path
    datadir: Path
    port: int
    p2p_port: int
    user: str
    password: str
    wallet: str = "streamnotary"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    mining_address: str = ""

    @property
    def url(self) -> str:
        """Node RPC URL (the ledger appends ``/wallet/<name>`` itself when asked to)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def wallet_url(self) -> str:
        return f"{self.url}/wallet/{self.wallet}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rpc(self, method: str, *params: Any, wallet: bool = False) -> Any:
        return _jsonrpc(
            self.wallet_url if wallet else self.url,
            method,
            list(params),
            auth=(self.user, self.password),
            timeout=30.0,
            version="1.0",
        )

    def start(self, ready_timeout_s: float = 60.0) -> LitecoindNode:
        args = [
            str(self.binary),
            "-regtest",
            f"-datadir={self.datadir}",
            "-server=1",
            "-listen=0",
            f"-port={self.p2p_port}",
            f"-rpcport={self.port}",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-fallbackfee=0.0002",
            "-txindex=1",
            "-printtoconsole=0",
            "-dnsseed=0",
            "-discover=0",
            "-upnp=0",
            "-rpcservertimeout=2",
        ]
        write_rpcauth_conf(self.datadir, self.user, self.password)
        log = self.datadir / "regtest" / "debug.log"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _poll(
                lambda: self.rpc("getblockchaininfo") is not None,
                self.proc,
                ready_timeout_s,
                "litecoind",
                log,
            )
        except BaseException:
            _stop_pid(self.proc, 30.0)
            raise
        return self

    def setup_wallet(self, blocks: int = 101) -> None:
        """Create (or load) the wallet and mine `blocks` so coinbase outputs are spendable."""
        wallets = self.rpc("listwallets")
        if self.wallet not in wallets:
            try:
                self.rpc("loadwallet", self.wallet)
            except RuntimeError:
                self.rpc("createwallet", self.wallet)
        # Coinbase goes to the ledger's default operator address (label "streamnotary"), so
        # that address pays for anchors (storage/ledger/bitcoin.py).
        self.mining_address = self.rpc("getnewaddress", "streamnotary", "bech32", wallet=True)
        height = int(self.rpc("getblockcount"))
        if height < blocks:
            self.mine(blocks - height)

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine `blocks` blocks to our own address (confirms pending anchors)."""
        return list(self.rpc("generatetoaddress", blocks, self.mining_address))

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None:
            _stop_pid(self.proc, timeout_s)


def start_litecoind(
    *,
    datadir: Path | None = None,
    port: int | None = None,
    user: str = "streamnotary",
    password: str | None = None,
    blocks: int = 101,
    ready_timeout_s: float = 60.0,
) -> LitecoindNode:
    """Start a regtest litecoind on free ports with a funded wallet (`blocks` mined)."""
    dd = datadir or Path(tempfile.mkdtemp(prefix="litecoind-"))
    dd.mkdir(parents=True, exist_ok=True)
    node = LitecoindNode(
        find_litecoind(),
        dd,
        port or free_port(),
        free_port(),
        user,
        password or secrets.token_hex(16),
    )
    node.start(ready_timeout_s)
    try:
        node.setup_wallet(blocks)
    except BaseException:
        node.stop()
        raise
    return node


def ensure_anvil(home: Path) -> dict[str, str]:
    """A persistent anvil for `streamnotary demo --ledger evm`, started once per home.

    The node keeps its chain in ``<home>/anvil/state.json`` (written when it is stopped by
    ``streamnotary down``), runs on after the demo so that ``streamnotary audit`` can
    verify against it, and is reused by the next demo. ``anvil.json`` records its identity
    (PID + start time + data directory, `streamnotary.processes`) beside port and URL, so
    that only this very process is ever reused or stopped. Returns the ledger settings.
    """
    from streamnotary.processes import ProcessIdentity, write_identity
    from streamnotary.services import private_dir

    workdir = private_dir(home / "anvil")
    info_path = workdir / "anvil.json"
    info = _anvil_info(info_path)
    if info is not None:
        ident, port, url = info
        if ident is not None and ident.matches():
            with contextlib.suppress(requests.RequestException, RuntimeError, ValueError):
                if _jsonrpc(url, "eth_chainId", [], timeout=2.0) is not None:
                    return {"ledger_url": url}
    else:
        port = free_port()
    fresh_chain = not (workdir / "state.json").is_file()
    node = start_anvil(port=port, workdir=workdir, state_file=workdir / "state.json")
    write_identity(info_path, ProcessIdentity.of(node.pid, workdir))
    if fresh_chain:  # the demo knows this chain is new: its old contract record is void
        (home / "evm_contract.json").unlink(missing_ok=True)
    doc = {**json.loads(info_path.read_text()), "port": node.port, "url": node.url}
    info_path.write_text(json.dumps(doc))
    return {"ledger_url": node.url}


def _anvil_info(path: Path) -> tuple[Any, int, str] | None:
    """(identity or None, port, url) from ``anvil.json``, None if there is none."""
    from streamnotary.processes import read_identity

    try:
        doc = json.loads(path.read_text())
        return read_identity(path), int(doc["port"]), str(doc["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_anvil(home: Path, timeout_s: float = 10.0) -> bool:
    """Stop the demo's anvil if it is still the process we started (SIGTERM lets it write
    its state file); a recycled PID is left alone."""
    from streamnotary.processes import read_identity, stop_identified

    ident = read_identity(home / "anvil" / "anvil.json")
    return ident is not None and stop_identified(ident, timeout_s)
