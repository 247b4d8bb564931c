"""Startup probe: does the object store really refuse overwrites?

Everything the pipeline proves rests on write-once objects, and the lease and the cursor
rest on conditional writes. An S3-compatible server that silently ignores
``If-None-Match: *`` (older MinIO and Ceph releases, some gateways) turns every write-once
put into an overwrite, with no error anywhere. So before a run writes anything it asks the
server directly (once per process and bucket): create a probe object, try to overwrite it
with ``If-None-Match: *`` and with a stale ``If-Match``; both must be refused with 412 and
the first bytes must survive. A server that fails is refused with `WriteOnceNotEnforced`,
unless the bucket has Object Lock and `object_lock_days > 0`: then an overwrite only adds
a newer version, the locked first version stays, and receipts pin that version id.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

from storage.localstore import LocalObjectStore
from storage.s3store import S3ObjectStore
from storage.store_base import ObjectStore, ObjectStoreError

PROBE_PREFIX = "probe/"


class WriteOnceNotEnforced(ObjectStoreError):
    """The store accepted an overwrite that a conditional write must refuse."""


_verified: dict[tuple[str, str, str, bool], str] = {}
_lock = threading.Lock()


def check_write_once(store: ObjectStore) -> str:
    """How write-once is enforced ("link", "if-none-match", "object-lock"), or raise."""
    if isinstance(store, LocalObjectStore):
        return "link"  # os.link fails on an existing name: enforced by the kernel
    if not isinstance(store, S3ObjectStore):
        raise WriteOnceNotEnforced(f"cannot verify write-once semantics of {store!r}")
    ident = (store.endpoint_url or "aws", store.bucket, store.prefix, store.object_lock_days > 0)
    with _lock:
        if ident in _verified:
            return _verified[ident]
    failure = _probe(store)
    if failure is None:
        how = "if-none-match"
    elif store.object_lock_days > 0 and store.object_lock_enabled():
        how = "object-lock"
    else:
        where = store.endpoint_url or "AWS S3"
        raise WriteOnceNotEnforced(
            f"the S3 server at {where} (bucket {store.bucket!r}) {failure}: it does not honour "
            "conditional writes, so write-once objects, the topic lease and the cursor could be "
            "silently overwritten. Refusing to run. Use a server that supports If-None-Match "
            "and If-Match on PUT (AWS S3, MinIO, SeaweedFS), or a bucket created with Object "
            "Lock together with object_lock_days > 0."
        )
    with _lock:
        _verified[ident] = how
    return how


def _probe(store: S3ObjectStore) -> str | None:
    """None if the server refused both overwrites; else what it did wrong."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = store.client
    key = store._full(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        first = client.put_object(Bucket=store.bucket, Key=key, Body=b"first", IfNoneMatch="*")
        outcome = None
        for label, condition in (
            ("accepted an overwrite with If-None-Match: *", {"IfNoneMatch": "*"}),
            ("accepted a write with a stale If-Match", {"IfMatch": '"00000000000000000000"'}),
        ):
            try:
                client.put_object(Bucket=store.bucket, Key=key, Body=b"second", **condition)
                outcome = outcome or label
            except ClientError as exc:
                if store._code(exc) not in {"PreconditionFailed", "412"}:
                    raise
        body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        if outcome is None and body != b"first":
            outcome = "changed the object despite refusing the write"
        _remove_probe(store, key, first.get("VersionId"))
        return outcome
    except (ClientError, BotoCoreError) as exc:
        raise ObjectStoreError(
            f"write-once probe on bucket {store.bucket!r} failed: {type(exc).__name__}"
        ) from exc


def _remove_probe(store: S3ObjectStore, key: str, version: str | None) -> None:
    """Delete the probe object and, on a versioned bucket, its versions.

    A bucket whose default Object Lock retention covers the probe keeps it (AccessDenied
    on the version): harmless, it lies under ``probe/`` where nothing reads.
    """
    from botocore.exceptions import ClientError

    client = store.client
    if version and version != "null":
        with contextlib.suppress(ClientError):
            _delete_versions(store, key)
    else:
        client.delete_object(Bucket=store.bucket, Key=key)


def _delete_versions(store: S3ObjectStore, key: str) -> None:
    client = store.client
    listing = client.list_object_versions(Bucket=store.bucket, Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        client.delete_object(Bucket=store.bucket, Key=key, VersionId=v["VersionId"])
