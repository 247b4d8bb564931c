"""The anchor log on the real services (noida-db, SeaweedFS, Prefect, the SQLite ledger).

Runs grow one signed, append-only log per topic; every head is anchored on the ledger and
consistent with the one before; receipts prove their window entry into a signed head; the
run entries tile the topic's offsets; and the state a bucket writer could edit (cursor,
write-ahead plan) is refused unless the log vouches for it.
"""

from __future__ import annotations

import itertools
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from storage import layout
from storage.ledger.local import LocalLedger
from storage.tlog import LogReader, checkpoint_key
from streamnotary.commands.trust import trust_policy
from tasks import merkle
from tasks.canonical import canonical_digest
from tasks.planner import CursorError
from tasks.revision import document_bytes
from tasks.steps import PlanUnauthenticated
from tasks.tlog.checkpoint import open_checkpoint
from tasks.tlog.entries import entry_bytes
from tasks.tlog.note import Verifier
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

OBSERVATIONS = demo_observations(days=4)


def reader_for(env: PipelineEnv) -> tuple[LogReader, dict[str, Any]]:
    """A reader pinned to the trust policy `streamnotary trust export` prints."""
    policy = trust_policy(env.settings())
    verifier = Verifier.from_key(policy["log"]["verifier_key"])
    return LogReader(env.store(), env.topic, verifier, policy["log"]["origin"]), policy


def test_runs_grow_a_signed_append_only_log_whose_heads_are_anchored(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server, "per_window")  # receipts
    store = env.store()
    first_half = [o for o in OBSERVATIONS if o.observed_at.day <= 25]
    heads = []
    with env.active():
        env.produce_observations(first_half)
        anchor_windows(drain=False)
        heads.append(store.get(checkpoint_key(env.topic)))
        env.produce_observations([o for o in OBSERVATIONS if o not in first_half])
        anchor_windows(drain=False)
        heads.append(store.get(checkpoint_key(env.topic)))
        anchor_windows(drain=True)
        heads.append(store.get(checkpoint_key(env.topic)))
        again = anchor_windows(drain=True)  # nothing new: the log does not grow
        assert again["new_anchors"] == 0
        assert store.get(checkpoint_key(env.topic)) == heads[-1]

    reader, policy = reader_for(env)
    verifier = Verifier.from_key(policy["log"]["verifier_key"])
    checkpoints = [open_checkpoint(h, verifier, policy["log"]["origin"])[0] for h in heads]
    assert [c.size for c in checkpoints] == sorted({c.size for c in checkpoints})
    head = checkpoints[-1]
    entries = list(reader.entries(0, head.size))
    assert merkle.merkle_root([entry_bytes(e) for e in entries]) == head.root

    # every pair of consecutive heads: a stored consistency proof that verifies
    for old, new in itertools.pairwise(checkpoints):
        doc = reader.stored_consistency(old.size, new.size)
        assert doc is not None and doc["new"]["root"] == new.root.hex()
        proof = [bytes.fromhex(h) for h in doc["proof"]]
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)

    # every head is anchored under head/<topic>/<size>, linked to the one before
    ledger = LocalLedger(env.home / "ledger.sqlite3")
    assert ledger.identity() == policy["ledger"]
    previous = 0
    for cp in checkpoints:
        ref = ledger.lookup(layout.head_entry_key(env.topic, cp.size))
        assert ref is not None
        body = ledger.read(ref)
        assert body == {
            "kind": "head",
            "topic": env.topic,
            "size": cp.size,
            "root": cp.root.hex(),
            "previous_size": previous,
        }
        previous = cp.size

    # each run ends with its run entry; read ranges tile every partition from offset 0
    runs = [e for e in entries if e["type"] == "run"]
    assert [r["run"] for r in runs] == [1, 2, 3]
    cursor = json.loads(store.get(layout.cursor_key(env.topic)))
    assert runs[-1]["cursor_digest"] == canonical_digest(cursor)
    for p, c in cursor["partitions"].items():
        ranges = [r["read"][p] for r in runs if p in r["read"]]
        if c["read_end"] == 0:
            assert not ranges  # an empty partition
            continue
        assert ranges[0][0] == 0 and ranges[-1][1] == c["read_end"]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert runs[0]["held_open"] and not runs[-1]["held_open"]  # drained at the end

    # every receipt proves its window entry into the signed head of its run
    windows = {
        (e["window_id"], e["revision"]): (i, e)
        for i, e in enumerate(entries)
        if e["type"] == "window"
    }
    receipts = [json.loads(store.get(k)) for k in store.list(layout.receipts_prefix(env.topic))]
    assert len(receipts) == len(windows) > 0
    for r in receipts:
        index, entry = windows[(r["window_id"], r["revision"])]
        assert entry["checkpoint_digest"] == r["checkpoint_digest"]
        log = r["log"]
        signed, _ = open_checkpoint(log["checkpoint"].encode(), verifier)
        assert (signed.size, signed.root.hex(), log["index"]) == (log["size"], log["root"], index)
        proof = [bytes.fromhex(h) for h in log["proof"]]
        merkle.verify_inclusion(entry_bytes(entry), index, signed.size, proof, signed.root)
        assert r["ledger"]["head"]["key"] == layout.head_entry_key(env.topic, signed.size)


def test_an_edited_cursor_is_refused(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> None:
    """Moving the cursor past offsets (so they are never anchored) is caught by the log."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    store = env.store()
    with env.active():
        env.produce_observations(OBSERVATIONS[:48])
        anchor_windows(drain=False)
        key = layout.cursor_key(env.topic)
        cursor = json.loads(store.get(key))
        for c in cursor["partitions"].values():
            c["resume"] = c["read_end"] = c["read_end"] + 5
        store.put(key, document_bytes(cursor))
        env.produce_observations(OBSERVATIONS[48:96])
        with pytest.raises(CursorError, match="anchor log"):
            anchor_windows(drain=False)


def test_a_forged_write_ahead_plan_is_refused(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    """A bucket writer who rewrites pending.json cannot make the operator sign its entries."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server)
    env.produce_observations(OBSERVATIONS[:72])
    killed = env.run_cli("anchor", "--drain", "--json", kill_at="after_plan")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    store = env.store()
    key = layout.pending_key(env.topic)
    stored = store.get(key)
    plan = json.loads(stored)
    assert stored == document_bytes(plan)  # the spliced plan is its canonical serialization
    plan["log"]["entries"][0]["checkpoint_digest"] = "00" * 32
    store.delete(key)
    store.put_once(key, document_bytes(plan))
    with env.active(), pytest.raises(PlanUnauthenticated):
        anchor_windows(drain=True)
    assert store.head(checkpoint_key(env.topic)) is None  # nothing was signed
