"""Valid inputs of every fuzz target, built from the packaged real DWD data.

Fuzzers find deep bugs by mutating valid inputs, so each target starts from genuine ones:
canonical records and Kafka messages of real observations, real product lines and
metadata, a DWD zip archive, a proof bundle of a real window (built with the pipeline's
own functions and a local ledger in a temp dir, so it follows the current formats), and
signed log checkpoints and entries. Built on first use and cached.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tasks.dwd import demo_files, read_observations
from tasks.record import Observation, canonical_bytes
from tasks.window import WindowSpec

SPEC = WindowSpec(86_400)
STATION = "00433"


def _product() -> Path:
    return next(p for p in demo_files() if p.stem.endswith(STATION))


@functools.cache
def observations() -> tuple[Observation, ...]:
    """The first two days of station 00433 (48 real hourly observations)."""
    return tuple(list(read_observations(_product()))[:48])


def records() -> list[bytes]:
    obs = observations()
    return [canonical_bytes(o) for o in obs[:8]] + [
        json.dumps(json.loads(canonical_bytes(obs[9])), indent=1).encode(),  # same, not canonical
    ]


def message_seed(key: bytes | None, value: bytes | None, ts: int | None) -> bytes:
    """The byte encoding `fuzz.targets.message` reads (see `decode_message`)."""
    flags = (key is not None) | (value is not None) << 1 | (ts is not None) << 2
    k = key or b""
    return (
        bytes([flags])
        + (ts or 0).to_bytes(8, "big", signed=True)
        + len(k).to_bytes(1, "big")
        + k
        + (value or b"")
    )


def messages() -> list[bytes]:
    obs = observations()
    out = []
    for o in obs[:6]:
        ts = int(o.observed_at.timestamp() * 1000)
        out.append(message_seed(o.station_id.encode(), canonical_bytes(o), ts))
    out.append(message_seed(b"00433", b"{broken", 253_402_300_800_000))
    out.append(message_seed(None, canonical_bytes(obs[0]), None))
    return out


@functools.cache
def product_text() -> str:
    """Header and the first 30 rows of a real product file."""
    return "".join(_product().read_text("latin-1").splitlines(keepends=True)[:31])


def metadata_text() -> str:
    return _product().with_name(f"Metadaten_Parameter_tu_stunde_{STATION}.txt").read_text("latin-1")


def dwd_lines() -> list[bytes]:
    """`metadata \\x00 product` texts, as the `dwd_lines` target splits them."""
    return [
        (metadata_text() + "\x00" + product_text()).encode("latin-1"),
        ("\x00" + product_text()).encode("latin-1"),
    ]


def dwd_files() -> list[bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_product().name, product_text())
        zf.writestr(f"Metadaten_Parameter_tu_stunde_{STATION}.txt", metadata_text())
    return [buf.getvalue(), product_text().encode("latin-1")]


@functools.cache
def bundle() -> dict[str, Any]:
    """A genuine proof bundle v1 of one real window (a batch anchor, as earlier versions
    made them: both verifiers keep reading v1), anchored on a throwaway local ledger."""
    from storage import layout
    from storage.ledger.local import LocalLedger
    from tasks.message import SourceMessage, classify
    from tasks.proof_bundle import LedgerEvidence, make_bundle
    from tasks.revision import (
        batch_entry,
        legacy_receipt,
        legacy_window_entry,
        make_batch,
        plan_revision,
    )
    from tasks.window_content import build_window

    obs = observations()
    days: dict[Any, list[Any]] = {}
    for i, o in enumerate(obs):
        msg = SourceMessage(
            "dwd", 0, i, b"00433", canonical_bytes(o), int(o.observed_at.timestamp() * 1000)
        )
        c = classify(msg, SPEC)
        days.setdefault(c.window, []).append(c)
    contents = [build_window(key, items) for key, items in sorted(days.items())]
    planned = [
        plan_revision(
            content=content,
            topic="dwd",
            revision=0,
            supersedes=None,
            close_reason="watermark",
            uri_of=lambda k: f"s3://bucket/{k}",
            pipeline_version="fuzz",
        )
        for content in contents
    ]
    batch = make_batch("dwd", planned)
    target = planned[-1]
    with tempfile.TemporaryDirectory() as tmp, LocalLedger(Path(tmp) / "l.sqlite3") as ledger:
        b_entry = batch_entry(batch)
        w_entry = legacy_window_entry("dwd", target.key, 0, target.checkpoint, batch.root.hex())
        b_ref, w_ref = ledger.anchor(b_entry), ledger.anchor(w_entry)
        rc = legacy_receipt("dwd", target.key, 0, target.digest, batch, b_ref, w_ref)
        leaves = [canonical_bytes(r) for r in contents[-1].records]  # the target's records
        out = make_bundle(
            leaves=leaves,
            index=5,
            checkpoint=target.checkpoint,
            receipt=rc,
            batch_entry=LedgerEvidence(b_ref.to_json(), b_entry.body),
            window_entry=LedgerEvidence(w_ref.to_json(), w_entry.body),
        )
    assert layout.batch_entry_key("dwd", batch.root.hex()) == b_ref.key
    return out


def bundles() -> list[bytes]:
    return [json.dumps(bundle()).encode()]


def object_names() -> list[bytes]:
    return [
        b"checkpoints/dwd/00433/20180924T000000Z_86400s/r0000.json",
        b"payloads/dwd/00433/20180925T000000Z_86400s/r0001.parquet",
        b"receipts/dwd/00433/20180924T000000Z_3600s/r0000.json",
        b"checkpoints/dwd/00433/README.json",
    ]


def checkpoints() -> list[bytes]:
    b = bundle()
    return [json.dumps(b["checkpoint"]).encode(), json.dumps(b["ledger"]).encode()]


@functools.cache
def signer() -> Any:
    from tasks.tlog.note import Signer

    return Signer("streamnotary/dwd", bytes(range(32)))


def log_entries() -> list[bytes]:
    """Entry bundles (uint16 length || canonical entry bytes) of a window and a run entry."""
    from tasks.tlog.entries import entry_bytes, run_entry, window_entry
    from tasks.tlog.tiles import encode_bundle

    b = bundle()
    window = window_entry(
        topic="dwd",
        window_id=b["checkpoint"]["window"]["id"],
        revision=0,
        checkpoint_digest=b["checkpoint_digest"],
        ranges={0: [(24, 48)]},
        supersedes=None,
        closed_at="2018-09-26T02:00:00Z",
        run=1,
    )
    run = run_entry(
        topic="dwd",
        run=1,
        read={0: (0, 50)},
        quarantined={0: [48]},
        unattributable={0: [49]},
        held_open={},
        cursor_digest="ab" * 32,
        anchored_at="2018-09-26T02:00:01Z",
    )
    return [encode_bundle([entry_bytes(window), entry_bytes(run)])]


def log_checkpoints() -> list[bytes]:
    from tasks.tlog.checkpoint import LogCheckpoint, sign_checkpoint

    head = LogCheckpoint("streamnotary/dwd", 2, bytes(range(32)))
    return [sign_checkpoint(head, signer())]
