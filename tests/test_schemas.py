"""Every document the pipeline stores or hands across a boundary conforms to its JSON Schema.

The schemas in docs/schemas/ are the published contract (docs/formats.md). Writing them
by hand next to code that builds the documents invites drift, so this test runs the real
pipeline on the real session servers (noida-db, SeaweedFS, Prefect, the SQLite ledger)
and validates EVERY object it leaves in the bucket against the schema its key prefix
implies; an object under a prefix without a schema fails the test, so a new kind of
document cannot appear without its schema.
"""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from flows.anchor_windows import anchor_windows
from flows.ingest_dwd import ingest_dwd
from storage import layout
from storage.ledger.local import LocalLedger
from storage.tlog import LogReader
from tasks.canonical import canonical_digest
from tasks.dwd import demo_files
from tasks.record import Observation
from tests.pipeline_env import demo_observations, make_env

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
FORMATS = SCHEMAS.parent / "formats.md"
SCHEMA_FILES = sorted(SCHEMAS.glob("*.schema.json"))
DAYS = 3


def _retrieve(uri: str) -> Resource[Any]:
    """Resolve a cross-file `$ref` ("checkpoint.schema.json") to the sibling schema file.

    Our `$id`s are names (``streamnotary.pending/1``), not retrievable URLs, so a relative
    reference resolves to ``streamnotary.pending/checkpoint.schema.json``: its last path
    segment names the file.
    """
    path = SCHEMAS / uri.rsplit("/", 1)[-1]
    if not path.is_file():
        raise FileNotFoundError(f"$ref {uri!r} names no file in {SCHEMAS}")
    return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT202012)


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.validators.validator_for(schema)(schema, registry=REGISTRY)


def assert_valid(name: str, doc: Any, where: str) -> None:
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where} does not match {name}: " + "; ".join(
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


# --- the schemas themselves ----------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_and_its_id_names_its_documents(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # "name/1" (pipeline documents) or "name/v1" (the anchor log family, COORD interface)
    assert re.fullmatch(r"streamnotary\.[a-z_-]+/v?[0-9]+", schema["$id"]), schema["$id"]
    const = schema.get("properties", {}).get("schema", {}).get("const")
    if const is not None:
        assert schema["$id"] == const
    # every $ref resolves (cross-file references included)
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', path.read_text())
    resolver = REGISTRY.with_resource(
        schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)
    ).resolver(base_uri=schema["$id"])
    for ref in refs:
        assert resolver.lookup(ref).contents is not None, ref


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_formats_md_documents_every_schema(path: Path) -> None:
    schema = json.loads(path.read_text())
    text = FORMATS.read_text()
    assert f"schemas/{path.name}" in text, f"docs/formats.md does not link {path.name}"
    assert f"`{schema['$id']}`" in text, f"docs/formats.md does not name {schema['$id']}"


# --- the real documents ---------------------------------------------------------------------

PREFIX_SCHEMAS: list[tuple[str, str | None]] = [
    (r"payloads/.+\.parquet", None),  # Parquet, checked by tests/test_payload.py
    (r"checkpoints/.+/r[0-9]{4}\.json", "checkpoint.schema.json"),
    (r"receipts/.+/r[0-9]{4}\.json", "receipt.schema.json"),
    (r"batches/[^/]+/[0-9a-f]{64}\.json", "batch.schema.json"),
    (r"quarantine/.+/run-[0-9]{10}\.json", "quarantine_run.schema.json"),
    (r"state/[^/]+/cursor\.json", "cursor.schema.json"),
    (r"state/[^/]+/pending\.json", "pending.schema.json"),
    (r"state/[^/]+/pending\.sig", None),  # C2SP signed note over the plan's digest
    (r"state/[^/]+/lease\.json", "lease.schema.json"),  # left by the killed run
    (r"state/[^/]+/held/[0-9a-f]{64}\.json", "held.schema.json"),
    (r"ingest/[^/]+/[0-9a-f]{64}\.json", "ingest.schema.json"),
    (r"ingest/[^/]+/[0-9a-f]{64}\.started\.json", "ingest_start.schema.json"),
    (r"log/[^/]+/consistency/[0-9]+-[0-9]+", "log_consistency.schema.json"),
    (r"log/[^/]+/anchors/[0-9]+\.json", "head_anchor.schema.json"),
    (r"log/[^/]+/checkpoint", None),  # C2SP signed note, checked by tests/test_anchor_log.py
    (r"log/[^/]+/tile/.+", None),  # C2SP tiles and entry bundles, checked by LogReader
]


def schema_of(key: str) -> str | None:
    for pattern, name in PREFIX_SCHEMAS:
        if re.fullmatch(pattern, key):
            return name
    raise AssertionError(f"stored object {key!r} has no schema (add one to docs/schemas/)")


def small_dwd_file(directory: Path, station: str, days: int) -> Path:
    """The first `days` days of a shipped DWD product file, as a bare product file."""
    (source,) = [p for p in demo_files() if p.name.endswith(f"_{station}.txt")]
    lines = source.read_text(encoding="latin-1").splitlines(keepends=True)
    target = directory / source.name
    target.write_text("".join(lines[: 1 + 24 * days]), encoding="latin-1")
    return target


def late(o: Observation) -> Observation:
    """A re-published version of `o` (DWD raises the quality level after more control)."""
    return Observation(o.station_id, o.observed_at, o.temperature_tenths, o.humidity_tenths, 5)


@pytest.mark.usefixtures("prefect_harness")
def test_every_stored_document_and_ledger_body_matches_its_schema(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any
) -> None:
    env = make_env(tmp_path, kafka_bootstrap, s3_server, "per_window")  # receipts
    obs = demo_observations(days=DAYS)
    s433 = [o for o in obs if o.station_id == "00433"]
    s427 = [o for o in obs if o.station_id == "00427"]
    with env.active():
        # station 00427 arrives through the ingest flow (-> ingest/ manifest), 00433 directly
        dwd = small_dwd_file(tmp_path, "00427", DAYS)
        ingested = ingest_dwd(sources=[str(dwd)])
        assert ingested[str(dwd)]["records"] == len(s427) == 24 * DAYS
        env.produce_observations(s433)
        t = int(s433[5].observed_at.timestamp() * 1000)
        env.produce([(b"00433", b'{"observed_at": "2018-09-24T05:00:00Z",', t)])
        first = anchor_windows(drain=False)
        assert first["new_anchors"] == 2 * (DAYS - 1)  # the last day of each station is open
        assert first["stations"]["00433"]["quarantined"] == 1

        env.produce_observations([late(s433[3])])
        second = anchor_windows(drain=False)
        assert second["new_anchors"] == 1 and second["stations"]["00433"]["revisions"] == 1

    # a third run dies right after storing its write-ahead plan: a late record of 00427
    # (-> revision 1 that supersedes revision 0), a late malformed one and an
    # unattributable one are all in the plan
    t427 = int(s427[2].observed_at.timestamp() * 1000)
    env.produce_observations([late(s427[2])])
    env.produce([(b"00427", b"\xff not utf-8", t427), (None, b"no key, no window", t427)])
    killed = env.run_cli("anchor", "--json", kill_at="after_plan")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    store = env.store()
    keys = sorted(store.list(""))
    seen: Counter[str] = Counter()
    docs: dict[str, dict[str, Any]] = {}
    for key in keys:
        name = schema_of(key)
        seen[name or key.split("/", 1)[0]] += 1
        if name is None:
            continue
        doc = json.loads(store.get(key))
        assert_valid(name, doc, key)
        docs[key] = doc
    windows = 2 * (DAYS - 1)
    assert seen == {
        "payloads": windows + 1,
        "checkpoint.schema.json": windows + 1,
        "receipt.schema.json": windows + 1,  # receipts v2; no batch manifest any more
        # the rejected message, by run 1, and again by run 2 in its window's revision
        "quarantine_run.schema.json": 2,
        "cursor.schema.json": 1,
        "pending.schema.json": 1,
        "state": 1,  # pending.sig
        "lease.schema.json": 1,  # the killed run's lease
        "held.schema.json": 1,  # messages of the windows still open, named by the cursor
        "ingest.schema.json": 1,
        "log_consistency.schema.json": 2,  # one per finished run
        "head_anchor.schema.json": 2,  # one per finished run
        "log": 5,  # checkpoint, tile/0 and tile/entries at sizes 5 and 7
    }, seen
    reader = LogReader(store, env.topic)
    head = reader.checkpoint()
    assert head is not None and head.size == 2 * (DAYS - 1) + 1 + 1 + 1
    for i, entry in enumerate(reader.entries(0, head.size)):
        assert_valid("log_entry.schema.json", entry, f"log entry {i}")

    # the plan left by the killed run: one late revision, its rejected message and the
    # unattributable one, and the cursor it would have written
    plan = docs[layout.pending_key(env.topic)]
    assert [(w["window_id"], w["revision"]) for w in plan["windows"]] == [
        ("00427_20180924T000000Z_86400s", 1)
    ]
    assert plan["windows"][0]["checkpoint"]["supersedes"] is not None
    assert sorted(str(q["window_id"]) for q in plan["quarantine"]) == [
        "00427_20180924T000000Z_86400s",
        "None",
    ]
    assert plan["next_cursor"]["runs"] == 3
    # one quarantine document per run that rejected: the malformed 00433 message twice
    quarantined = [docs[layout.quarantine_key(env.topic, run)] for run in (1, 2)]
    (rejected,) = quarantined[0]["messages"]
    assert rejected["window_id"] == "00433_20180924T000000Z_86400s"
    assert quarantined[1]["messages"] == [rejected]

    # ledger bodies, read back through the ledger the receipts name
    ledger = LocalLedger(env.home / "ledger.sqlite3")
    ledger.verify_integrity()
    kinds: Counter[str] = Counter()
    receipts = [d for k, d in docs.items() if k.startswith("receipts/")]
    for r in receipts:
        assert r["schema"] == "streamnotary.receipt/2" and "batch" not in r
        for ref_doc in (r["ledger"]["window"], r["ledger"]["head"]):
            assert ref_doc is not None  # the local ledger supports keyed window entries
            ref = ledger.lookup(ref_doc["key"])
            assert ref is not None, ref_doc["key"]
            body = ledger.read(ref)
            assert_valid("ledger_entry.schema.json", body, f"ledger entry {ref.key}")
            assert canonical_digest(body) == ref_doc["digest"]
            kinds[body["kind"]] += 1
    assert kinds == {"window": windows + 1, "head": windows + 1}
    window_bodies = [ledger.read(ledger.lookup(r["ledger"]["window"]["key"])) for r in receipts]
    assert all(
        b["log_index"] == r["log"]["index"] for b, r in zip(window_bodies, receipts, strict=True)
    )


def test_schemas_reject_what_the_code_must_never_write() -> None:
    """The new schemas are strict: a wrong constant or an extra field fails validation."""
    cases: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None]]] = [
        (
            "ledger_entry.schema.json",
            {"kind": "batch", "topic": "t", "root": "ab" * 32, "size": 1},
            lambda d: d.update(kind="window"),
        ),
        (
            "cursor.schema.json",
            {
                "schema": "streamnotary.cursor/2",
                "topic": "t",
                "window_seconds": 86400,
                "partitions": {"0": {"resume": 0, "read_end": 3}},
                "stations": {
                    "00433": {"watermark": None, "closed_until": None, "progress_at": None}
                },
                "unattributable": 0,
                "runs": 1,
                "held": None,
            },
            lambda d: d["partitions"].update({"p1": {"resume": 0, "read_end": 0}}),
        ),
        (
            "batch.schema.json",
            {
                "schema": "streamnotary.batch/1",
                "topic": "t",
                "merkle": {"algorithm": "rfc6962-sha256", "size": 1, "root": "00" * 32},
                "members": [
                    {
                        "window_id": "00433_20180924T000000Z_86400s",
                        "revision": 0,
                        "checkpoint_digest": "11" * 32,
                    }
                ],
            },
            lambda d: d["members"][0].update(checkpoint_digest="11" * 31),
        ),
        (
            "ledger_entry.schema.json",
            {
                "kind": "window",
                "topic": "t",
                "window_id": "00433_20180924T000000Z_86400s",
                "station_id": "00433",
                "revision": 0,
                "checkpoint_digest": "11" * 32,
                "merkle_root": "22" * 32,
                "log_index": 0,
                "log_size": 2,
            },
            lambda d: d.update(batch_root="33" * 32),  # neither v2 nor the legacy shape
        ),
    ]
    for name, good, spoil in cases:
        assert_valid(name, good, f"example {name}")
        spoil(good)
        assert list(validator(name).iter_errors(good)), f"{name} accepted a spoiled document"
