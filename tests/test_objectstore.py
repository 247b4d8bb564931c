"""Object stores against a real S3 server (SeaweedFS) and a real directory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from storage.objectstore import (
    LocalObjectStore,
    ObjectChanged,
    ObjectConflict,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    Tagged,
    open_store,
)
from streamnotary.config import Settings
from tests.fixtures.services import S3TestServer

KEY = "checkpoints/dwd/00044/20240101T000000Z_86400s/r0000.json"


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
    return LocalObjectStore(tmp_path / "objects")


def test_put_once_creates_then_finds_identical(store: ObjectStore) -> None:
    assert store.put_once(KEY, b'{"a":1}', "application/json") == "created"
    assert store.put_once(KEY, b'{"a":1}', "application/json") == "existing"
    assert store.get(KEY) == b'{"a":1}'
    info = store.head(KEY)
    assert info is not None and info.size == 7


def test_put_once_refuses_different_bytes_and_keeps_the_original(store: ObjectStore) -> None:
    store.put_once(KEY, b"original")
    with pytest.raises(ObjectConflict) as err:
        store.put_once(KEY, b"tampered")
    assert KEY in str(err.value)
    assert store.get(KEY) == b"original"


def test_missing_objects(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("state/none/cursor.json")
    assert store.head("state/none/cursor.json") is None
    store.delete("state/none/cursor.json")  # missing is fine


def test_put_overwrites_and_delete_removes(store: ObjectStore) -> None:
    key = "state/dwd/cursor.json"
    store.put(key, b"v1")
    store.put(key, b"v2")
    assert store.get(key) == b"v2"
    store.delete(key)
    assert store.head(key) is None


def test_list_is_lexicographic_and_prefix_bound(store: ObjectStore) -> None:
    keys = [
        "receipts/dwd/00044/b/r0001.json",
        "receipts/dwd/00044/a/r0000.json",
        "receipts/dwd/00433/a/r0000.json",
        "receipts/dwdx/00044/a/r0000.json",
        "payloads/dwd/00044/a/r0000.parquet",
    ]
    for k in keys:
        store.put_once(k, k.encode())
    for prefix in ("receipts/dwd/", "receipts/dwd"):
        assert list(store.list(prefix)) == sorted(k for k in keys if k.startswith(prefix))
    assert list(store.list("receipts/dwd/00044/")) == sorted(keys[:2])
    assert list(store.list("nothing/")) == []


def test_concurrent_writers_cannot_both_win(store: ObjectStore) -> None:
    key = "batches/dwd/race.json"
    results: dict[int, str] = {}
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.put_once(key, f"writer-{i}".encode())
        except ObjectConflict:
            results[i] = "conflict"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results.values()).count("created") == 1
    assert sorted(results.values()).count("conflict") == 3
    winner = next(i for i, r in results.items() if r == "created")
    assert store.get(key) == f"writer-{winner}".encode()


def test_invalid_keys_are_refused(store: ObjectStore) -> None:
    for bad in ("", "/abs", "a//b", "a/../b"):
        with pytest.raises(ValueError):
            store.put_once(bad, b"x")


def test_s3_prefix_and_uri(s3_store_factory: Callable[..., S3ObjectStore]) -> None:
    store = s3_store_factory("tenant/a")
    store.put_once("x/y.json", b"1")
    assert store.uri("x/y.json") == f"s3://{store.bucket}/tenant/a/x/y.json"
    assert list(store.list("x/")) == ["x/y.json"]
    raw = store.client.list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["tenant/a/x/y.json"]


def test_s3_object_lock_retention_and_versioning(
    s3_store_factory: Callable[..., S3ObjectStore],
) -> None:
    store = s3_store_factory(object_lock=True, object_lock_days=1)
    client = store.client
    assert client.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
    assert store.put_once(KEY, b"anchored") == "created"
    retention = client.get_object_retention(Bucket=store.bucket, Key=KEY)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] > datetime.now(UTC)
    version = client.head_object(Bucket=store.bucket, Key=KEY)["VersionId"]
    with pytest.raises(ClientError):  # a locked version cannot be deleted
        client.delete_object(Bucket=store.bucket, Key=KEY, VersionId=version)
    # A plain delete only adds a delete marker: the locked version is still there.
    store.delete(KEY)
    versions = client.list_object_versions(Bucket=store.bucket, Prefix=KEY)["Versions"]
    assert [v["VersionId"] for v in versions] == [version]
    body = client.get_object(Bucket=store.bucket, Key=KEY, VersionId=version)["Body"].read()
    assert body == b"anchored"


def test_s3_object_lock_needs_a_locked_bucket(
    s3_store_factory: Callable[..., S3ObjectStore],
) -> None:
    from storage.objectstore import ObjectStoreError

    store = s3_store_factory()  # created without Object Lock
    with pytest.raises(ObjectStoreError, match="without Object Lock"):
        store.ensure_bucket(object_lock=True)


def test_s3_wrong_credentials_fail_without_leaking_them(s3_server: S3TestServer) -> None:
    secret = "very-secret-value-123"
    store = S3ObjectStore(
        "whatever",
        endpoint_url=s3_server.endpoint_url,
        access_key_id="nobody",
        secret_access_key=secret,
        max_attempts=1,
    )
    with pytest.raises(ObjectStoreError) as err:
        store.put_once("a/b", b"x")
    assert secret not in str(err.value) and secret not in repr(store)


def test_open_store_from_settings(tmp_path: Path, s3_server: S3TestServer) -> None:
    local = open_store(Settings(store_uri=(tmp_path / "objs").as_uri()))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "objs").resolve()
    srv = s3_server
    s3 = open_store(
        Settings(
            store_uri="s3://bkt/some/prefix",
            s3_endpoint_url=srv.endpoint_url,
            s3_access_key_id=srv.access_key_id,
            s3_secret_access_key=srv.secret_access_key,
        )
    )
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix) == ("bkt", "some/prefix")
    s3.ensure_bucket()
    s3.put_once("k", b"v")
    assert s3.get("k") == b"v"
    assert srv.secret_access_key not in repr(s3)
    with pytest.raises(ValueError):
        open_store(Settings(store_uri="ftp://x/y"))


def test_open_store_falls_back_to_aws_environment(
    s3_server: S3TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = s3_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.secret_access_key)
    store = open_store(Settings(store_uri="s3://envbucket", s3_endpoint_url=srv.endpoint_url))
    assert isinstance(store, S3ObjectStore)
    store.ensure_bucket()
    assert store.put_once("k", b"v") == "created"


# -- compare-and-swap state (the cursor and the lease) ----------------------------------


def test_put_if_creates_only_when_absent(store: ObjectStore) -> None:
    key = "state/dwd/lease.json"
    etag = store.put_if(key, b"first", None)
    with pytest.raises(ObjectChanged):
        store.put_if(key, b"second", None)
    assert store.get_tagged(key) == Tagged(b"first", etag)


def test_put_if_replaces_only_the_version_that_was_read(store: ObjectStore) -> None:
    key = "state/dwd/cursor.json"
    first = store.put_if(key, b"gen-1", None)
    second = store.put_if(key, b"gen-2", first)
    # A writer still holding the first tag loses instead of rolling the state back.
    with pytest.raises(ObjectChanged, match="changed since it was read"):
        store.put_if(key, b"gen-1-stale", first)
    assert store.get_tagged(key) == Tagged(b"gen-2", second)
    with pytest.raises(ObjectChanged):
        store.put_if("state/dwd/absent.json", b"x", first)  # If-Match on a missing object


def test_put_if_repeated_with_the_same_bytes_is_success(store: ObjectStore) -> None:
    """A retried request whose first attempt landed fails its precondition: still success."""
    key = "state/dwd/cursor.json"
    first = store.put_if(key, b"gen-1", None)
    second = store.put_if(key, b"gen-2", first)
    assert store.put_if(key, b"gen-2", first) == second


def test_delete_if_only_deletes_what_was_read(store: ObjectStore) -> None:
    key = "state/dwd/lease.json"
    first = store.put_if(key, b"mine", None)
    second = store.put_if(key, b"someone else's", first)
    with pytest.raises(ObjectChanged):
        store.delete_if(key, first)
    assert store.get(key) == b"someone else's"
    store.delete_if(key, second)
    assert store.head(key) is None


def test_concurrent_compare_and_swap_has_exactly_one_winner(store: ObjectStore) -> None:
    key = "state/dwd/cursor.json"
    base = store.put_if(key, b"gen-0", None)
    outcomes: list[str] = []

    def writer(i: int) -> None:
        try:
            store.put_if(key, f"gen-1 by {i}".encode(), base)
            outcomes.append("won")
        except ObjectChanged:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
