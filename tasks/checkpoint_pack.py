"""Run-level checkpoint packs (layout "pack"): one object per run holding its checkpoints.

After payload packs, the demo's anchor run still spent most of its object time on one
write-once PUT per checkpoint (1,100 of them, issue 10). A checkpoint pack
(`streamnotary.checkpoint-pack/1`, docs/formats.md) is the run's checkpoints, each as its
RFC 8785 bytes followed by one ``\\n``, in the plan's window order, written with one PUT
to ``packs/<topic>/run-<run>.checkpoints``.

Where each checkpoint sits is recorded in trusted data: the revision's window entry in
the signed anchor log (and so in the signed write-ahead plan) carries a ``checkpoint``
locator ``{key, offset, length}``, and its ``checkpoint_digest`` is the SHA-256 of exactly
those bytes. A reader therefore never trusts the bucket for where or what: it checks that
the locator names this run's pack, that the range lies inside the object it read and
that the bytes hash to the logged digest (`CheckpointPackError` otherwise). Entries
without a locator (layout per_window, and every run before packs) name the per-window
object ``checkpoints/...``, as before. The pack is a function of the plan, so a killed
run that resumes writes it byte for byte again (write-once).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import layout
from tasks.canonical import DocumentError, canonical_json, parse_document

CHECKPOINT_PACK_FORMAT = "streamnotary.checkpoint-pack/1"
SEPARATOR = b"\n"  # RFC 8785 bytes never hold a raw newline: the pack is also JSON Lines
MAX_CHECKPOINT_BYTES = 1 << 20  # a checkpoint is ~1.5 KB; refuse absurd hostile ranges


class CheckpointPackError(ValueError):
    """A checkpoint locator is unusable, or the pack does not hold the logged checkpoint."""


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Where one window revision's checkpoint is inside its run's pack, and its digest."""

    key: str
    offset: int
    length: int
    digest: str

    @property
    def uri_suffix(self) -> str:
        return f"#bytes={self.offset}+{self.length}"


def locator(key: str, offset: int, length: int) -> dict[str, Any]:
    """The ``checkpoint`` member of a window log entry (log_entry.schema.json)."""
    return {"key": key, "offset": offset, "length": length}


def build_pack(checkpoints: Sequence[Mapping[str, Any]]) -> tuple[bytes, list[tuple[int, int]]]:
    """The pack of `checkpoints` (in this order) and each one's (offset, length) in it."""
    return join_pack([canonical_json(dict(cp)) for cp in checkpoints])


def join_pack(serialized: Sequence[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """`build_pack` of checkpoints already in their canonical bytes (a fresh run serialized
    each one once, for its digest)."""
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    for data in serialized:
        parts += [data, SEPARATOR]
        spans.append((offset, len(data)))
        offset += len(data) + len(SEPARATOR)
    return b"".join(parts), spans


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def checkpoint_ref(topic: str, entry: Mapping[str, Any]) -> CheckpointRef | None:
    """The pack reference of a window log entry; None when it names the per-window object.

    The locator must name the checkpoint pack of this topic (or of one of its partition
    groups) *and of the entry's run*,
    with a non-negative offset and a length of 1 byte to `MAX_CHECKPOINT_BYTES`; anything
    else is `CheckpointPackError` (never a read of some other object).
    """
    where = entry.get("checkpoint")
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise CheckpointPackError("the log entry's checkpoint locator is not an object")
    key, offset, length = where.get("key"), where.get("offset"), where.get("length")
    run, digest = entry.get("run"), entry.get("checkpoint_digest")
    if type(run) is not int or run < 1 or not isinstance(digest, str):
        raise CheckpointPackError("the log entry names no run or no checkpoint digest")
    if not isinstance(key, str) or not layout.is_checkpoint_pack_key(topic, key, run):
        raise CheckpointPackError(
            f"the log entry locates its checkpoint in {key!r}, not in the checkpoint pack "
            f"of run {run} of topic {topic!r}"
        )
    if not (_count(offset) and _count(length)) or not 0 < length <= MAX_CHECKPOINT_BYTES:
        raise CheckpointPackError(f"checkpoint range {offset!r}+{length!r} is not usable")
    return CheckpointRef(key, offset, length, digest)


def extract(pack: bytes, ref: CheckpointRef) -> dict[str, Any]:
    """The checkpoint `ref` locates in `pack` (the object's bytes), checked by its digest."""
    end = ref.offset + ref.length
    if end > len(pack):
        raise CheckpointPackError(
            f"bytes {ref.offset}+{ref.length} are outside the checkpoint pack {ref.key} "
            f"({len(pack)} bytes)"
        )
    return decode(pack[ref.offset : end], ref)


def decode(data: bytes, ref: CheckpointRef) -> dict[str, Any]:
    """The checkpoint in `data`, the bytes a ranged read of `ref` returned, checked."""
    if len(data) != ref.length:
        raise CheckpointPackError(
            f"bytes {ref.offset}+{ref.length} are outside the checkpoint pack {ref.key} "
            f"(a ranged read returned {len(data)} bytes)"
        )
    if hashlib.sha256(data).hexdigest() != ref.digest:
        raise CheckpointPackError(
            f"bytes {ref.offset}+{ref.length} of {ref.key} do not hash to the logged "
            f"checkpoint digest {ref.digest[:16]}..."
        )
    try:
        doc = parse_document(data)
    except (DocumentError, RecursionError) as exc:
        raise CheckpointPackError(f"checkpoint in {ref.key} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CheckpointPackError(f"checkpoint in {ref.key} is not a JSON object")
    return doc


def plan_checkpoint_packs(
    topic: str,
    windows: Sequence[Mapping[str, Any]],
    log: Mapping[str, Any] | None,
    serialized: Sequence[bytes] | None = None,
) -> dict[str, bytes]:
    """Pack key -> the bytes of each checkpoint pack a write-ahead plan calls for.

    The pack holds the plan's packed checkpoints in plan order; every locator in the
    plan's log entries must describe it exactly (`CheckpointPackError` otherwise), so a
    resumed run writes the very bytes the log entries address. Plans whose log entries
    carry no locator (per_window, earlier versions) call for none. `serialized`: the
    canonical bytes of each window's checkpoint, in plan order, if the caller has them.
    """
    if not log:
        return {}
    refs = {
        (e["window_id"], e["revision"]): checkpoint_ref(topic, e)
        for e in log["entries"]
        if e["type"] == "window"
    }
    if serialized is not None and len(serialized) != len(windows):
        raise ValueError("one serialized checkpoint per planned window is needed")
    members: dict[str, list[Mapping[str, Any]]] = {}
    forms: dict[str, list[bytes]] = {}
    for i, w in enumerate(windows):
        ref = refs.get((w["window_id"], w["revision"]))
        if ref is not None:
            members.setdefault(ref.key, []).append(w)
            form = canonical_json(dict(w["checkpoint"])) if serialized is None else serialized[i]
            forms.setdefault(ref.key, []).append(form)
    out: dict[str, bytes] = {}
    for key, ws in members.items():
        data, spans = join_pack(forms[key])
        for w, (offset, length) in zip(ws, spans, strict=True):
            ref = refs[(w["window_id"], w["revision"])]
            assert ref is not None
            if (ref.offset, ref.length) != (offset, length):
                raise CheckpointPackError(
                    f"{w['window_id']} r{w['revision']}: the plan's log entry locates its "
                    f"checkpoint at {ref.offset}+{ref.length}, the pack has it at "
                    f"{offset}+{length}"
                )
            if hashlib.sha256(data[offset : offset + length]).hexdigest() != ref.digest:
                raise CheckpointPackError(
                    f"{w['window_id']} r{w['revision']}: the plan's checkpoint does not hash "
                    "to the digest its log entry names"
                )
        out[key] = data
    return out


def packed_windows(topic: str, log: Mapping[str, Any] | None) -> set[tuple[str, int]]:
    """(window id, revision) of every plan window whose checkpoint goes into a pack."""
    if not log:
        return set()
    return {
        (e["window_id"], e["revision"])
        for e in log["entries"]
        if e["type"] == "window" and checkpoint_ref(topic, e) is not None
    }
