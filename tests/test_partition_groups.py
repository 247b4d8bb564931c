"""Partition groups: each group anchors its partitions into its own log under its own lease.

On the real services (noida-db with four partitions, SeaweedFS, the local ledger, real
`streamnotary` processes): two groups hold their leases and anchor at the same time;
each group's log, cursor and heads are under its own keys and cover only its partitions;
`anchor` without `--group` runs every group; no group configured keeps today's keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from storage import layout
from storage.lease import read_lease
from storage.tlog import checkpoint_key
from tasks.groups import (
    GroupConfigError,
    LogScope,
    assignment_problems,
    group_name,
    parse_groups,
)
from tasks.record import canonical_bytes
from tasks.window import WindowKey
from tests.pipeline_env import PipelineEnv, demo_observations, make_env, wait_for

HARNESS = pytest.mark.usefixtures("prefect_harness")
GROUPS = [[0, 1], [2, 3]]
A, B = group_name(GROUPS[0]), group_name(GROUPS[1])  # "p0_1", "p2_3"


# -- pure -----------------------------------------------------------------------------


def test_the_scope_without_a_group_gives_todays_keys() -> None:
    topic = LogScope("dwd.x")
    assert topic.name == "dwd.x"
    assert layout.cursor_key(topic.name) == "state/dwd.x/cursor.json"
    assert layout.head_entry_key(topic.name, 7) == "head/dwd.x/7"
    group = LogScope("dwd.x", "p0_1")
    assert layout.cursor_key(group.name) == "state/dwd.x/p0_1/cursor.json"
    assert layout.lease_key(group.name) == "state/dwd.x/p0_1/lease.json"
    assert checkpoint_key(group.name) == "log/dwd.x/p0_1/checkpoint"
    assert layout.head_entry_key(group.name, 7) == "head/dwd.x/p0_1/7"
    assert layout.is_pack_key("dwd.x", layout.pack_key(group.name, 3))
    assert layout.is_pack_key("dwd.x", layout.pack_key("dwd.x", 3))
    assert not layout.is_pack_key("dwd.x", "packs/dwd.x/../run-0000000003.pack")


def test_group_settings_are_checked() -> None:
    assert parse_groups("[[1, 0], [2]]") == [[0, 1], [2]]
    assert parse_groups("") == []
    for bad in ("[[0, 1], [1]]", "[[]]", "[[0, -1]]", "[0, 1]", "[[0, 0]]"):
        with pytest.raises(GroupConfigError):
            parse_groups(bad)


def test_an_assignment_must_cover_each_partition_once() -> None:
    assert assignment_problems({A: [0, 1], B: [2, 3]}, range(4)) == []
    assert any("in no group" in p for p in assignment_problems({A: [0, 1]}, range(4)))
    two = assignment_problems({A: [0, 1], "p1_2_3": [1, 2, 3]}, range(4))
    assert any("claimed by groups" in p for p in two)
    assert any("does not name" in p for p in assignment_problems({"p9": [0, 1, 2, 3]}, range(4)))


def test_a_windows_group_and_a_heads_scope() -> None:
    from tasks.groups import GroupConfigError, groups_of, is_scope_of, owner_of

    groups = groups_of(GROUPS)
    assert owner_of(groups, {2}).name == owner_of(groups, {2, 3}).name == B
    for spanning in ({1, 2}, {7}, set()):
        with pytest.raises(GroupConfigError):
            owner_of(groups, spanning)
    assert is_scope_of("dwd.x", "dwd.x") and is_scope_of("dwd.x", "dwd.x/p0_1")
    assert not any(is_scope_of("dwd.x", s) for s in ("dwd.y/p0_1", "dwd.x/q0", "dwd.x/p0/p1"))


# -- on the real services -------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def grouped(env: PipelineEnv, groups: list[list[int]] = GROUPS) -> dict[str, str]:
    return {**env.env, "STREAMNOTARY_PARTITION_GROUPS": json.dumps(groups)}


def produce_to(env: PipelineEnv, placement: dict[int, list[Any]], partitions: int = 4) -> None:
    """Observations into chosen partitions (the default partitioner would pick by key)."""
    from storage.kafka import KafkaLog

    with KafkaLog(env.kafka_bootstrap, env.topic) as log:
        log.ensure_topic(partitions)
    producer = Producer({"bootstrap.servers": env.kafka_bootstrap, "enable.idempotence": True})
    for partition, observations in placement.items():
        for o in observations:
            producer.produce(
                env.topic,
                canonical_bytes(o),
                o.station_id.encode(),
                partition=partition,
                timestamp=int(o.observed_at.timestamp() * 1000),
            )
    assert producer.flush(60) == 0


def by_station(days: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for o in demo_observations(days=days):
        out.setdefault(o.station_id, []).append(o)
    return out


def two_groups_of_data(env: PipelineEnv, days: int = 3) -> tuple[str, str]:
    """One demo station in partition 0 (group A), the other in partition 2 (group B)."""
    first, second = sorted(by_station(days).items())
    produce_to(env, {0: first[1], 2: second[1]})
    return first[0], second[0]


def run_cli(env: PipelineEnv, extra: dict[str, str], *args: str, pause: Path | None = None):
    from prefect.settings import PREFECT_API_URL

    child = {**os.environ, **extra, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child.pop("STREAMNOTARY_KILL_AT", None)
    if pause is not None:
        child |= {"STREAMNOTARY_PAUSE_AT": "after_plan", "STREAMNOTARY_PAUSE_FILE": str(pause)}
    return subprocess.Popen(
        [sys.executable, "-m", "streamnotary.cli", *args],
        env=child,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def partitions_in(entries: list[dict[str, Any]]) -> set[int]:
    out: set[int] = set()
    for e in entries:
        out |= {int(p) for p in (e.get("read") or e.get("ranges") or {})}
    return out


@HARNESS
def test_two_groups_anchor_at_the_same_time(env: PipelineEnv, tmp_path: Path) -> None:
    station_a, station_b = two_groups_of_data(env)
    extra = grouped(env)
    pauses = {g: tmp_path / f"release-{g}" for g in (A, B)}
    runs = {
        g: run_cli(env, extra, "anchor", "--drain", "--json", "--group", g, pause=pauses[g])
        for g in (A, B)
    }
    try:

        def both_paused() -> bool:
            for g, r in runs.items():
                assert r.poll() is None, (g, r.communicate()[1][-3000:])
            return all(Path(f"{p}.reached").exists() for p in pauses.values())

        wait_for(both_paused, "both groups to reach their plans", timeout_s=180)
        # Both runs are past their plan at the same moment, each under its own lease.
        store = env.store()
        for g, r in runs.items():
            held = read_lease(store, LogScope(env.topic, g).name)
            assert held is not None and held.holder.pid == r.pid
        assert read_lease(store, env.topic) is None
    finally:
        for p in pauses.values():
            p.touch()
    outputs = {g: r.communicate(timeout=300) for g, r in runs.items()}
    for g, r in runs.items():
        assert r.returncode == 0, (g, outputs[g][1][-3000:])

    store = env.store()
    assert store.head(checkpoint_key(env.topic)) is None  # no topic-wide log
    for g, station, parts in ((A, station_a, {0, 1}), (B, station_b, {2, 3})):
        scope = LogScope(env.topic, g).name
        entries = env.log_entries(scope)
        windows = [e for e in entries if e["type"] == "window"]
        assert windows and all(e["window_id"].startswith(f"{station}_") for e in windows)
        assert partitions_in(entries) <= parts
        assert store.head(layout.cursor_key(scope)) is not None
        assert store.list(f"log/{scope}/anchors/")
        summary = json.loads(outputs[g][0])
        assert summary["log"]["ledger_key"].startswith(f"head/{scope}/")
        assert summary["log"]["origin"] == f"streamnotary/{scope}"


@HARNESS
def test_anchor_without_group_runs_every_group(env: PipelineEnv) -> None:
    """Every group's process, each catching up on its own 48 messages, 20 per run."""
    two_groups_of_data(env, days=2)
    capped = {
        **grouped(env),
        "STREAMNOTARY_MAX_MESSAGES_PER_RUN": "20",
        "STREAMNOTARY_READ_PAGE_MESSAGES": "10",
    }
    done = run_cli(env, capped, "anchor", "--drain", "--until-caught-up", "--json")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    summaries = json.loads(out)["groups"]
    assert set(summaries) == {A, B}
    for g in (A, B):
        runs = summaries[g]["runs"]
        assert [r["backlog"] for r in runs] == [28, 8, 0], runs
        assert sum(r["new_anchors"] for r in runs) == 2  # both days, the last one drained
        assert env.log_entries(LogScope(env.topic, g).name)


@HARNESS
def test_an_unknown_group_is_refused_before_any_write(env: PipelineEnv) -> None:
    two_groups_of_data(env, days=1)
    bad = run_cli(env, grouped(env), "anchor", "--drain", "--group", "p0")
    _, err = bad.communicate(timeout=300)
    assert bad.returncode != 0 and "no partition group 'p0'" in err
    assert list(env.store().list("state/")) == []


# -- audit: every group's log, the assignment, the wrong group --------------------------


def anchor_groups_in_process(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.anchor_windows import anchor_windows

    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    with env.active():
        for g in (A, B):
            assert anchor_windows(drain=True, group=g)["new_anchors"] > 0


def group_trust(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from streamnotary.commands.trust import trust_policy

    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    with env.active() as settings:
        return trust_policy(settings)


def group_audit(
    env: PipelineEnv, policy: dict[str, Any], state: Path | None = None
) -> dict[str, Any]:
    from flows.audit_groups import run_group_audit
    from flows.audit_log import TrustPolicy
    from flows.audit_select import Selection
    from storage.kafka import KafkaLog
    from storage.ledger.local import LocalLedger
    from streamnotary.report import validate_report
    from tests.audit_env import ledger_path

    with (
        env.active() as settings,
        LocalLedger(ledger_path(env)) as ledger,
        KafkaLog(env.kafka_bootstrap, env.topic) as kafka,
    ):
        report = run_group_audit(
            store=env.store(),
            ledger=ledger,
            kafka=kafka,
            topic=settings.topic,
            selection=Selection(all=True),
            trust=TrustPolicy.from_json(policy, "test"),
            state_dir=str(state) if state else None,
        )
    validate_report(report)
    return report


def all_codes(report: dict[str, Any]) -> set[str]:
    out = {f["code"] for f in report["findings"]}
    for g in report["groups"]:
        if g["log"] is not None:
            out |= {f["code"] for f in g["log"]["findings"]}
    return out


@pytest.fixture
def anchored(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> tuple[PipelineEnv, dict[str, Any]]:
    two_groups_of_data(env, days=2)
    anchor_groups_in_process(env, monkeypatch)
    return env, group_trust(env, monkeypatch)


def test_trust_policy_lists_the_groups_and_the_audit_passes(
    anchored: tuple[PipelineEnv, dict[str, Any]], tmp_path: Path
) -> None:
    env, policy = anchored
    assert policy["schema"] == "streamnotary.trust/v2"
    assert [(g["name"], g["partitions"]) for g in policy["groups"]] == [(A, [0, 1]), (B, [2, 3])]
    assert [g["log"]["origin"] for g in policy["groups"]] == [
        f"streamnotary/{env.topic}/{A}",
        f"streamnotary/{env.topic}/{B}",
    ]
    report = group_audit(env, policy, tmp_path / "state")
    failing = [(w["window_id"], w["verdict"]) for w in report["windows"] if w["verdict"] != "pass"]
    assert report["verdict"] == "pass", (all_codes(report), failing)
    assert report["log"] is None and [g["name"] for g in report["groups"]] == [A, B]
    for g in report["groups"]:
        assert g["log"]["verdict"] == "pass" and g["log"]["anchored_heads"]
        assert {c["partition"] for c in g["log"]["coverage"]["partitions"]} <= set(g["partitions"])
    assert len(report["windows"]) == 4
    assert len(list((tmp_path / "state").glob("audit-state-*.json"))) == 2


def test_a_deleted_group_log_is_caught(anchored: tuple[PipelineEnv, dict[str, Any]]) -> None:
    env, policy = anchored
    store = env.store()
    for key in list(store.list(f"log/{env.topic}/{B}/")):
        store.delete(key)
    report = group_audit(env, policy)
    assert report["verdict"] == "fail"
    by_name = {g["name"]: g["log"] for g in report["groups"]}
    assert by_name[A]["verdict"] == "pass" and by_name[B]["verdict"] == "fail"


def test_a_rolled_back_group_log_is_caught_by_the_remembered_head(
    anchored: tuple[PipelineEnv, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from flows.anchor_windows import anchor_windows

    env, policy = anchored
    store = env.store()
    old = store.get(checkpoint_key(f"{env.topic}/{B}"))
    _, second = sorted(by_station(4).items())
    produce_to(env, {2: second[1][48:]})  # days 3 and 4 of group B's station
    with env.active():
        assert anchor_windows(drain=True, group=B)["new_anchors"] > 0
    state = tmp_path / "state"
    assert group_audit(env, policy, state)["verdict"] == "pass"
    store.put(checkpoint_key(f"{env.topic}/{B}"), old, "text/plain")  # roll B back
    report = group_audit(env, policy, state)
    assert report["verdict"] == "fail"
    by_name = {g["name"]: g["log"] for g in report["groups"]}
    assert by_name[B]["verdict"] == "fail" and by_name[A]["verdict"] == "pass"


def test_a_partition_claimed_by_two_groups_or_by_none_fails(
    anchored: tuple[PipelineEnv, dict[str, Any]],
) -> None:
    env, policy = anchored
    none = {**policy, "groups": policy["groups"][:1]}  # partitions 2 and 3 in no group
    report = group_audit(env, none)
    assert report["verdict"] == "fail" and "group_assignment" in all_codes(report)
    assert any("in no group" in f["message"] for f in report["findings"])
    two = json.loads(json.dumps(policy))
    two["groups"][1]["partitions"] = [1, 2, 3]  # partition 1 in both groups (name unchanged)
    report = group_audit(env, two)
    assert report["verdict"] == "fail"
    assert any("claimed by groups" in f["message"] for f in report["findings"])


def test_a_window_anchored_in_the_wrong_group_fails(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    import tasks.groups
    from flows.anchor_windows import anchor_windows

    two_groups_of_data(env, days=2)
    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    # A writer that misreads its group: p0_1 also reads partition 2 (B's station's data).
    real = tasks.groups.find_group
    monkeypatch.setattr(
        tasks.groups,
        "find_group",
        lambda groups, name: (
            tasks.groups.PartitionGroup(A, frozenset({0, 1, 2}))
            if name == A
            else real(groups, name)
        ),
    )
    with env.active():
        anchor_windows(drain=True, group=A)
    monkeypatch.setattr(tasks.groups, "find_group", real)
    report = group_audit(env, group_trust(env, monkeypatch))
    assert report["verdict"] == "fail"
    wrong = [f for f in report["groups"][0]["log"]["findings"] if f["code"] == "wrong_group"]
    assert wrong and all("partition(s) [2]" in f["message"] for f in wrong), wrong


def test_the_flow_without_group_runs_every_group_as_subflows(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    from flows.anchor_windows import anchor_windows

    two_groups_of_data(env, days=1)
    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    with env.active():
        result = anchor_windows(drain=True)
    assert set(result["groups"]) == {A, B}
    assert all(result["groups"][g]["new_anchors"] == 1 for g in (A, B))
    assert env.store().head(checkpoint_key(env.topic)) is None


# -- backfill of a grouped topic --------------------------------------------------------


def grouped_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, set[tuple[str, Any]]]:
    """A few stations' generated DWD archives; the windows they make; groups configured."""
    from datetime import date

    from streamnotary.commands.generate import write_history
    from tasks.synth import SynthOptions, station_ids, station_releases

    options = SynthOptions(seed=3, stations=4, start=date(2020, 5, 1), days=2, republish_days=0)
    write_history(options, tmp_path / "history")
    rows = [o for s in station_ids(options) for _, r, _ in station_releases(options, s) for o in r]
    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    monkeypatch.setenv("STREAMNOTARY_PARTITIONS", "4")
    return tmp_path / "history", {(o.station_id, o.observed_at.date()) for o in rows}


@HARNESS
def test_backfill_of_a_grouped_topic_anchors_each_group_in_its_log(
    env: PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history, windows = grouped_history(tmp_path, monkeypatch)
    first = env.run_cli("backfill", str(history), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["new_anchors"] == len(windows) == 8
    assert set(summary["groups"]) == {A, B} and summary["backlog"] == 0
    assert sum(g["new_anchors"] for g in summary["groups"].values()) == len(windows)
    assert env.store().head(checkpoint_key(env.topic)) is None  # no topic-wide log
    for name, parts in ((A, GROUPS[0]), (B, GROUPS[1])):
        if summary["groups"][name]["new_anchors"]:
            assert partitions_in(env.log_entries(f"{env.topic}/{name}")) <= set(parts)
        assert read_lease(env.store(), f"{env.topic}/{name}") is None  # released
    # the groups drain on threads at once, each run a subflow of the backfill in the UI
    runs = group_runs(env.topic)
    assert {r["parameters"]["group"] for r in runs} == {A, B}
    assert all(r["parent_task_run_id"] for r in runs)

    again = env.run_cli("backfill", str(history), "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["new_anchors"] == 0 and second["skipped_sources"] == 4


def group_runs(topic: str) -> list[dict[str, Any]]:
    """The anchor-windows flow runs of `topic`'s groups on the session's Prefect server."""
    import requests
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value())
    found = requests.post(
        f"{url}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["anchor-windows"]}}, "limit": 200},
        timeout=30,
    ).json()
    return [r for r in found if r["parameters"].get("topic") == topic]


@HARNESS
def test_backfill_ingest_holds_every_groups_lease(
    env: PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's anchor run holds only its group's lease: the ingest phase must take it
    too, else it would classify and produce while that group anchors."""
    from storage.lease import Holder, TopicLease

    history, _ = grouped_history(tmp_path, monkeypatch)
    busy = TopicLease(env.store(), f"{env.topic}/{B}", seconds=60, holder=Holder.this_process())
    with busy:
        done = env.run_cli("backfill", str(history), "--json")
    assert done.returncode == 75, done.stderr
    assert "lease" in done.stderr.lower() and B in done.stderr
    assert list(env.store().list(f"ingest/{env.topic}/")) == []  # nothing produced or marked


def test_prove_and_verify_proof_use_the_log_of_the_windows_group(
    anchored: tuple[PipelineEnv, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record of each group is proven from its group's log and verified with a v2 trust
    policy (the group chosen by the window's partitions, pinned by that group's key)."""
    env, policy = anchored
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(policy))
    monkeypatch.setenv("STREAMNOTARY_PARTITION_GROUPS", json.dumps(GROUPS))
    for name, (station, observations) in zip((A, B), sorted(by_station(2).items()), strict=True):
        at = observations[0].observed_at.strftime("%Y-%m-%dT%H:%MZ")
        out = tmp_path / f"{name}.json"
        proved = env.run_cli("prove", "--station", station, "--at", at, "--out", str(out))
        assert proved.returncode == 0, proved.stderr
        bundle = json.loads(out.read_text())
        assert bundle["log"]["origin"] == f"streamnotary/{env.topic}/{name}"
        checked = env.run_cli("verify-proof", str(out), "--trust", str(trust), "--online")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"partition group {name}" in checked.stdout and "VERIFIED" in checked.stdout
    # a bundle claiming the other group's partitions is checked against that group's key
    forged = json.loads((tmp_path / f"{A}.json").read_text())
    for r in forged["checkpoint"]["source"]["ranges"]:
        r["partition"] = 2
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    refused = env.run_cli("verify-proof", str(tmp_path / "forged.json"), "--trust", str(trust))
    assert refused.returncode != 0 and "NOT VERIFIED" in refused.stdout


# -- a window whose messages lie in two groups (a producer that does not key by station) --


def split_day(env: PipelineEnv) -> tuple[str, list[Any], list[Any]]:
    """The first demo station's first day half in partition 0 (group A), half in partition
    2 (group B): a producer that does not key by station. Its other day and the second
    station go to their usual groups."""
    (first, obs), (_, other) = sorted(by_station(2).items())
    morning, afternoon = obs[:12], obs[12:24]
    produce_to(env, {0: morning + obs[24:], 2: afternoon + other})
    return first, morning, afternoon


@pytest.mark.parametrize("object_layout", ["pack", "per_window"])
def test_a_window_split_across_two_groups_is_anchored_by_both(
    env: PipelineEnv,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
    tmp_path: Path,
    object_layout: str,
) -> None:
    """Each group anchors its own part of the split window, in its own log, under its own
    keys: neither group halts on the other's checkpoint or ledger key, the audit of every
    group passes, and a record of each half is proven from the log of the group holding it."""
    monkeypatch.setenv("STREAMNOTARY_OBJECT_LAYOUT", object_layout)
    station, morning, afternoon = split_day(env)
    anchor_groups_in_process(env, monkeypatch)
    policy = group_trust(env, monkeypatch)
    report = group_audit(env, policy, tmp_path / "state")
    failing = [(w["window_id"], w["verdict"]) for w in report["windows"] if w["verdict"] != "pass"]
    assert report["verdict"] == "pass", (all_codes(report), failing)
    wid = f"{station}_{morning[0].observed_at:%Y%m%dT000000Z}_86400s"
    assert sorted(w["group"] for w in report["windows"] if w["window_id"] == wid) == [A, B]
    halves = {}
    for g, parts in ((A, {0, 1}), (B, {2, 3})):
        entries = [e for e in env.log_entries(f"{env.topic}/{g}") if e.get("window_id") == wid]
        assert len(entries) == 1, (g, wid)
        assert {int(p) for p in entries[0]["ranges"]} <= parts
        halves[g] = entries[0]
    assert halves[A]["checkpoint_digest"] != halves[B]["checkpoint_digest"]

    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(policy))
    for g, half in ((A, morning), (B, afternoon)):
        at = half[3].observed_at.strftime("%Y-%m-%dT%H:%MZ")
        out = tmp_path / f"split-{g}.json"
        proved = env.run_cli("prove", "--station", station, "--at", at, "--out", str(out))
        assert proved.returncode == 0, proved.stderr
        assert json.loads(out.read_text())["log"]["origin"] == f"streamnotary/{env.topic}/{g}"
        checked = env.run_cli("verify-proof", str(out), "--trust", str(trust), "--online")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"partition group {g}" in checked.stdout and "VERIFIED" in checked.stdout

    if object_layout == "per_window":  # each half's objects under its group's keys
        store = env.store()
        key = WindowKey.parse(wid)
        for g in (A, B):
            assert store.head(layout.checkpoint_key(f"{env.topic}/{g}", key, 0)) is not None
            assert store.head(layout.receipt_key(f"{env.topic}/{g}", key, 0)) is not None
        # a backfill finds both halves anchored (it compares, never re-produces them)
        from flows.backfill_sources import anchored_index
        from storage.checkpoint_store import logged_entries

        with env.active() as settings:
            index = anchored_index(store, env.topic, logged_entries(settings))
        assert index[wid][0] == 0
        assert len([w for w in index if w.startswith(f"{station}_")]) == 2
        # a revision outside every group's keys was anchored by no group: the audit fails
        forged = layout.checkpoint_key(env.topic, key, 0)
        store.put(forged, store.get(layout.checkpoint_key(f"{env.topic}/{A}", key, 0)), "x/y")
        report = group_audit(env, policy)
        assert report["verdict"] == "fail"
        ungrouped = [f for f in report["findings"] if f["code"] == "ungrouped_object"]
        assert [forged in f["message"] for f in ungrouped] == [True], report["findings"]
