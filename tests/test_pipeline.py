"""anchor-windows and ingest-dwd end to end, on real noida-db, SeaweedFS and the local ledger."""

from __future__ import annotations

import gc
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import tags

from flows.anchor_windows import anchor_windows
from flows.ingest_dwd import ingest_dwd
from storage import layout
from storage.kafka import KafkaLog
from storage.ledger.local import LocalLedger
from storage.objectstore import read_payload
from storage.tlog import LogReader
from tasks import steps
from tasks.canonical import sha256_hex
from tasks.checkpoint import checkpoint_digest, ranges_of, schema_validator, validate_checkpoint
from tasks.dwd import DwdFormatError, demo_files
from tasks.merkle import inclusion_proof, merkle_root, verify_inclusion
from tasks.pack import payload_location
from tasks.payload import payload_leaves
from tasks.planner import CursorError
from tasks.record import Observation
from tasks.tlog.entries import entry_bytes
from tasks.window import WindowKey
from tests.outage import task_runs
from tests.pipeline_env import PipelineEnv, demo_observations, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


def task_run_names(tag: str, expected: int, deadline_s: float = 30.0) -> list[str]:
    """Sorted names of the task runs tagged `tag`, once the server has recorded `expected`
    of them (task runs reach the API through events, a moment after the flow returns)."""
    deadline = time.monotonic() + deadline_s
    while True:
        names = sorted(r.name.rsplit("-", 1)[0] for r in task_runs(tag))
        if len(names) >= expected or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_demo_files_are_anchored_window_by_window_and_rerun_adds_nothing(env: PipelineEnv) -> None:
    with env.active() as settings:
        sources = [str(p) for p in demo_files()]
        with tags(tag := f"ingest-{uuid.uuid4().hex}"):
            first_ingest = ingest_dwd(sources=sources)
        assert [r["records"] for r in first_ingest.values()] == [13_200, 13_200]
        # one listing, then both files in one batch: one task run, not two per file
        assert task_run_names(tag, 2) == ["list-ingested", "produce-sources"]
        # the run pauses the cyclic collector (tasks/gc_pause.py) and resumes it after
        collecting: list[bool] = []

        def watch(_phase: str, _done: int, _total: int) -> None:
            collecting.append(gc.isenabled())

        steps.add_progress_hook(watch, this_thread=True)
        try:
            summary = anchor_windows(drain=True)
        finally:
            steps.remove_progress_hook(watch)
        assert collecting and not any(collecting) and gc.isenabled()
        assert summary["new_anchors"] == 2 * 550  # 13,200 hours = 550 whole UTC days per station
        assert summary["stations"]["00433"]["records"] == 13_200
        assert summary["stations"]["00427"]["records"] == 13_200
        assert summary["stations"]["00433"]["duplicates"] == 0
        # 433 misses 36 temperatures and 239 humidities in these files (DWD README)
        assert summary["stations"]["00433"]["missing_values"] == 36 + 239
        assert summary["ledger_entries"] == 1 + 1100  # the log head, one keyed entry per window

        with tags(tag := f"reingest-{uuid.uuid4().hex}"):
            again_ingest = ingest_dwd(sources=sources)
        assert all(r["skipped"] for r in again_ingest.values())
        # local files are no task runs of their own, one listing finds what was ingested and
        # one task run reads the batch's manifests
        assert task_run_names(tag, 2) == ["check-ingested", "list-ingested"]
        again = anchor_windows(drain=True)
        assert again["new_anchors"] == 0

        store = env.store()
        ledger = LocalLedger(settings.home_path / "ledger.sqlite3")
        ledger.verify_integrity()
        checkpoints = env.checkpoints()
        assert len(checkpoints) == 1100
        sample = checkpoints[("00433_20190907T000000Z_86400s", 0)]
        validate_checkpoint(sample)
        assert sample["aggregates"]["temperature_c"]["missing"] == 7  # 17:00..23:00 of 2019-09-07
        where = payload_location(settings.topic, _key(sample), 0, sample)
        assert where.packed == (settings.object_layout == "pack")
        payload = read_payload(store, where)  # its object, or its range of the run's pack
        assert sha256_hex(payload) == sample["payload"]["sha256"]
        assert merkle_root(payload_leaves(payload)).hex() == sample["merkle"]["root"]
        reader = LogReader(store, settings.topic)
        receipt_key = layout.receipt_key(settings.topic, _key(sample), 0)
        if settings.object_layout == "per_window":
            receipt = json.loads(store.get(receipt_key))
            assert receipt["schema"] == "streamnotary.receipt/2" and "batch" not in receipt
            log = receipt["log"]
        else:  # layout pack: no receipt; the proof comes from the log tiles
            assert store.head(receipt_key) is None
            entries = list(reader.entries(0, 1101))
            index = next(
                i
                for i, e in enumerate(entries)
                if e["type"] == "window" and e["window_id"] == sample["window"]["id"]
            )
            leaves = [entry_bytes(e) for e in entries]
            proof = [h.hex() for h in inclusion_proof(leaves, index)]
            log = {"index": index, "size": 1101, "root": merkle_root(leaves).hex(), "proof": proof}
        # window log entry -> inclusion proof -> the head the run anchored; no batch anywhere
        (entry,) = list(reader.entries(log["index"], log["index"] + 1))
        assert entry["checkpoint_digest"] == checkpoint_digest(sample)
        verify_inclusion(
            entry_bytes(entry),
            log["index"],
            log["size"],
            [bytes.fromhex(h) for h in log["proof"]],
            bytes.fromhex(log["root"]),
        )
        head = ledger.read(ledger.lookup(layout.head_entry_key(settings.topic, log["size"])))
        assert (head["size"], head["root"]) == (1101, log["root"])
        window_ref = ledger.lookup(layout.window_entry_key(settings.topic, _key(sample), 0))
        body = ledger.read(window_ref)
        assert body["checkpoint_digest"] == checkpoint_digest(sample)
        assert (body["log_index"], body["log_size"]) == (log["index"], 1101)
        assert not list(store.list(f"batches/{settings.topic}/"))


def _key(checkpoint: dict[str, Any]) -> Any:
    from tasks.window import WindowKey

    return WindowKey.parse(checkpoint["window"]["id"])


def test_malformed_messages_are_quarantined_and_counts_add_up(env: PipelineEnv) -> None:
    good = demo_observations(days=2)
    t = int(good[5].observed_at.timestamp() * 1000)
    bad: list[tuple[bytes | None, bytes, int]] = [
        (
            b"00433",
            b'{"observed_at": "2018-09-24T05:00:00Z", "quality_level": 3,',
            t,
        ),  # broken JSON
        (
            b"00433",
            json.dumps({"station_id": "00433", "observed_at": "2018-09-24T05:00:00Z"}).encode(),
            t,
        ),
        (
            b"00433",
            json.dumps(
                {
                    "observed_at": "2018-09-24T05:00:00Z",
                    "quality_level": 3,
                    "relative_humidity_pct_tenths": 870,
                    "station_id": "00433",
                    "temperature_c_tenths": 9000,  # 900 °C
                }
            ).encode(),
            t,
        ),
        (b"00433", b"\xff\xfe\x00 not utf-8", t),
    ]
    with env.active() as settings:
        produced = env.produce_observations(good) + env.produce(bad)
        produced += env.produce([(None, b"no key: no station to count it under", t)])
        summary = anchor_windows(drain=True)
        assert summary["stations"]["00433"]["quarantined"] == 4
        assert summary["unattributable"] == 1
        store = env.store()
        docs = [
            m
            for k in store.list(f"quarantine/{settings.topic}/")
            for m in json.loads(store.get(k))["messages"]
        ]
        attributed = sorted(
            d["reason"] for d in docs if d["window_id"] == "00433_20180924T000000Z_86400s"
        )
        assert attributed == sorted(["bad_json", "missing_field", "out_of_range", "not_utf8"])
        (unattributed,) = [d for d in docs if d["window_id"] is None]
        assert unattributed["reason"] == "bad_json" and unattributed["key_b64"] is None
        total = sum(cp["counts"]["messages"] for cp in env.checkpoints().values())
        assert total + summary["unattributable"] == produced


def test_late_record_makes_a_new_revision_that_supersedes_the_old(env: PipelineEnv) -> None:
    obs = demo_observations(days=3)
    with env.active():
        env.produce_observations(obs)
        first = anchor_windows(drain=False)
        anchored = env.checkpoints()
        assert first["new_anchors"] == 2 * 2  # day 3 of each station stays open (no watermark)
        day1 = sorted(k for k in anchored if k[0].startswith("00433_20180924"))[0]
        late = [o for o in obs if o.station_id == "00433"][3]
        changed = Observation(
            late.station_id, late.observed_at, late.temperature_tenths, late.humidity_tenths, 5
        )
        env.produce_observations([changed])
        second = anchor_windows(drain=False)
        assert second["new_anchors"] == 1
        assert second["stations"]["00433"]["revisions"] == 1
        revised = env.checkpoints()[(day1[0], 1)]
        assert revised["supersedes"] == {
            "revision": 0,
            "checkpoint_digest": checkpoint_digest(anchored[day1]),
        }
        assert (
            revised["counts"]["conflicts"] == 1
        )  # quality 5 beats quality 3, the loser is counted
        assert revised["counts"]["records"] == 24
        assert revised["window"]["close_reason"] == "late_data"
        assert revised["merkle"]["root"] != anchored[day1]["merkle"]["root"]
        # the rebuild read the revised window's range again, once, except the late
        # message itself: this run's own read holds it
        assert first["offsets_reread"] == 0
        assert second["messages_read"] == 1
        assert second["offsets_reread"] == sum(e - s for s, e in ranges_of(revised).values()) - 1
        assert second["offsets_reread"] > revised["counts"]["records"]
        assert second["offsets_reused"] == 1


def test_late_windows_of_one_station_found_by_one_listing_in_layout_per_window(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    """Several late windows of one station share one LIST (`layout.shared_listings`); each
    still finds its own per-window checkpoint, not a neighbour's or a stray object's."""
    env = make_env(tmp_path, kafka_bootstrap, s3_server, object_layout="per_window")
    obs = demo_observations(days=4)
    with env.active():
        env.produce_observations(obs)
        first = anchor_windows(drain=False)
        assert first["new_anchors"] == 2 * 3  # day 4 of each station stays open
        anchored = env.checkpoints()
        days = sorted(k for k in anchored if k[0].startswith("00433_"))
        assert len(days) == 3
        # a stray object in one window's directory is not a revision
        stray_dir = layout.window_checkpoints_prefix(env.topic, WindowKey.parse(days[0][0]))
        env.store().put_once(stray_dir + "r9999.json.bak", b"{}", "application/json")
        station = [o for o in obs if o.station_id == "00433"]
        changed = [
            Observation(o.station_id, o.observed_at, o.temperature_tenths, o.humidity_tenths, 5)
            for o in (station[3], station[24 + 3], station[48 + 3])  # days 1, 2 and 3
        ]
        env.produce_observations(changed)
        second = anchor_windows(drain=False)
        assert second["new_anchors"] == 3
        env.store().delete(stray_dir + "r9999.json.bak")  # env.checkpoints() reads them all
        revised = env.checkpoints()
        for window_id, _ in days:
            assert revised[(window_id, 1)]["supersedes"] == {
                "revision": 0,
                "checkpoint_digest": checkpoint_digest(anchored[(window_id, 0)]),
            }


def test_random_cut_points_give_the_same_roots_as_one_undisturbed_run(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    observations = demo_observations(days=8)
    reference = make_env(tmp_path / "ref", kafka_bootstrap, s3_server)
    with reference.active():
        reference.produce_observations(observations)
        anchor_windows(drain=False)
    expected = reference.roots()
    assert len(expected) == 2 * 7  # the eighth day of each station is still open

    rng = random.Random(20261121)
    cuts = sorted(rng.sample(range(1, len(observations)), 9))
    chunked = make_env(tmp_path / "cut", kafka_bootstrap, s3_server)
    with chunked.active():
        for lo, hi in zip([0, *cuts], [*cuts, len(observations)], strict=True):
            chunked.produce_observations(observations[lo:hi])
            anchor_windows(drain=False)
    assert chunked.roots() == expected


def test_idle_timeout_closes_windows_of_a_silent_station(env: PipelineEnv) -> None:
    obs = [o for o in demo_observations(days=1) if o.station_id == "00433"][:5]
    with env.active():
        env.produce_observations(obs)
        assert anchor_windows(idle_timeout_seconds=3600)["new_anchors"] == 0
        # nothing new arrives: once a second has passed, a run with a 1 s idle timeout closes it
        deadline = time.monotonic() + 30
        while anchor_windows(idle_timeout_seconds=1)["new_anchors"] == 0:
            assert time.monotonic() < deadline, "idle window never closed"
        (cp,) = env.checkpoints().values()
        assert cp["window"]["close_reason"] == "idle_timeout"


def test_changing_window_size_on_an_anchored_topic_is_refused(env: PipelineEnv) -> None:
    with env.active():
        env.produce_observations(demo_observations(days=2))
        anchor_windows(drain=True)
        with pytest.raises(CursorError, match="would re-window anchored data"):
            anchor_windows(window_seconds=3600)


def test_a_file_given_twice_in_one_ingest_is_produced_once(
    env: PipelineEnv, tmp_path: Path
) -> None:
    product = next(p for p in demo_files() if "00427" in p.name)
    first, copy = tmp_path / "first" / product.name, tmp_path / "copy" / product.name
    for path in (first, copy):
        path.parent.mkdir()
        path.write_bytes(product.read_bytes())
    with env.active() as settings:
        results = ingest_dwd(sources=[str(first), str(copy)])
        assert results[str(first)] == {
            "records": 13_200,
            "skipped": False,
            "sha256": sha256_hex(product.read_bytes()),
        }
        assert results[str(copy)]["skipped"] is True
        with KafkaLog.from_settings(settings) as log:
            assert sum(log.watermarks(p)[1] for p in log.partitions()) == 13_200
        # a manifest planted by a bucket writer, not even an object: the file counts as
        # ingested (as any manifest makes it), and the run says so instead of a traceback
        other = next(p for p in demo_files() if "00433" in p.name)
        planted = f"ingest/{settings.topic}/{sha256_hex(other.read_bytes())}.json"
        env.store().put_once(planted, b"[]", "application/json")
        assert ingest_dwd(sources=[str(other)])[str(other)]["skipped"] is True


def test_ingest_from_a_dwd_zip_url_and_lenient_quarantine(
    env: PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading
    import zipfile

    product = next(p for p in demo_files() if "00433" in p.name)
    served = tmp_path / "www"
    served.mkdir()
    with zipfile.ZipFile(served / "stundenwerte_TU_00433_akt.zip", "w") as z:
        for f in product.parent.iterdir():
            z.write(f, f.name)
    broken = served / "produkt_tu_stunde_20180924_20200326_00433.txt"
    lines = product.read_text(encoding="latin-1").splitlines(keepends=True)
    broken.write_text(
        "".join([*lines[:10], "        433;2018092410;    3;  not-a-number;  89.0;eor\n"]),
        encoding="latin-1",
    )

    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("STREAMNOTARY_INGEST_URL_PREFIXES", f"{base}/")
    try:
        with env.active():
            url = f"{base}/stundenwerte_TU_00433_akt.zip"
            assert ingest_dwd(sources=[url])[url]["records"] == 13_200
            assert ingest_dwd(sources=[url])[url]["skipped"] is True
            bad = f"{base}/{broken.name}"
            with pytest.raises(DwdFormatError, match=r"00433\.txt:11: bad_number"):
                ingest_dwd(sources=[bad])
            assert ingest_dwd(sources=[bad], lenient=True)[bad]["records"] == 9
            manifest = json.loads(
                env.store().get(f"ingest/{env.topic}/{sha256_hex(broken.read_bytes())}.json")
            )
            schema_validator("ingest.schema.json").validate(manifest)
            (rejected,) = manifest["rejected_lines"]
            assert (rejected["line_number"], rejected["reason"]) == ("11", "bad_number")
    finally:
        server.shutdown()
