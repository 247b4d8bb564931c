"""An S3 bucket (AWS, MinIO, SeaweedFS...) as the object store.

Write-once objects use ``If-None-Match: *`` and state uses ``If-Match: <etag>``
(RFC 9110 section 13.1; S3 conditional writes). Whether a server honours them is not
taken on faith: storage/writeonce.py probes it before a run writes anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from storage.store_base import (
    ObjectChanged,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreUnavailable,
    PutOutcome,
    Tagged,
    _check_key,
    _differs,
)

ObjectLockMode = Literal["COMPLIANCE", "GOVERNANCE"]
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# answers that mean "try again later" (AWS error codes; any 5xx status counts too)
_UNAVAILABLE_CODES = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"}


MAX_POOL_CONNECTIONS = 64
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _shared_client(
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    max_attempts: int,
) -> Any:
    """One boto3 S3 client per process and (endpoint, region, credentials, retries)."""
    cache_key = (endpoint_url, region, access_key_id, secret_access_key, max_attempts)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                region_name=region,
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                max_pool_connections=MAX_POOL_CONNECTIONS,
            )
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
            )
            client = _clients[cache_key] = session.client(
                "s3", endpoint_url=endpoint_url, config=config
            )
        return client


def _unavailable(exc: Exception) -> bool:
    """Connection, DNS and timeout failures, 5xx and throttling answers: transient."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):  # BotoCoreError: no answer at all
        return True
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = str(response.get("Error", {}).get("Code", ""))
    return int(status) >= 500 or code in _UNAVAILABLE_CODES


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
        self._versioning: bool | None = None

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, object_lock_days={self.object_lock_days})"
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use, shared by stores of the same account).

        Building a client loads botocore's service model (~0.1-0.2 s); a run opens the
        store in every step, so one client per process and account is reused (boto3
        clients are thread-safe). Its pool allows `MAX_POOL_CONNECTIONS` parallel writes.
        """
        if self._client is None:
            self._client = _shared_client(
                self.endpoint_url,
                self.region,
                self._access_key_id,
                self._secret_access_key,
                self._max_attempts,
            )
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
        kind = ObjectStoreUnavailable if _unavailable(exc) else ObjectStoreError
        return kind(f"{action} {where} failed: {detail}")

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
        """Unconditional put: tests and tools only (pipeline state goes through `put_if`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("put", key, exc) from exc

    def get(self, key: str, version_id: str | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"VersionId": version_id} if version_id else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key), **extra)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if self._code(exc) in _MISSING_CODES | {"NoSuchVersion"}:
                what = f"version {version_id} of " if version_id else ""
                raise ObjectNotFound(f"no object {what}{self.uri(key)}") from exc
            raise self._fail("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get", key, exc) from exc

    def get_range(self, key: str, offset: int, length: int, version_id: str | None = None) -> bytes:
        """A ranged GET (RFC 9110 ``Range: bytes=a-b``): one payload of a run's pack."""
        from botocore.exceptions import BotoCoreError, ClientError

        if offset < 0 or length < 0:
            raise ObjectStoreError(f"bad byte range {offset}+{length} of {self.uri(key)}")
        if length == 0:
            return b""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            response = self.client.get_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Range=f"bytes={offset}-{offset + length - 1}",
                **extra,
            )
            return bytes(response["Body"].read())
        except ClientError as exc:
            code = self._code(exc)
            if code in _MISSING_CODES | {"NoSuchVersion"}:
                what = f"version {version_id} of " if version_id else ""
                raise ObjectNotFound(f"no object {what}{self.uri(key)}") from exc
            if code in {"InvalidRange", "416"}:
                return b""  # the range starts past the end: the object is too short
            raise self._fail("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get", key, exc) from exc

    def get_tagged(self, key: str) -> Tagged:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return Tagged(bytes(response["Body"].read()), str(response["ETag"]))
        except ClientError as exc:
            if self._code(exc) in _MISSING_CODES:
                raise ObjectNotFound(f"no object {self.uri(key)}") from exc
            raise self._fail("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get", key, exc) from exc

    def put_if(
        self,
        key: str,
        data: bytes,
        expected_etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Compare-and-swap by ``If-Match`` / ``If-None-Match: *``.

        botocore may retry a request whose first attempt landed; the retry then fails
        its precondition. So a 412 is re-checked: if the object now holds exactly our
        bytes, the write succeeded.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=data,
                ContentType=content_type,
                **condition,
            )
            return str(response["ETag"])
        except ClientError as exc:
            if self._code(exc) not in _CONFLICT_CODES | {"412", "409"}:
                raise self._fail("put", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("put", key, exc) from exc
        try:
            current = self.get_tagged(key)
        except ObjectNotFound:
            current = None
        if current is not None and current.data == data:
            return current.etag
        raise ObjectChanged(
            f"{self.uri(key)} changed since it was read "
            f"(expected {expected_etag or 'absent'}, found "
            f"{current.etag if current else 'absent'})"
        )

    def delete_if(self, key: str, expected_etag: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(
                Bucket=self.bucket, Key=self._full(key), IfMatch=expected_etag
            )
        except ClientError as exc:
            code = self._code(exc)
            if code in _MISSING_CODES:
                return
            if code in _CONFLICT_CODES | {"412"}:
                raise ObjectChanged(
                    f"{self.uri(key)} changed since it was read; not deleted"
                ) from exc
            raise self._fail("delete", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("delete", key, exc) from exc

    def versioning_enabled(self) -> bool:
        """Whether the bucket keeps object versions (cached: it cannot be switched off)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._versioning is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except (ClientError, BotoCoreError) as exc:
                raise self._fail("get versioning of", "", exc) from exc
            self._versioning = status == "Enabled"
        return self._versioning

    def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if self._code(exc) in {"ObjectLockConfigurationNotFoundError", "404", "NotFound"}:
                return False
            raise self._fail("get object lock of", "", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get object lock of", "", exc) from exc
        return config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def first_version(self, key: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.versioning_enabled():
            return None
        full = self._full(key)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=full
            )
            versions = [
                v
                for page in pages
                for v in page.get("Versions", [])
                if v["Key"] == full and v.get("VersionId") not in (None, "null")
            ]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list versions of", key, exc) from exc
        if not versions:
            return None
        return str(min(versions, key=lambda v: v["LastModified"])["VersionId"])

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
        version = response.get("VersionId")
        return ObjectInfo(
            key, int(response["ContentLength"]), None if version in (None, "null") else version
        )

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
