"""Killing the anchor process between any two steps, then re-running, anchors exactly once.

Each case runs `streamnotary anchor` as a real subprocess that SIGKILLs itself at a named
point (streamnotary/faults.py), then runs it again undisturbed (in the test's process: a
second CLI process would only add its start-up), and compares the result
with an undisturbed run on another topic: the same window roots and checkpoint digests,
exactly one ledger entry per window and log head, an intact hash chain, no plan left
behind, and the same anchor log (entries, heads, consistency proofs, tiles).
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from storage import layout
from storage.ledger.local import LocalLedger
from storage.logkey import load_signer, log_origin
from storage.tlog import LogReader
from streamnotary.config import Settings
from streamnotary.faults import POINTS
from tasks import merkle
from tasks.canonical import canonical_digest, sha256_hex
from tasks.tlog.entries import entry_bytes
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

OBSERVATIONS = demo_observations(days=3)


def ledger_keys(env: PipelineEnv) -> list[str]:
    path = env.home / "ledger.sqlite3"
    LocalLedger(path).verify_integrity()
    with sqlite3.connect(path) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM entries ORDER BY seq")]
    return [k for k in keys if f"/{env.topic}/" in k]


def log_state(env: PipelineEnv) -> dict[str, Any]:
    """The topic's anchor log, verified with the environment's key, in comparable form:
    entries without the fields that differ between two runs by design (topic, plan time,
    cursor digest, which names the topic), and the structure of heads and proofs."""
    settings = env.settings()
    store = env.store()
    verifier = load_signer(settings, create=False).named(log_origin(settings)).verifier()
    reader = LogReader(store, env.topic, verifier, log_origin(settings))
    head = reader.checkpoint()
    assert head is not None
    entries = list(reader.entries(0, head.size))
    assert head.root == merkle.merkle_root([entry_bytes(e) for e in entries])
    # a checkpoint names its topic, so its digest differs between topics: compare the
    # window's record root instead, after checking the digest names this topic's checkpoint
    roots = {canonical_digest(cp): cp["merkle"]["root"] for cp in env.checkpoints().values()}
    for e in entries:
        if e["type"] == "window":
            e["checkpoint_digest"] = roots[e["checkpoint_digest"]]
    # `layout` (run entries of layout pack) is checked by the cross-layout test itself, and
    # `checkpoint` (locators into a checkpoint pack, which name the topic) by `packs`
    volatile = {"topic", "anchored_at", "closed_at", "cursor_digest", "layout", "checkpoint"}
    consistency = sorted(k.rsplit("/", 1)[1] for k in store.list(f"log/{env.topic}/consistency/"))
    tiles = sorted(k.split("/", 2)[2] for k in store.list(f"log/{env.topic}/tile/"))
    return {
        "size": head.size,
        "entries": [{k: v for k, v in e.items() if k not in volatile} for e in entries],
        "consistency": consistency,
        "tiles": tiles,
    }


def pack_digests(env: PipelineEnv) -> list[tuple[str, str]]:
    """Name and SHA-256 of each payload and checkpoint pack of the topic (layout pack; none
    under per_window), with the topic and bucket names (which differ between two
    environments and are as long in each) made neutral, and every log entry's checkpoint
    locator likewise: a resumed run writes the very bytes that the log entries locate."""
    store = env.store()

    def neutral(data: bytes) -> bytes:
        return data.replace(env.topic.encode(), b"<topic>").replace(env.bucket.encode(), b"<b>")

    out = [
        (k.rsplit("/", 1)[1], sha256_hex(neutral(store.get(k))))
        for k in store.list(layout.packs_prefix(env.topic))
    ]
    reader = LogReader(store, env.topic)
    head = reader.checkpoint()
    for e in [] if head is None else reader.entries(0, head.size):
        if e["type"] == "window" and "checkpoint" in e:
            out.append((e["window_id"], neutral(json.dumps(e["checkpoint"]).encode()).decode()))
    return out


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, s3_server: Any
) -> dict:
    env = make_env(tmp_path_factory.mktemp("reference"), kafka_bootstrap, s3_server)
    with env.active():
        env.produce_observations(OBSERVATIONS)
        anchor_windows(drain=True)
    digests = {k: v["merkle"]["root"] for k, v in env.checkpoints().items()}
    return {
        "roots": env.roots(),
        "digests": digests,
        "ledger": len(ledger_keys(env)),
        "log": log_state(env),
        "packs": pack_digests(env),
    }


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_point_then_rerun_anchors_exactly_once(
    point: str, reference: dict, tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    env.produce_observations(OBSERVATIONS)

    killed = env.run_cli("anchor", "--drain", "--json", kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    store = env.store()
    assert store.head(layout.pending_key(env.topic)) is not None  # the plan survived the kill

    with env.active():  # only the kill needs a process of its own; the re-runs run here
        summary = anchor_windows(drain=True)
    assert summary["resumed_plan"] is True

    assert env.roots() == reference["roots"]
    assert {k: v["merkle"]["root"] for k, v in env.checkpoints().items()} == reference["digests"]
    assert len(ledger_keys(env)) == reference["ledger"]  # no duplicate anchors
    assert store.head(layout.pending_key(env.topic)) is None
    # the log holds each entry once, in the same order, as after an undisturbed run
    log = log_state(env)
    assert log == reference["log"]
    # a resumed run writes the very pack bytes an undisturbed run writes (write-once)
    assert pack_digests(env) == reference["packs"]

    with env.active():
        assert anchor_windows(drain=True)["new_anchors"] == 0
    assert log_state(env) == log  # nothing new read: the log does not grow


OTHER_LAYOUT = "per_window" if Settings().object_layout == "pack" else "pack"


@pytest.mark.parametrize("point", ["after_plan", "after_payloads"])
def test_kill_in_the_other_object_layout_then_rerun_anchors_exactly_once(
    point: str, reference: dict, tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    """The layout that is not the default resumes as exactly: same roots, anchors and log."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server, OTHER_LAYOUT)
    env.produce_observations(OBSERVATIONS)
    killed = env.run_cli("anchor", "--drain", "--json", kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with env.active():
        assert anchor_windows(drain=True)["resumed_plan"] is True
    assert env.roots() == reference["roots"]
    assert len(ledger_keys(env)) == reference["ledger"]
    assert log_state(env) == reference["log"]
    store = env.store()
    packs = list(store.list(layout.packs_prefix(env.topic)))
    payloads = list(store.list(f"payloads/{env.topic}/"))
    receipts = list(store.list(layout.receipts_prefix(env.topic)))
    runs = [e for e in LogReader(store, env.topic).entries(0, log_state(env)["size"])]
    layouts = {e.get("layout", "per_window") for e in runs if e["type"] == "run"}
    assert layouts == {OTHER_LAYOUT}  # the signed run entry says which layout it used
    if OTHER_LAYOUT == "pack":
        assert len(packs) == 2 and payloads == [] and receipts == []  # payload + checkpoint
    else:
        assert packs == [] and len(payloads) == len(reference["roots"]) == len(receipts)
