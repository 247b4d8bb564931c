"""A run's documents built from checkpoints serialized once (tasks/revision.py).

A run serializes each checkpoint once (`PlannedRevision.checkpoint_bytes`, for its digest)
and splices those bytes into the write-ahead plan, the checkpoint pack and the window
entries' digests. Each must be exactly what serializing the documents again gives: the
plan is signed and stored as canonical bytes, its digest and the pack's spans are logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from storage import layout
from tasks.checkpoint import Supersedes, checkpoint_digest
from tasks.checkpoint_pack import CheckpointPackError, plan_checkpoint_packs
from tasks.dwd import read_observations
from tasks.message import SourceMessage, classify
from tasks.pack import PackBuilder
from tasks.planner import Cursor
from tasks.record import canonical_bytes
from tasks.revision import (
    PlannedRevision,
    document_bytes,
    pending_document,
    plan_bytes,
    plan_revision,
    quarantine_doc,
    window_entry,
)
from tasks.run_log import log_plan, run_entries
from tasks.window import WindowSpec
from tasks.window_jobs import build_all
from tests.dwd_data import product_file

TOPIC = "dwd.obs"
PACK = layout.checkpoint_pack_key(TOPIC, 1)


@pytest.fixture(scope="module")
def revisions() -> list[PlannedRevision]:
    """Real DWD days of one station (gaps included), one revision each, a few superseding."""
    spec = WindowSpec(86_400)
    observations = list(read_observations(product_file("00433")))[: 24 * 40]
    messages = [
        SourceMessage(TOPIC, 0, i, o.station_id.encode(), canonical_bytes(o), 0)
        for i, o in enumerate(observations)
    ]
    days: dict = {}
    for c in (classify(m, spec) for m in messages):
        days.setdefault(c.window, []).append(c)
    pack = PackBuilder(layout.pack_key(TOPIC, 1))
    return [
        plan_revision(
            content=b.content,
            topic=TOPIC,
            revision=i % 3,
            supersedes=Supersedes(i % 3 - 1, "ab" * 32) if i % 3 else None,
            close_reason="watermark",
            uri_of=lambda key: f"s3://bucket/{key}",
            pipeline_version="test",
            pack=pack,
            payload=b.payload,
        )
        for i, b in enumerate(build_all(list(days.items())))
    ]


def _plan(revisions: list[PlannedRevision]) -> dict:
    rejected = classify(
        SourceMessage(TOPIC, 1, 7, b"00433", b'{"x":"\\u00e9\\n"}', 5), WindowSpec()
    )
    first = Cursor.empty(TOPIC, 86_400)
    after = replace(first, runs=1)
    entries = run_entries(
        topic=TOPIC,
        revisions=revisions,
        cursor=first,
        next_cursor=after,
        quarantined=[rejected],
        unattributable=[],
        held_open={},
        now=datetime(2026, 12, 3, tzinfo=UTC),
        layout="pack",
        checkpoint_pack=PACK,
    )
    return pending_document(
        TOPIC,
        revisions,
        [quarantine_doc(rejected)],
        after.to_json(),
        log=log_plan("example.org/streamnotary/dwd.obs", 0, entries),
    )


def test_the_spliced_plan_is_the_plan_serialized_whole(revisions: list[PlannedRevision]) -> None:
    pending = _plan(revisions)
    forms = [r.checkpoint_bytes for r in revisions]
    assert len(revisions) == 40
    assert plan_bytes(pending, forms) == document_bytes(pending)
    empty = pending_document(TOPIC, [], [], Cursor.empty(TOPIC, 86_400).to_json())
    assert plan_bytes(empty, []) == document_bytes(empty)
    # anything but one form per window: serialized whole, never a wrong splice
    assert plan_bytes(pending, forms[:-1]) == document_bytes(pending)
    assert plan_bytes({**pending, "zz": 1}, forms) == document_bytes({**pending, "zz": 1})


def test_packs_and_window_entries_from_the_serialized_checkpoints(
    revisions: list[PlannedRevision],
) -> None:
    pending = _plan(revisions)
    windows, log = pending["windows"], pending["log"]
    forms = [r.checkpoint_bytes for r in revisions]
    packs = plan_checkpoint_packs(TOPIC, windows, log)
    assert list(packs) == [PACK] and plan_checkpoint_packs(TOPIC, windows, log, forms) == packs
    # the logged spans and digests still judge the given bytes
    forged = [forms[0].replace(b'"revision":0', b'"revision":9'), *forms[1:]]
    with pytest.raises(CheckpointPackError):
        plan_checkpoint_packs(TOPIC, windows, log, forged)
    for r, w in zip(revisions, windows, strict=True):
        digest = hashlib.sha256(r.checkpoint_bytes).hexdigest()
        assert digest == r.digest == checkpoint_digest(w["checkpoint"])
        args = (TOPIC, r.key, r.revision, w["checkpoint"], 3, 41)
        assert window_entry(*args, digest=digest) == window_entry(*args)
