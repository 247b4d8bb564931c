"""The object store interface and its errors (backends: s3store.py, localstore.py).

Everything except the state under ``state/<topic>/`` is written once: `put_once` uses a
conditional write (S3 ``If-None-Match: *``) so that a retry can never overwrite an
object, and on a conflict it compares the existing bytes: identical is success (the
retry found its own work), different is `ObjectConflict` (something else wrote there;
fail loudly).

The few mutable objects (the cursor, the lease) are written with compare-and-swap:
`get_tagged` returns the bytes with an entity tag, and `put_if` replaces them only if the
tag is still current (S3 ``If-Match``, RFC 9110 section 13.1.1), or creates the object
only if it is absent (``If-None-Match: *``, section 13.1.2). A writer that lost a race
gets `ObjectChanged` instead of silently rolling the state back.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Literal

PutOutcome = Literal["created", "existing"]
# Concurrent write-once puts of one batch: object stores serve independent keys in parallel
# and a run's objects are small, so the round trip dominates.
WRITE_CONCURRENCY = 32


class ObjectStoreError(RuntimeError):
    """Base class of object-store failures."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store could not be reached or answered 5xx/throttling: a retry may succeed."""


class ObjectNotFound(ObjectStoreError):
    """No object under the key."""


class ObjectConflict(ObjectStoreError):
    """A write-once key already holds different bytes."""


class ObjectChanged(ObjectStoreError):
    """A compare-and-swap write lost: the object is not (or no longer) what was read."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    version_id: str | None = None  # S3 version id where the bucket keeps versions


@dataclass(frozen=True, slots=True)
class Tagged:
    """An object's bytes with the entity tag a compare-and-swap write must present."""

    data: bytes
    etag: str


class ObjectStore(ABC):
    """Minimal store interface the pipeline and the auditor use."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI naming the object (``s3://bucket/prefix/key`` or ``file:///...``)."""

    @abstractmethod
    def put_once(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> PutOutcome:
        """Write-once put; see module docstring."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Unconditional overwriting put (tests and tools only; state uses `put_if`)."""

    @abstractmethod
    def get_tagged(self, key: str) -> Tagged:
        """The object's bytes and entity tag; `ObjectNotFound` if absent."""

    @abstractmethod
    def put_if(
        self,
        key: str,
        data: bytes,
        expected_etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Compare-and-swap put; returns the new entity tag.

        `expected_etag` None: create only if absent. Otherwise: replace only if the
        object's current tag equals it. `ObjectChanged` when the condition fails.
        """

    @abstractmethod
    def delete_if(self, key: str, expected_etag: str) -> None:
        """Delete only if the object's current tag is `expected_etag` (else `ObjectChanged`)."""

    @abstractmethod
    def get(self, key: str, version_id: str | None = None) -> bytes:
        """The object's bytes (a given version, where the store keeps versions)."""

    def get_range(self, key: str, offset: int, length: int, version_id: str | None = None) -> bytes:
        """`length` bytes of the object from byte `offset` (a payload inside a run's pack).

        Fewer bytes come back when the object is shorter: the caller's SHA-256 check then
        fails by name. Stores override this with a ranged read; this default reads it all.
        """
        if offset < 0 or length < 0:
            raise ObjectStoreError(f"bad byte range {offset}+{length} of {self.uri(key)}")
        return self.get(key, version_id)[offset : offset + length]

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size (and version id) of the object, or None if absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in lexicographic order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (missing is not an error)."""

    def first_version(self, key: str) -> str | None:
        """The version id of the oldest stored version of `key` (None: no versions kept).

        For a write-once key the oldest version is the one the pipeline wrote: a later
        overwrite on a store that ignored If-None-Match can only add newer versions.
        """
        return None


def put_all_once(
    store: ObjectStore,
    objects: Sequence[tuple[str, bytes]],
    content_type: Callable[[str], str],
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = WRITE_CONCURRENCY,
) -> int:
    """`put_once` of every `(key, bytes)`, `concurrency` at a time; returns how many were new.

    Returns only when every put has succeeded (or raises the first failure), so a caller
    can publish what commits to them next. The first put runs alone so that lazily created
    clients are built before the threads start. `progress(done, total)` after each put.
    """
    if not objects:
        return 0
    total = len(objects)
    first, *rest = objects
    created = store.put_once(first[0], first[1], content_type(first[0])) == "created"
    if progress is not None:
        progress(1, total)
    if not rest:
        return int(created)
    with ThreadPoolExecutor(max_workers=min(concurrency, len(rest))) as pool:
        futures = [pool.submit(store.put_once, key, data, content_type(key)) for key, data in rest]
        for done, future in enumerate(as_completed(futures), 2):
            created += future.result() == "created"
            if progress is not None:
                progress(done, total)
    return int(created)


def _check_key(key: str) -> str:
    """Object keys are relative, '/'-separated, without empty or dot segments.

    storage/layout.py only produces such keys; refusing others keeps the local store
    inside its root and makes S3 and local keys mean the same thing.
    """
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


def _differs(uri: str, existing: bytes, data: bytes) -> ObjectConflict:
    return ObjectConflict(
        f"{uri} already exists with different content "
        f"(existing {len(existing)} bytes sha256={hashlib.sha256(existing).hexdigest()[:16]}…, "
        f"new {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()[:16]}…)"
    )
