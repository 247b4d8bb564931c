"""Object stores for payloads, checkpoints, receipts and state.

Everything except the cursor is written once: `put_once` uses a conditional write
(S3 ``If-None-Match: *``) so that a retry can never overwrite an object, and on a
conflict it compares the existing bytes: identical is success (the retry found its own
work), different is `ObjectConflict` (something else wrote there; fail loudly).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

if TYPE_CHECKING:
    from streamnotary.config import Settings

PutOutcome = Literal["created", "existing"]


class ObjectStoreError(RuntimeError):
    """Base class of object-store failures."""


class ObjectNotFound(ObjectStoreError):
    """No object under the key."""


class ObjectConflict(ObjectStoreError):
    """A write-once key already holds different bytes."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


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
        """Overwriting put (only for mutable state such as the cursor)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` if absent."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None if absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in lexicographic order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (missing is not an error)."""


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


# -- S3 ----------------------------------------------------------------------------------

ObjectLockMode = Literal["COMPLIANCE", "GOVERNANCE"]
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3ObjectStore(ObjectStore):
    """An S3 bucket (AWS, MinIO, SeaweedFS...) under an optional key prefix.

    * Custom endpoints use path-style addressing (MinIO/SeaweedFS have no per-bucket DNS).
    * botocore retries transient failures (standard mode). A retried conditional put
      whose first attempt did land gets 412 and is then recognised as "existing".
    * With `object_lock_days > 0`, every write-once object carries an Object Lock
      retention (`object_lock_mode`, default COMPLIANCE: nobody, not even the bucket
      owner, can delete or overwrite that version before the date). The bucket must
      have been created with Object Lock (`ensure_bucket(object_lock=True)`).
    * Credentials: explicit keys, else boto3's standard chain (``AWS_ACCESS_KEY_ID`` /
      ``AWS_SECRET_ACCESS_KEY``, profiles, instance roles). They never appear in
      `repr()` or in exception messages.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        object_lock_days: int = 0,
        object_lock_mode: ObjectLockMode = "COMPLIANCE",
        max_attempts: int = 5,
    ) -> None:
        if not bucket:
            raise ValueError("S3 bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self.object_lock_days = int(object_lock_days)
        self.object_lock_mode: ObjectLockMode = object_lock_mode
        self._access_key_id = access_key_id or None
        self._secret_access_key = secret_access_key or None
        self._max_attempts = max_attempts
        self._client: Any = None

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, object_lock_days={self.object_lock_days})"
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                region_name=self.region,
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                retries={"max_attempts": self._max_attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            session = boto3.session.Session(
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                region_name=self.region,
            )
            self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def _fail(self, action: str, key: str, exc: Exception) -> ObjectStoreError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            detail = f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
        else:
            detail = type(exc).__name__
        where = self.uri(key) if key else f"bucket {self.bucket!r}"
        return ObjectStoreError(f"{action} {where} failed: {detail}")

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if not code and status is not None:
            code = str(status)
        return code

    def _retention(self) -> dict[str, Any]:
        if self.object_lock_days <= 0:
            return {}
        until = datetime.now(UTC) + timedelta(days=self.object_lock_days)
        return {"ObjectLockMode": self.object_lock_mode, "ObjectLockRetainUntilDate": until}

    def put_once(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> PutOutcome:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full(key)
        for attempt in range(3):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=data,
                    ContentType=content_type,
                    IfNoneMatch="*",
                    **self._retention(),
                )
                return "created"
            except ClientError as exc:
                if self._code(exc) not in _CONFLICT_CODES | {"412", "409"}:
                    raise self._fail("put", key, exc) from exc
            except BotoCoreError as exc:
                raise self._fail("put", key, exc) from exc
            # Someone (possibly our own earlier attempt) holds the key: compare.
            try:
                existing = self.get(key)
            except ObjectNotFound:
                # 409: a concurrent conditional write had not finished; try again.
                time.sleep(0.2 * (attempt + 1))
                continue
            if existing == data:
                return "existing"
            raise _differs(self.uri(key), existing, data)
        raise ObjectStoreError(f"put {self.uri(key)}: conditional write kept conflicting")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("put", key, exc) from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return bytes(response["Body"].read())
        except ClientError as exc:
            if self._code(exc) in _MISSING_CODES:
                raise ObjectNotFound(f"no object {self.uri(key)}") from exc
            raise self._fail("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get", key, exc) from exc

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if self._code(exc) in _MISSING_CODES:
                return None
            raise self._fail("head", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("head", key, exc) from exc
        return ObjectInfo(key, int(response["ContentLength"]))

    def list(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(base) :]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix or "", exc) from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if self._code(exc) not in _MISSING_CODES:
                raise self._fail("delete", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("delete", key, exc) from exc

    def ensure_bucket(self, object_lock: bool | None = None) -> None:
        """Create the bucket if missing (idempotent).

        `object_lock` (default: whether `object_lock_days > 0`) creates it with Object
        Lock enabled, which also enables versioning; Object Lock cannot be added to an
        existing bucket by this call, so a missing lock is reported as an error.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        lock = self.object_lock_days > 0 if object_lock is None else object_lock
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        if lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if self._code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._fail("create bucket", "", exc) from exc
            self.client.head_bucket(Bucket=self.bucket)  # exists, but is it ours?
        except BotoCoreError as exc:
            raise self._fail("create bucket", "", exc) from exc
        if lock:
            try:
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = config["ObjectLockConfiguration"].get("ObjectLockEnabled")
            except ClientError as exc:
                enabled = None
                if self._code(exc) != "ObjectLockConfigurationNotFoundError":
                    raise self._fail("get object lock of", "", exc) from exc
            if enabled != "Enabled":
                raise ObjectStoreError(
                    f"bucket {self.bucket!r} exists without Object Lock; "
                    "create a new bucket with Object Lock enabled"
                )
            self.client.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
            )


# -- local directory ---------------------------------------------------------------------

_TMP_PREFIX = ".tmp-"


class LocalObjectStore(ObjectStore):
    """A directory with the same write-once semantics, for single-machine use and tests.

    `put_once` writes a temporary file, fsyncs it, then `os.link`s it to the final name:
    the link is atomic and fails if the name exists, so two concurrent writers cannot
    both win and a reader never sees a partial object. Write-once objects are made
    read-only (a guard against accidental edits, not a security boundary: there is no
    Object Lock on a local disk).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def put_once(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> PutOutcome:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            tmp.chmod(0o444)
            os.link(tmp, path)
            return "created"
        except FileExistsError:
            existing = path.read_bytes()
            if existing == data:
                return "existing"
            raise _differs(self.uri(key), existing, data) from None
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the deepest directory the prefix names, then filter by the string prefix.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not base.is_dir():
            return
        keys = []
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


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
