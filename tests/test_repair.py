"""`streamnotary repair`: the documented way out of a plan that cannot be completed.

Real processes on the real broker and S3 server. A plan made from another cursor than
the stored one (what overlapping runs left behind before the lease) stops every run with
a message naming the command; `repair` shows it, `--discard` removes it (nothing of it is
anchored) and the next run anchors normally. A partly anchored plan is never discarded:
`--discard` is refused and `--complete` finishes it.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from storage import layout
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    e = make_env(tmp_path, kafka_bootstrap, s3_server, "per_window")
    e.produce_observations(demo_observations(days=3))
    return e


def test_a_conflicting_plan_is_reported_and_discarded_safely(env: PipelineEnv) -> None:
    killed = env.run_cli("anchor", "--drain", kill_at="after_plan")
    assert killed.returncode == -signal.SIGKILL
    store = env.store()
    plan = json.loads(store.get(layout.pending_key(env.topic)))
    # Another writer (a run that overlapped before the lease existed) moved the cursor.
    other = {**plan["next_cursor"], "unattributable": 99}
    store.put(layout.cursor_key(env.topic), json.dumps(other).encode())

    blocked = env.run_cli("anchor", "--drain")
    assert blocked.returncode == 1
    assert "streamnotary repair" in blocked.stderr and "nothing was written" in blocked.stderr
    assert not list(store.list(f"receipts/{env.topic}/"))

    shown = env.run_cli("repair", "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    report = json.loads(shown.stdout)["before"]
    assert report["plan"] and report["cursor_status"] == "conflict"
    assert not report["anything_anchored"] and len(report["windows"]) == len(plan["windows"])

    refused = env.run_cli("repair", "--complete")
    assert refused.returncode == 1 and "roll the cursor back" in refused.stderr

    discarded = env.run_cli("repair", "--discard", "--json")
    assert discarded.returncode == 0, discarded.stderr[-2000:]
    assert layout.pending_key(env.topic) in json.loads(discarded.stdout)["discarded"]
    assert store.head(layout.pending_key(env.topic)) is None
    assert store.head(layout.lease_key(env.topic)) is None

    store.delete(layout.cursor_key(env.topic))  # undo the other writer's cursor
    after = env.run_cli("anchor", "--drain", "--json")
    assert after.returncode == 0, after.stderr[-2000:]
    assert json.loads(after.stdout)["new_anchors"] == len(report["windows"])


def test_a_partly_anchored_plan_is_never_discarded_only_completed(env: PipelineEnv) -> None:
    killed = env.run_cli("anchor", "--drain", kill_at="after_head_anchor")
    assert killed.returncode == -signal.SIGKILL
    store = env.store()
    checkpoints = sorted(store.list(f"checkpoints/{env.topic}/"))
    assert checkpoints

    refused = env.run_cli("repair", "--discard")
    assert refused.returncode == 1 and "never discarded" in refused.stderr
    assert sorted(store.list(f"checkpoints/{env.topic}/")) == checkpoints
    assert store.head(layout.pending_key(env.topic)) is not None

    shown = json.loads(env.run_cli("repair", "--json").stdout)["before"]
    assert shown["log_appended"] and not shown["batch_root"]
    assert shown["cursor_status"] == "successor"

    done = env.run_cli("repair", "--complete", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["complete"]["completed"] and not result["after"]["plan"]
    receipts = list(store.list(f"receipts/{env.topic}/"))
    assert len(receipts) == len(checkpoints)
    again = env.run_cli("anchor", "--drain", "--json")
    assert json.loads(again.stdout)["new_anchors"] == 0


def test_layout_pack_discard_removes_both_packs_only_if_they_are_the_plans(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    """Layout pack: the plan's payload pack and checkpoint pack are reported and deleted by
    --discard, but a checkpoint pack with other bytes than the plan's is left untouched."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server, "pack")
    env.produce_observations(demo_observations(days=3))
    killed = env.run_cli("anchor", "--drain", kill_at="after_payloads")
    assert killed.returncode == -signal.SIGKILL
    store = env.store()
    packs = sorted(store.list(layout.packs_prefix(env.topic)))
    assert packs == [layout.checkpoint_pack_key(env.topic, 1), layout.pack_key(env.topic, 1)]
    shown = json.loads(env.run_cli("repair", "--json").stdout)["before"]
    assert shown["windows"] and all(w["checkpoint_stored"] for w in shown["windows"])

    cp_pack = layout.checkpoint_pack_key(env.topic, 1)
    original = store.get(cp_pack)
    store.put(cp_pack, original.replace(b'"revision":0', b'"revision":7', 1))
    refused = env.run_cli("repair", "--discard")
    assert refused.returncode == 1 and "not the plan's" in refused.stderr
    assert store.head(layout.pending_key(env.topic)) is not None
    store.put(cp_pack, original)

    discarded = env.run_cli("repair", "--discard", "--json")
    assert discarded.returncode == 0, discarded.stderr[-2000:]
    assert cp_pack in json.loads(discarded.stdout)["discarded"]
    assert list(store.list(layout.packs_prefix(env.topic))) == []
    after = env.run_cli("anchor", "--drain", "--json")
    assert json.loads(after.stdout)["new_anchors"] == len(shown["windows"])
