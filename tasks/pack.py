"""Run-level payload packs (layout "pack"): one object per run, the windows' payloads back to back.

Object stores charge per request, and a run of small windows spent most of its time in one
PUT per window payload (issue 10). A pack is written with one PUT; each window's payload
inside it is still a complete, deterministic Parquet file, addressed by its checkpoint as
(pack key, byte offset, length = size, SHA-256), so a reader fetches exactly one window
with a ranged GET and checks it as before. The pack's bytes are a function of the plan:
the payloads in the plan's window order, so a resumed run rewrites it byte-identically.

Pure: no I/O (the readers' ranged GET is `storage.objectstore.read_payload`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import layout
from tasks.window import WindowKey


class PackError(ValueError):
    """A checkpoint's pack reference is unusable, or a pack does not match its plan."""


class PackBuilder:
    """Accumulates one run's payloads; `add` returns the payload's byte offset in the pack."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._parts: list[bytes] = []
        self._count = 0
        self.size = 0

    def add(self, payload: bytes) -> int:
        offset = self.size
        self._parts.append(payload)
        self._count += 1
        self.size += len(payload)
        return offset

    def __len__(self) -> int:
        return self._count

    def data(self) -> bytes:
        """The pack's bytes. The parts are let go for the joined copy, so that a run holds
        its payloads once, not twice, while it writes them."""
        joined = b"".join(self._parts)
        self._parts = [joined] if joined else []
        return joined


@dataclass(frozen=True, slots=True)
class PayloadLocation:
    """Where a window revision's payload bytes are: a whole object, or a range of a pack."""

    key: str
    offset: int | None = None  # None: the whole object at `key` (layout per_window)
    length: int | None = None

    @property
    def packed(self) -> bool:
        return self.offset is not None


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def payload_location(
    topic: str, key: WindowKey, revision: int, checkpoint: Mapping[str, Any] | None
) -> PayloadLocation:
    """The payload of (`key`, `revision`) as its checkpoint addresses it.

    A checkpoint without a ``payload.pack`` member (layout per_window, and every checkpoint
    written before packs) names the per-window key. A pack reference is hostile input
    (the bucket is writable): it must name a pack of this topic with a non-negative
    offset and size, else `PackError`.
    """
    payload = checkpoint.get("payload") if isinstance(checkpoint, Mapping) else None
    pack = payload.get("pack") if isinstance(payload, Mapping) else None
    if pack is None:
        return PayloadLocation(layout.payload_key(topic, key, revision))
    if not isinstance(pack, Mapping):
        raise PackError("checkpoint payload.pack is not an object")
    pkey, offset, size = pack.get("key"), pack.get("offset"), payload.get("size")
    if not isinstance(pkey, str) or not layout.is_pack_key(topic, pkey):
        raise PackError(f"checkpoint names {pkey!r}, not a pack of topic {topic!r}")
    if not (_count(offset) and _count(size)):
        raise PackError(f"checkpoint pack range {offset!r}+{size!r} is not two counts")
    return PayloadLocation(pkey, offset, size)


def plan_pack(checkpoints: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Pack key -> the indexes (into `checkpoints`) of the windows it holds, in plan order.

    Windows of the per-window layout are left out. A plan's pack must be contiguous: each
    payload starts where the previous one ends, from 0 (`PackError` otherwise), so the
    pack is exactly the concatenation of the listed payloads.
    """
    packs: dict[str, list[int]] = {}
    ends: dict[str, int] = {}
    for i, cp in enumerate(checkpoints):
        pack = cp["payload"].get("pack")
        if pack is None:
            continue
        key, offset = pack["key"], pack["offset"]
        if offset != ends.get(key, 0):
            raise PackError(f"pack {key}: payload {i} starts at {offset}, not {ends.get(key, 0)}")
        ends[key] = offset + cp["payload"]["size"]
        packs.setdefault(key, []).append(i)
    return packs
