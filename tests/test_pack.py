"""Layout "pack": one payload pack per run, read back by range, audited window by window.

On the real broker, SeaweedFS and the local ledger: a run writes one pack object and no
per-window payloads; every checkpoint addresses its payload inside the pack, and the
bytes there are a complete Parquet file with the anchored SHA-256; the audit passes; one
flipped byte in the pack fails exactly the window whose range holds it; a proof bundle is
issued from the pack; a pack reference outside the topic's packs is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from storage import layout
from storage.objectstore import read_payload
from tasks.pack import PackBuilder, PackError, payload_location, plan_pack
from tasks.payload import decode_payload
from tasks.window import WindowKey
from tests.audit_env import audit_observations, audit_report, check, codes, window
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def packed(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, s3_server: Any
) -> PipelineEnv:
    env = make_env(tmp_path_factory.mktemp("pack"), kafka_bootstrap, s3_server, "pack")
    env.produce_observations(audit_observations())
    with env.active():
        summary = anchor_windows(drain=True)
    assert summary["new_anchors"] == 6, summary
    return env


def _offset(cp: dict[str, Any]) -> int:
    return int(cp["payload"]["pack"]["offset"])


def test_a_run_writes_one_pack_of_complete_parquet_payloads(packed: PipelineEnv) -> None:
    store = packed.store()
    packs = [k for k in store.list(layout.packs_prefix(packed.topic)) if k.endswith(".pack")]
    assert packs == [layout.pack_key(packed.topic, 1)]  # and its checkpoint pack beside it
    assert list(store.list(f"payloads/{packed.topic}/")) == []  # no per-window payloads
    pack = store.get(packs[0])
    checkpoints = sorted(packed.checkpoints().values(), key=_offset)
    assert len(checkpoints) == 6
    end = 0
    for cp in checkpoints:
        where = payload_location(
            packed.topic, WindowKey.parse(cp["window"]["id"]), cp["revision"], cp
        )
        assert (where.key, where.offset, where.length) == (packs[0], end, cp["payload"]["size"])
        data = read_payload(store, where)  # a ranged GET
        assert data == pack[end : end + where.length]
        assert hashlib.sha256(data).hexdigest() == cp["payload"]["sha256"]
        assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"  # a complete Parquet file
        assert len(decode_payload(data)) == cp["counts"]["records"]
        assert cp["payload"]["uri"] == store.uri(packs[0])
        end += where.length
    assert end == len(pack)  # back to back, nothing else in the pack


def test_audit_passes_and_a_flipped_pack_byte_fails_exactly_its_window(
    packed: PipelineEnv,
) -> None:
    report = audit_report(packed)
    assert report["verdict"] == "pass", report["summary"]
    store = packed.store()
    key = layout.pack_key(packed.topic, 1)
    pack = store.get(key)
    victim = next(cp for cp in packed.checkpoints().values() if cp["payload"]["pack"]["offset"] > 0)
    at = victim["payload"]["pack"]["offset"] + victim["payload"]["size"] // 2
    try:
        store.put(key, pack[:at] + bytes([pack[at] ^ 0x01]) + pack[at + 1 :])
        report = audit_report(packed)
    finally:
        store.put(key, pack)
    failed = [w["window_id"] for w in report["windows"] if w["verdict"] == "fail"]
    assert failed == [victim["window"]["id"]]
    assert "payload_sha256_mismatch" in codes(check(report, failed[0], "payload"))
    assert check(report, failed[0], "anchored")["verdict"] == "pass"
    assert window(report, failed[0])["verdict"] == "fail"


def test_proof_bundle_from_a_pack(packed: PipelineEnv) -> None:
    from flows.audit import parse_time, prove_record
    from storage.ledger.local import LocalLedger
    from storage.logkey import log_verifier
    from tests.audit_env import ledger_path

    with packed.active() as settings, LocalLedger(ledger_path(packed)) as ledger:
        bundle = prove_record(
            store=packed.store(),
            ledger=ledger,
            topic=settings.topic,
            station="00433",
            at=parse_time("2019-09-07T17:00Z"),
            window_seconds=settings.window_seconds,
            verifier=log_verifier(settings),
        )
    assert bundle["schema"] == "streamnotary.proof-bundle/2"
    assert json.loads(bundle["record"])["station_id"] == "00433"


def test_a_pack_reference_is_hostile_input() -> None:
    key = WindowKey.parse("00433_20190907T000000Z_86400s")
    good = {"payload": {"size": 10, "pack": {"key": "packs/t/run-0000000001.pack", "offset": 5}}}
    assert payload_location("t", key, 0, good).offset == 5
    assert payload_location("t", key, 0, {"payload": {"size": 3}}).key == layout.payload_key(
        "t", key, 0
    )
    for pack, size in [
        ({"key": "state/t/cursor.json", "offset": 0}, 1),  # not a pack
        ({"key": "packs/other/run-0000000001.pack", "offset": 0}, 1),  # another topic's
        ({"key": "packs/t/run-0000000001.pack", "offset": -1}, 1),
        ({"key": "packs/t/run-0000000001.pack", "offset": True}, 1),
        ({"key": "packs/t/run-0000000001.pack", "offset": 0}, "9"),
        ("packs/t/run-0000000001.pack", 1),
    ]:
        with pytest.raises(PackError):
            payload_location("t", key, 0, {"payload": {"size": size, "pack": pack}})


def test_a_plan_pack_must_be_contiguous() -> None:
    b = PackBuilder("packs/t/run-0000000002.pack")
    offsets = [b.add(p) for p in (b"aa", b"bbb", b"c")]
    assert offsets == [0, 2, 5] and b.data() == b"aabbbc"
    assert b.data() == b"aabbbc" and len(b) == 3 and b.size == 6  # the same after the join

    def cp(offset: int, size: int) -> dict[str, Any]:
        return {"payload": {"size": size, "pack": {"key": b.key, "offset": offset}}}

    assert plan_pack([cp(0, 2), {"payload": {"size": 1}}, cp(2, 3)]) == {b.key: [0, 2]}
    with pytest.raises(PackError):
        plan_pack([cp(0, 2), cp(3, 3)])


def test_a_deleted_pack_fails_every_window_of_its_run_by_name(packed: PipelineEnv) -> None:
    store = packed.store()
    key = layout.pack_key(packed.topic, 1)
    pack = store.get(key)
    store.delete(key)
    try:
        report = audit_report(packed)
    finally:
        store.put(key, pack)
    assert len(report["windows"]) == 6
    for w in report["windows"]:
        assert w["verdict"] == "fail"
        assert codes(check(report, w["window_id"], "payload")) == {"payload_missing"}
        assert check(report, w["window_id"], "anchored")["verdict"] == "pass"
