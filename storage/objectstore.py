"""Object stores for payloads, checkpoints, receipts and state: the public entry point.

The interface, its errors and its guarantees (write-once puts, compare-and-swap state)
are documented in storage/store_base.py; the backends are `S3ObjectStore`
(storage/s3store.py) and `LocalObjectStore` (storage/localstore.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from storage.localstore import LocalObjectStore
from storage.s3store import ObjectLockMode, S3ObjectStore
from storage.store_base import (
    ObjectChanged,
    ObjectConflict,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PutOutcome,
    Tagged,
)

if TYPE_CHECKING:
    from streamnotary.config import Settings
    from tasks.pack import PayloadLocation

__all__ = [
    "LocalObjectStore",
    "ObjectChanged",
    "ObjectConflict",
    "ObjectInfo",
    "ObjectLockMode",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "PutOutcome",
    "S3ObjectStore",
    "Tagged",
    "open_store",
    "read_payload",
]


def read_payload(
    store: ObjectStore, where: PayloadLocation, version_id: str | None = None
) -> bytes:
    """A window revision's payload bytes: its own object, or a ranged GET of its run's pack."""
    if where.offset is None or where.length is None:
        return store.get(where.key, version_id)
    return store.get_range(where.key, where.offset, where.length, version_id)


def open_store(settings: Settings) -> ObjectStore:
    """The store named by ``settings.store_uri`` (``s3://bucket[/prefix]`` or ``file:///path``)."""
    uri = settings.store_uri
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store_uri {uri!r} names no bucket")
        return S3ObjectStore(
            parsed.netloc,
            parsed.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            object_lock_days=settings.object_lock_days,
            object_lock_mode=settings.object_lock_mode,
        )
    if parsed.scheme == "file":
        return LocalObjectStore(Path(url2pathname(parsed.path)))
    if parsed.scheme == "" and uri:
        return LocalObjectStore(Path(uri))
    raise ValueError(f"unsupported store_uri {uri!r}: use s3://bucket[/prefix] or file:///path")
