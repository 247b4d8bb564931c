"""Receipts pin S3 version ids where the bucket keeps versions; the audit reads those.

On a versioned bucket (SeaweedFS, real pipeline and audit) a bucket writer who replaces a
payload or checkpoint with a plain PUT only adds a newer version. The receipts name the
versions the anchoring run wrote, so the audit and `prove` keep verifying the anchored
evidence, not the substitute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storage import layout
from storage.objectstore import S3ObjectStore
from tasks.window import WindowKey
from tests.audit_env import anchor_demo_days, audit_report, window
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

TARGET = "00433_20190907T000000Z_86400s"
OTHER = "00433_20190906T000000Z_86400s"


@pytest.fixture
def versioned_env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    env = make_env(tmp_path, kafka_bootstrap, s3_server, "per_window")  # per-window payloads
    store = env.store()
    assert isinstance(store, S3ObjectStore)
    store.client.put_bucket_versioning(
        Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    anchor_demo_days(env)
    return env


def test_receipts_pin_versions_and_the_audit_ignores_overwrites(versioned_env: PipelineEnv) -> None:
    env = versioned_env
    store = env.store()
    assert isinstance(store, S3ObjectStore)
    key = WindowKey.parse(TARGET)
    receipt = json.loads(store.get(layout.receipt_key(env.topic, key, 0)))
    pinned = receipt["object_versions"]
    payload_key = layout.payload_key(env.topic, key, 0)
    checkpoint_key = layout.checkpoint_key(env.topic, key, 0)
    assert pinned["payload"] == store.first_version(payload_key)
    assert pinned["checkpoint"] == store.first_version(checkpoint_key)

    # A bucket writer substitutes another window's payload and checkpoint with plain PUTs.
    other = WindowKey.parse(OTHER)
    store.put(payload_key, store.get(layout.payload_key(env.topic, other, 0)))
    store.put(checkpoint_key, store.get(layout.checkpoint_key(env.topic, other, 0)))
    assert store.get(payload_key) != store.get(payload_key, pinned["payload"])

    report = audit_report(env)
    assert window(report, TARGET)["verdict"] == "pass", window(report, TARGET)
    assert report["verdict"] == "pass"
