"""Layout "pack": one checkpoint pack per run, located by the signed log, audited per window.

On the real broker, SeaweedFS and the local ledger: a run writes one checkpoint pack and no
per-window checkpoint; every window log entry locates its checkpoint in it (key, offset,
length) and the logged digest is the SHA-256 of exactly those bytes, a schema-valid
checkpoint v1. Drills: a truncated pack (a range outside the object), a flipped byte (a
wrong digest), a deleted pack and hostile locators give findings on exactly the windows
concerned, never a traceback or a read of another object; late data revises a packed
window (the previous revision is found through the log).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.audit_evidence import Documents, load_packed_checkpoints
from storage import layout
from storage.tlog import LogReader
from tasks.audit import RevisionInputs
from tasks.checkpoint import validate_checkpoint
from tasks.checkpoint_pack import (
    CheckpointPackError,
    build_pack,
    checkpoint_ref,
    extract,
    plan_checkpoint_packs,
)
from tasks.window import WindowKey
from tests.audit_env import audit_observations, audit_report, check, codes
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def packed(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, s3_server: Any
) -> PipelineEnv:
    env = make_env(tmp_path_factory.mktemp("ckpack"), kafka_bootstrap, s3_server, "pack")
    env.produce_observations(audit_observations())
    with env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 6, summary
    return env


def window_entries(env: PipelineEnv) -> list[dict[str, Any]]:
    reader = LogReader(env.store(), env.topic)
    head = reader.checkpoint()
    assert head is not None
    return [e for e in reader.entries(0, head.size) if e["type"] == "window"]


def test_a_run_writes_one_checkpoint_pack_that_its_log_entries_locate(
    packed: PipelineEnv,
) -> None:
    store = packed.store()
    key = layout.checkpoint_pack_key(packed.topic, 1)
    assert list(store.list(f"checkpoints/{packed.topic}/")) == []  # no per-window checkpoint
    assert key in list(store.list(layout.packs_prefix(packed.topic)))
    pack = store.get(key)
    entries = window_entries(packed)
    assert len(entries) == 6
    spans = []
    for e in entries:
        loc = e["checkpoint"]
        assert loc["key"] == key
        data = pack[loc["offset"] : loc["offset"] + loc["length"]]
        assert hashlib.sha256(data).hexdigest() == e["checkpoint_digest"]
        cp = json.loads(data)
        validate_checkpoint(cp)
        assert (cp["window"]["id"], cp["revision"]) == (e["window_id"], e["revision"])
        assert pack[loc["offset"] + loc["length"]] == ord("\n")
        spans.append((loc["offset"], loc["length"]))
    # back to back, one newline after each, nothing else in the pack
    spans.sort()
    assert spans[0][0] == 0
    assert all(a + n + 1 == b for (a, n), (b, _) in itertools.pairwise(spans))
    assert spans[-1][0] + spans[-1][1] + 1 == len(pack)


def _tampered_audit(env: PipelineEnv, data: bytes | None) -> dict[str, Any]:
    """The audit with the run's checkpoint pack replaced by `data` (None: deleted)."""
    store = env.store()
    key = layout.checkpoint_pack_key(env.topic, 1)
    original = store.get(key)
    try:
        if data is None:
            store.delete(key)
        else:
            store.put(key, data)
        return audit_report(env)
    finally:
        store.put(key, original)


def _anchored_findings(report: dict[str, Any], window_id: str) -> list[dict[str, Any]]:
    return list(check(report, window_id, "anchored")["findings"])


def test_a_truncated_pack_fails_the_windows_beyond_its_end_by_name(packed: PipelineEnv) -> None:
    entries = sorted(window_entries(packed), key=lambda e: e["checkpoint"]["offset"])
    last = entries[-1]
    cut = last["checkpoint"]["offset"] + 10  # the last checkpoint is cut short
    pack = packed.store().get(layout.checkpoint_pack_key(packed.topic, 1))
    report = _tampered_audit(packed, pack[:cut])
    failed = {w["window_id"] for w in report["windows"] if w["verdict"] == "fail"}
    assert failed == {last["window_id"]}
    findings = _anchored_findings(report, last["window_id"])
    assert {f["code"] for f in findings} >= {"checkpoint_invalid"}
    assert any("outside the checkpoint pack" in f["message"] for f in findings), findings


def test_a_flipped_byte_fails_exactly_its_window_by_digest(packed: PipelineEnv) -> None:
    entries = window_entries(packed)
    victim = entries[2]
    at = victim["checkpoint"]["offset"] + victim["checkpoint"]["length"] // 2
    pack = packed.store().get(layout.checkpoint_pack_key(packed.topic, 1))
    report = _tampered_audit(packed, pack[:at] + bytes([pack[at] ^ 0x01]) + pack[at + 1 :])
    failed = {w["window_id"] for w in report["windows"] if w["verdict"] == "fail"}
    assert failed == {victim["window_id"]}
    findings = _anchored_findings(report, victim["window_id"])
    assert "checkpoint_invalid" in {f["code"] for f in findings}
    assert any("do not hash to the logged checkpoint digest" in f["message"] for f in findings)


def test_a_deleted_pack_fails_every_window_as_missing(packed: PipelineEnv) -> None:
    report = _tampered_audit(packed, None)
    assert len(report["windows"]) == 6
    for w in report["windows"]:
        assert w["verdict"] == "fail"
        assert "checkpoint_missing" in codes(check(report, w["window_id"], "anchored"))


def test_a_hostile_locator_is_refused_without_reading_what_it_names(
    packed: PipelineEnv,
) -> None:
    """A log entry whose locator names another object of the bucket (the cursor, another
    run's pack) or a range beyond any checkpoint is a finding on the real store: the
    named object is never parsed as the checkpoint."""
    store = packed.store()
    entry = window_entries(packed)[0]
    key = WindowKey.parse(entry["window_id"])
    hostile = [
        {"key": layout.cursor_key(packed.topic), "offset": 0, "length": 10},
        {"key": layout.checkpoint_pack_key(packed.topic, 2), "offset": 0, "length": 10},
        {"key": layout.checkpoint_pack_key("other", 1), "offset": 0, "length": 10},
        {**entry["checkpoint"], "length": 0},
        {**entry["checkpoint"], "offset": -1},
        {**entry["checkpoint"], "offset": True},
        {**entry["checkpoint"], "length": 1 << 30},
        "packs/x",
    ]
    for loc in hostile:
        inp = RevisionInputs(0, "r", "c", "p", log_entry={**entry, "checkpoint": loc})
        load_packed_checkpoints(store, packed.topic, Documents({key: [inp]}))
        assert inp.checkpoint is None and inp.checkpoint_invalid, loc
        problem = str(inp.checkpoint_problem)
        assert "locat" in problem or "not usable" in problem, problem
    good = RevisionInputs(0, "r", "c", "p", log_entry=entry)
    load_packed_checkpoints(store, packed.topic, Documents({key: [good]}))
    assert good.checkpoint is not None and good.checkpoint["window"]["id"] == entry["window_id"]


def test_late_data_revises_a_packed_window(packed: PipelineEnv) -> None:
    """The previous revision's checkpoint is found through the log (no per-window object),
    so the new revision supersedes it by digest, in the next run's pack."""
    from tests.test_schemas import late

    obs = audit_observations()
    with packed.active():
        packed.produce_observations([late(obs[3])])
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 1
    entries = window_entries(packed)
    new = entries[-1]
    assert new["revision"] == 1 and new["checkpoint"]["key"] == layout.checkpoint_pack_key(
        packed.topic, 2
    )
    previous = next(e for e in entries if (e["window_id"], e["revision"]) == (new["window_id"], 0))
    assert new["supersedes"] == {"revision": 0, "checkpoint_digest": previous["checkpoint_digest"]}
    report = audit_report(packed)
    assert report["verdict"] == "pass", [
        (w["window_id"], w["verdict"]) for w in report["windows"] if w["verdict"] != "pass"
    ]


# --- the pure format ------------------------------------------------------------------------


def _entry(key: str, offset: int, length: int, digest: str, run: int = 1) -> dict[str, Any]:
    return {
        "type": "window",
        "window_id": "00433_20190907T000000Z_86400s",
        "revision": 0,
        "run": run,
        "checkpoint_digest": digest,
        "checkpoint": {"key": key, "offset": offset, "length": length},
    }


def test_extract_checks_range_and_digest() -> None:
    docs = [{"a": 1}, {"b": "x\ny"}]
    pack, spans = build_pack(docs)
    assert pack == b'{"a":1}\n{"b":"x\\ny"}\n' and spans == [(0, 7), (8, 12)]
    key = layout.checkpoint_pack_key("t", 1)
    digest = hashlib.sha256(pack[8:20]).hexdigest()
    ref = checkpoint_ref("t", _entry(key, 8, 12, digest))
    assert ref is not None and extract(pack, ref) == docs[1]
    with pytest.raises(CheckpointPackError, match="outside"):
        extract(pack[:15], ref)
    with pytest.raises(CheckpointPackError, match="do not hash"):
        extract(pack.replace(b"x", b"z"), ref)
    assert checkpoint_ref("t", {"type": "window", "run": 1}) is None  # per-window object


def test_a_plan_must_locate_its_checkpoints_exactly() -> None:
    docs = [{"a": 1}, {"b": 2}]
    pack, spans = build_pack(docs)
    key = layout.checkpoint_pack_key("t", 3)
    windows = [{"window_id": f"w{i}", "revision": 0, "checkpoint": d} for i, d in enumerate(docs)]

    def log(shift: int) -> dict[str, Any]:
        entries = []
        for i, (o, n) in enumerate(spans):
            e = _entry(key, o + shift * i, n, hashlib.sha256(pack[o : o + n]).hexdigest(), 3)
            entries.append({**e, "window_id": f"w{i}"})
        return {"entries": [*entries, {"type": "run"}]}

    assert plan_checkpoint_packs("t", windows, log(0)) == {key: pack}
    with pytest.raises(CheckpointPackError):
        plan_checkpoint_packs("t", windows, log(1))
    assert plan_checkpoint_packs("t", windows, None) == {}
