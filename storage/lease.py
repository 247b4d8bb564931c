"""One writer per topic: a lease object in the bucket, taken by conditional create.

Why: the deployment's Prefect concurrency limit covers only that deployment; `backfill`
runs anchor-windows as a subflow, the CLI runs flows without a server, and two machines
may share a bucket. Two writers planning from the same cursor would anchor conflicting
plans or roll the cursor back. The bucket is the one thing all of them share, so the
mutual exclusion lives there (the pattern of Chubby / etcd leases, Burrows 2006):

* `acquire` creates ``state/<topic>/lease.json`` with ``If-None-Match: *``; exactly one
  of several concurrent creators wins (storage/store_base.py).
* The lease carries its holder (host, pid, run id) and an expiry. A holder renews it
  (``If-Match`` on the tag it last wrote) every third of its lifetime from a background
  thread, so long runs keep it; `check` raises `LeaseLost` before a run's critical writes
  if renewal failed or the lease ran out.
* An expired lease, or one whose holder is a process on this host that no longer exists
  (a killed run), is taken over by compare-and-swap on the tag that was read, so two
  runs that both saw it expire cannot both take it.
* `release` deletes it only if it is still ours (``If-Match``).

Clocks: expiry compares the holder's written ``expires_at`` with the reader's clock, so
hosts sharing a bucket need clocks within a small fraction of `lease_seconds` (NTP).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from storage import layout
from storage.store_base import ObjectChanged, ObjectNotFound, ObjectStore, ObjectStoreError
from tasks.canonical import canonical_json

LEASE_SCHEMA = "streamnotary.lease/1"
_TS = "%Y-%m-%dT%H:%M:%SZ"


class LeaseError(RuntimeError):
    """Base class of lease failures."""


class LeaseHeld(LeaseError):
    """Another run holds the topic's lease; this run must not write."""


class LeaseLost(LeaseError):
    """This run's lease expired or was taken over; it must stop writing."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: enough for an operator to find the run and its process."""

    host: str
    pid: int
    run_id: str

    @classmethod
    def this_process(cls, run_id: str | None = None) -> Holder:
        return cls(socket.gethostname(), os.getpid(), run_id or uuid.uuid4().hex)

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host})"

    def is_dead_here(self) -> bool:
        """True only if the holder is a process of *this* host that no longer exists."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            return False
        return False


@dataclass(frozen=True, slots=True)
class LeaseDoc:
    """The lease object (`streamnotary.lease/1`, docs/formats.md)."""

    topic: str
    holder: Holder
    purpose: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def to_bytes(self) -> bytes:
        doc = {
            "schema": LEASE_SCHEMA,
            "topic": self.topic,
            "holder": {
                "host": self.holder.host,
                "pid": self.holder.pid,
                "run_id": self.holder.run_id,
            },
            "purpose": self.purpose,
            "acquired_at": self.acquired_at.strftime(_TS),
            "renewed_at": self.renewed_at.strftime(_TS),
            "expires_at": self.expires_at.strftime(_TS),
        }
        return canonical_json(doc)

    @classmethod
    def parse(cls, data: bytes) -> LeaseDoc:
        """Parse a stored lease; `LeaseError` for anything that is not one."""
        try:
            doc: Any = json.loads(data)
            if doc.get("schema") != LEASE_SCHEMA:
                raise ValueError(f"schema {doc.get('schema')!r}")
            h = doc["holder"]
            return cls(
                topic=str(doc["topic"]),
                holder=Holder(str(h["host"]), int(h["pid"]), str(h["run_id"])),
                purpose=str(doc["purpose"]),
                acquired_at=_parse(doc["acquired_at"]),
                renewed_at=_parse(doc["renewed_at"]),
                expires_at=_parse(doc["expires_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LeaseError(f"the lease object is not a {LEASE_SCHEMA} document: {exc}") from exc

    def describe(self) -> str:
        return (
            f"{self.holder.describe()}, {self.purpose}, since {self.acquired_at.strftime(_TS)}, "
            f"lease valid until {self.expires_at.strftime(_TS)}"
        )


def _parse(s: str) -> datetime:
    return datetime.strptime(s, _TS).replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# The leases this process holds, by topic: steps that write state check them (`require`).
_held: dict[str, TopicLease] = {}
_held_lock = threading.Lock()


def require(topic: str) -> None:
    """Raise `LeaseLost` unless this process holds the topic's lease, unexpired.

    Called by the steps that change a topic's state (plan, cursor), so that no code path
    (flow, CLI, backfill, repair) can write state without going through the lease.
    """
    with _held_lock:
        lease = _held.get(topic)
    if lease is None:
        raise LeaseLost(f"no lease held on topic {topic!r}: state writes go through the lease")
    lease.check()


def read_lease(store: ObjectStore, topic: str) -> LeaseDoc | None:
    """The topic's current lease, if any (for `streamnotary repair` and status output)."""
    try:
        return LeaseDoc.parse(store.get(layout.lease_key(topic)))
    except ObjectNotFound:
        return None


class TopicLease:
    """The lease of one topic for one run; use as a context manager around the run."""

    def __init__(
        self,
        store: ObjectStore,
        topic: str,
        *,
        seconds: int = 300,
        purpose: str = "anchor-windows",
        holder: Holder | None = None,
    ) -> None:
        if seconds < 3:
            raise ValueError("lease_seconds must be at least 3")
        self.store = store
        self.topic = topic
        self.seconds = seconds
        self.purpose = purpose
        self.holder = holder or Holder.this_process()
        self._key = layout.lease_key(topic)
        self._etag: str | None = None
        self._doc: LeaseDoc | None = None
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _fresh(self, acquired_at: datetime | None = None) -> LeaseDoc:
        now = _now()
        return LeaseDoc(
            self.topic,
            self.holder,
            self.purpose,
            acquired_at or now,
            now,
            now + timedelta(seconds=self.seconds),
        )

    def acquire(self) -> None:
        """Take the lease, or raise `LeaseHeld` naming the run that holds it."""
        doc = self._fresh()
        try:
            self._etag = self.store.put_if(self._key, doc.to_bytes(), None, "application/json")
            self._doc = doc
            return
        except ObjectChanged:
            pass
        try:
            current = self.store.get_tagged(self._key)
        except ObjectNotFound:  # released between our create and our read: try once more
            self._etag = self.store.put_if(self._key, doc.to_bytes(), None, "application/json")
            self._doc = doc
            return
        held = LeaseDoc.parse(current.data)
        if held.expires_at > _now() and not held.holder.is_dead_here():
            raise LeaseHeld(
                f"topic {self.topic!r} is being written by {held.describe()}; "
                "this run exits without writing. If that run is gone, its lease expires by "
                "itself; `streamnotary repair` shows the lease and any unfinished plan."
            )
        try:  # expired, or its process is gone: take over from exactly that version
            self._etag = self.store.put_if(
                self._key, doc.to_bytes(), current.etag, "application/json"
            )
            self._doc = doc
        except ObjectChanged as exc:
            winner = read_lease(self.store, self.topic)
            who = winner.describe() if winner else "another run"
            raise LeaseHeld(
                f"topic {self.topic!r}: {who} took over the expired lease first"
            ) from exc

    def renew(self) -> None:
        """Extend the lease by compare-and-swap; `LeaseLost` if it is no longer ours."""
        with self._lock:
            if self._doc is None or self._etag is None:
                raise LeaseLost(f"lease of {self.topic!r} is not held")
            doc = self._fresh(self._doc.acquired_at)
            try:
                self._etag = self.store.put_if(
                    self._key, doc.to_bytes(), self._etag, "application/json"
                )
                self._doc = doc
            except ObjectChanged as exc:
                self._lost = "another run replaced it"
                raise LeaseLost(f"lease of {self.topic!r} was taken over") from exc

    def check(self) -> None:
        """Raise `LeaseLost` unless the lease is still ours and unexpired (before writes)."""
        if self._lost is not None:
            raise LeaseLost(f"lease of topic {self.topic!r} lost: {self._lost}; stopping")
        if self._doc is None or self._doc.expires_at <= _now():
            raise LeaseLost(f"lease of topic {self.topic!r} expired before this write; stopping")

    def release(self) -> None:
        """Delete the lease if it is still ours (never someone else's)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._lock:
            if self._etag is not None:
                # ObjectChanged: taken over after expiry, so not ours to delete
                with contextlib.suppress(ObjectChanged):
                    self.store.delete_if(self._key, self._etag)
            self._etag = self._doc = None

    def _renew_loop(self) -> None:
        interval = self.seconds / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost:
                return
            except (OSError, ObjectStoreError) as exc:  # unreachable: retry next interval
                self._lost_reason_if_expired(exc)

    def _lost_reason_if_expired(self, exc: BaseException) -> None:
        if self._doc is not None and self._doc.expires_at <= _now():
            self._lost = f"could not renew before expiry ({type(exc).__name__})"

    def __enter__(self) -> TopicLease:
        self.acquire()
        with _held_lock:
            _held[self.topic] = self
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"lease-{self.topic}", daemon=True
        )
        self._renewer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _held_lock:
            if _held.get(self.topic) is self:
                del _held[self.topic]
        self.release()
