"""Start and stop a real MultiChain 2.3 node: tests, `benchmarks/ledger.py` and the demo.

Like `streamnotary.chain_nodes` (anvil, litecoind): a fresh chain in a private directory,
loopback ports chosen free, ready before the first request, stopped by the PID it was
started with (never by name). The node runs in the foreground of its own process (no
``-daemon``: a daemon forks, and the PID we started would not be the node's).

Binaries, first found wins: ``$MULTICHAIN_BIN_DIR``; ``../shared/multichain-node/bin``
beside the repository (the build provided on the CI machines, see its README); the
directory of ``multichaind`` on ``PATH`` (an official release install). The node needs the
Boost/libevent runtime libraries that ``scripts/install_test_deps.sh`` installs.

A new chain gets ``target-block-time`` written into its ``params.dat`` before the first
start (MultiChain's default is 15 s; tests use the minimum, 2 s, so confirmations come fast).
The RPC credentials are the ones ``multichain-util create`` writes into the chain's
``multichain.conf``: read, never invented.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from streamnotary.chain_nodes import REPO_ROOT, NodeStartError, _poll, _stop_pid, free_port

SHARED_BIN = Path("..") / "shared" / "multichain-node" / "bin"
BINARIES = ("multichaind", "multichain-util")
DEFAULT_BLOCK_TIME_S = 2


def find_multichain_bin_dir() -> Path:
    """The directory holding ``multichaind`` and ``multichain-util`` (see module docstring)."""
    candidates: list[Path] = []
    if os.environ.get("MULTICHAIN_BIN_DIR"):
        candidates.append(Path(os.environ["MULTICHAIN_BIN_DIR"]))
    candidates.append((REPO_ROOT / SHARED_BIN).resolve())
    on_path = shutil.which("multichaind")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / b, os.X_OK) for b in BINARIES):
            return directory
    raise NodeStartError(
        "MultiChain node not found: put multichaind and multichain-util in "
        f"{(REPO_ROOT / SHARED_BIN).resolve()}, set MULTICHAIN_BIN_DIR, or install MultiChain "
        "so that multichaind is on PATH"
    )


def read_conf(path: Path) -> dict[str, str]:
    """``key=value`` lines of a ``multichain.conf`` (comments and blanks ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def create_chain(
    bin_dir: Path, datadir: Path, chain_name: str, block_time_s: int = DEFAULT_BLOCK_TIME_S
) -> Path:
    """``multichain-util create`` a chain under `datadir`; returns the chain directory."""
    datadir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(bin_dir / "multichain-util"), "create", chain_name, f"-datadir={datadir}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    chain_dir = datadir / chain_name
    params = chain_dir / "params.dat"
    if done.returncode != 0 or not params.is_file():
        raise NodeStartError(f"multichain-util create failed: {done.stdout}{done.stderr}")
    text, n = re.subn(
        r"(?m)^target-block-time\s*=\s*\d+",
        f"target-block-time = {int(block_time_s)}",
        params.read_text(),
    )
    if n != 1:
        raise NodeStartError(f"no target-block-time line in {params}")
    params.write_text(text)
    return chain_dir


class MiningControl:
    """Exact mining steps on a node whose mining we pause between steps (tests, benchmarks).

    MultiChain has no "generate N" outside regtest. With mining paused, `mine` resumes it
    for one block at a time and pauses again at once (the next block is at least
    target-block-time away). Measured on 2.3.3: the first block after a resume may come
    from a template built *before* the latest transactions arrived (the miner refreshes
    its template only every so often), so that block can leave them in the mempool; such a
    block is not counted, and mining goes on until the mempool seen at the call is in.
    """

    def rpc(self, method: str, *params: Any) -> Any:
        raise NotImplementedError

    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def pause_mining(self) -> None:
        self.rpc("pause", "mining")

    def resume_mining(self) -> None:
        self.rpc("resume", "mining")

    def wait_for_height(self, height: int, timeout_s: float = 60.0) -> int:
        """Poll until the chain reaches `height` (blocks come every target-block-time)."""
        deadline = time.monotonic() + timeout_s
        while (current := self.height()) < height:
            if time.monotonic() > deadline:
                raise NodeStartError(f"multichaind stuck at height {current} < {height}")
            time.sleep(0.05)
        return current

    def _one_block(self, timeout_s: float) -> int:
        target = self.height() + 1
        self.resume_mining()
        try:
            return self.wait_for_height(target, timeout_s)
        finally:
            self.pause_mining()

    def mine(self, blocks: int = 1, timeout_s: float = 60.0) -> int:
        """`blocks` more blocks, the first of which confirms today's mempool; returns the
        height. Transactions waiting at the call gain at least `blocks` confirmations: each
        block is mined by resuming and pausing the node's miner, and on a loaded machine
        it may mine one more block before the pause takes (read `height()` after)."""
        pending = set(self.rpc("getrawmempool"))
        height = self.height()
        for counted in range(blocks):
            height = self._one_block(timeout_s)
            while counted == 0 and pending & set(self.rpc("getrawmempool")):
                height = self._one_block(timeout_s)
        return height


@dataclass
class MultiChainNode(MiningControl):
    """A running ``multichaind`` we started (``.url``, ``.user``, ``.password``, ``.pid``)."""

    restartable = True  # tests: an external node (MULTICHAIN_RPC_URL) is not

    bin_dir: Path
    datadir: Path
    chain_name: str
    rpc_port: int
    p2p_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def chain_dir(self) -> Path:
        return self.datadir / self.chain_name

    @property
    def credentials(self) -> tuple[str, str]:
        conf = read_conf(self.chain_dir / "multichain.conf")
        return conf["rpcuser"], conf["rpcpassword"]

    @property
    def user(self) -> str:
        return self.credentials[0]

    @property
    def password(self) -> str:
        return self.credentials[1]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def args(self) -> list[str]:
        return [
            str(self.bin_dir / "multichaind"),
            self.chain_name,
            f"-datadir={self.datadir}",
            f"-rpcport={self.rpc_port}",
            f"-port={self.p2p_port}",
            "-bind=127.0.0.1",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-listen=0",
            "-printtoconsole=0",
            "-rpcservertimeout=2",  # idle keep-alive clients would hold shutdown up 30 s
        ]

    def start(self, ready_timeout_s: float = 60.0, *, new_session: bool = False) -> MultiChainNode:
        """Start the node and wait until it is `ready`."""
        self._session = requests.Session()
        log = self.datadir / "multichaind.out"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=new_session,
            )
        try:
            _poll(
                self.ready,
                self.proc,
                ready_timeout_s,
                "multichaind",
                self.chain_dir / "debug.log",
            )
        except BaseException:
            _stop_pid(self.proc, 30.0)
            raise
        return self

    def ready(self) -> bool:
        """Answers RPC and its wallet holds an output to spend: before the first block's
        coinbase arrives, ``create`` fails with -704 "No unspent output with create
        permission" (measured on 2.3.3 at height 1)."""
        return bool(self.rpc("listunspent", 0))

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """One JSON-RPC call; raises RuntimeError with the node's error object."""
        body = {
            "jsonrpc": "1.0",
            "id": "node",
            "method": method,
            "params": list(params),
            "chain_name": self.chain_name,
        }
        # `Connection: close`: the node drops idle keep-alive connections after
        # -rpcservertimeout (2 s), and a call that reuses one just as it is dropped fails
        # with RemoteDisconnected (seen once in CI on ``getinfo``).
        response = self._session.post(
            self.url,
            json=body,
            auth=self.credentials,
            timeout=timeout,
            headers={"Connection": "close"},
        )
        doc = response.json()
        if doc.get("error"):
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the process we started: RPC ``stop``, then wait for *its* PID to exit.

        Measured on 2.3.3: ``stop`` shuts down in ~1.3 s while SIGTERM takes ~30 s (a
        thread waits out a timeout), so SIGTERM/SIGKILL by PID is only the fallback.
        """
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(requests.RequestException, RuntimeError, ValueError):
                self.resume_mining()  # a paused miner also holds shutdown up for ~30 s
                self.rpc("stop", timeout=5.0)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_pid(self.proc, 10.0)
        self._session.close()

    def restart(self, ready_timeout_s: float = 60.0) -> MultiChainNode:
        """Stop and start again on the same ports and data directory."""
        self.stop()
        return self.start(ready_timeout_s)

    def info(self) -> dict[str, Any]:
        """What a later process needs to find (and stop) this node: `<datadir>/node.json`."""
        return {
            "pid": self.pid,
            "chain_name": self.chain_name,
            "rpc_port": self.rpc_port,
            "p2p_port": self.p2p_port,
            "url": self.url,
            "datadir": str(self.datadir),
        }


def start_multichain(
    *,
    datadir: Path,
    chain_name: str = "sntest",
    block_time_s: int = DEFAULT_BLOCK_TIME_S,
    rpc_port: int | None = None,
    p2p_port: int | None = None,
    ready_timeout_s: float = 60.0,
    new_session: bool = False,
) -> MultiChainNode:
    """Start a node on the chain in `datadir` (created on first use) on free loopback ports."""
    bin_dir = find_multichain_bin_dir()
    if not (datadir / chain_name / "params.dat").is_file():
        create_chain(bin_dir, datadir, chain_name, block_time_s)
    node = MultiChainNode(
        bin_dir, datadir, chain_name, rpc_port or free_port(), p2p_port or free_port()
    )
    return node.start(ready_timeout_s, new_session=new_session)


# -- the demo's node (`streamnotary demo --ledger multichain`, `streamnotary down`) -----------

DEMO_CHAIN = "streamnotary"
DEMO_STREAM = "streamnotary"


def _recorded(info_path: Path) -> tuple[Any, dict[str, Any]] | None:
    """(identity, record) of ``node.json``: the PID + start time + data directory of
    `streamnotary.processes` beside chain name and ports; None if there is no record."""
    from streamnotary.processes import read_identity

    try:
        doc = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    ident = read_identity(info_path)
    return (ident, doc) if ident is not None and isinstance(doc, dict) else None


def _node_of(doc: dict[str, Any], datadir: Path) -> MultiChainNode:
    return MultiChainNode(
        find_multichain_bin_dir(),
        datadir,
        str(doc["chain_name"]),
        int(doc["rpc_port"]),
        int(doc["p2p_port"]),
    )


def ensure_multichain(home: Path) -> dict[str, Any]:
    """A persistent MultiChain node for the demo, started once per home.

    The chain lives in ``<home>/multichain/streamnotary`` (2 s blocks, so that the demo's
    anchors are final by the time `audit` runs); the node keeps running after the demo so
    that ``streamnotary audit`` can verify against it, and `streamnotary down` stops it.
    ``node.json`` records its identity (PID + start time + data directory,
    `streamnotary.processes`), so only this very process is ever reused or stopped.
    Returns the ledger settings; the RPC password stays in the chain's own
    ``multichain.conf`` (setting ``ledger_multichain_conf``), not in services.json.
    """
    from streamnotary.processes import ProcessIdentity, write_identity
    from streamnotary.services import private_dir

    workdir = private_dir(home / "multichain")
    info_path = workdir / "node.json"
    recorded = _recorded(info_path)
    ports: dict[str, Any] = {}
    if recorded is not None:
        ident, doc = recorded
        ports = {"rpc_port": doc.get("rpc_port"), "p2p_port": doc.get("p2p_port")}
        if ident.matches():
            node = _node_of(doc, workdir)
            with contextlib.suppress(requests.RequestException, RuntimeError, ValueError):
                if node.ready():
                    return _demo_settings(node)
    node = start_multichain(datadir=workdir, chain_name=DEMO_CHAIN, new_session=True, **ports)
    write_identity(info_path, ProcessIdentity.of(node.pid, workdir))
    doc = {**json.loads(info_path.read_text()), **node.info()}
    info_path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return _demo_settings(node)


def _demo_settings(node: MultiChainNode) -> dict[str, Any]:
    return {
        "ledger_url": node.url,
        "ledger_chain_name": node.chain_name,
        "ledger_stream": DEMO_STREAM,
        "ledger_multichain_conf": str(node.chain_dir / "multichain.conf"),
        "ledger_confirmations": 1,
    }


def stop_demo_multichain(home: Path, timeout_s: float = 30.0) -> bool:
    """Stop the demo's node if it is still the process we started: RPC ``stop`` (1-2 s;
    SIGTERM takes ~30 s on 2.3.3), then wait for that PID; SIGTERM/SIGKILL by the
    recorded identity only if it does not exit. A recycled PID is left alone."""
    from streamnotary.processes import stop_identified

    workdir = home / "multichain"
    recorded = _recorded(workdir / "node.json")
    if recorded is None or not recorded[0].matches():
        return False
    ident, doc = recorded
    with contextlib.suppress(
        requests.RequestException, RuntimeError, ValueError, KeyError, OSError, NodeStartError
    ):
        _node_of(doc, workdir).rpc("stop", timeout=5.0)
    deadline = time.monotonic() + timeout_s
    while ident.matches() and time.monotonic() < deadline:
        time.sleep(0.1)
    if ident.matches():
        stop_identified(ident, 10.0)
    return True
