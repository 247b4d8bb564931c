"""Deterministic object keys and ledger keys.

Like Confluent's S3 sink, every name is a function of the window (topic, station,
window start and size, revision), never of the run or the clock. A retry therefore
writes to the same keys, finds its own earlier work, and overwrites nothing.

    payloads/<topic>/<station>/<window start>_<size>s/r<rev>.parquet   (layout per_window)
    packs/<topic>/run-<run, 10 digits>.pack  (layout pack: the run's payloads back to back)
    packs/<topic>/run-<run, 10 digits>.checkpoints  (layout pack: the run's checkpoints)
    checkpoints/<topic>/<station>/<window start>_<size>s/r<rev>.json
    receipts/<topic>/<station>/<window start>_<size>s/r<rev>.json
    quarantine/<topic>/run-<run, 10 digits>.json  (the run's rejected messages, one document)
    batches/<topic>/<batch root hex>.json
    state/<topic>/cursor.json        (the only object that is overwritten)
    state/<topic>/pending.json       (write-ahead plan of an unfinished run)
    state/<topic>/pending.sig        (the log key's signature over that plan)
    log/<topic>/...                  (the anchor log, storage/tlog.py)
    state/<topic>/lease.json         (the one-writer lease, while a run holds it)
    state/<topic>/held/<sha256>.json (messages of still-open windows, named by the cursor)

The state, log, pack, quarantine, head and window keys take a *scope name* where they say
`topic`: the topic itself, or ``<topic>/<group>`` for a partition group
(`tasks.groups.LogScope`), which gives ``state/<topic>/<group>/cursor.json``,
``packs/<topic>/<group>/run-….pack``, ``head/<topic>/<group>/<size>``,
``quarantine/<topic>/<group>/run-….json``, ``checkpoints/<topic>/<group>/<station>/…`` and
the ledger key ``window/<topic>/<group>/<window id>/r<rev>``. A window is per group: a
producer that does not key by station puts one station's hour in two groups' partitions,
and each group anchors its own part of that window, under its own keys, in its own log
(a group owns partitions, never windows). (Group names start with ``p``, station ids are
digits, so ``<topic>/<group>/<station>`` and ``<topic>/<station>`` never read as each
other.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tasks.window import WindowKey


def _window_dir(topic: str, key: WindowKey) -> str:
    return f"{topic}/{key.station_id}/{key.start:%Y%m%dT%H%M%SZ}_{key.size_seconds}s"


def payload_key(topic: str, key: WindowKey, revision: int) -> str:
    return f"payloads/{_window_dir(topic, key)}/r{revision:04d}.parquet"


def pack_key(topic: str, run: int) -> str:
    """The payload pack of the topic's run number `run` (the plan's next cursor's ``runs``).

    A function of the run, not of the clock: a killed run that resumes writes the same
    pack, byte for byte, to the same key (write-once).
    """
    return f"packs/{topic}/run-{run:010d}.pack"


def packs_prefix(topic: str) -> str:
    return f"packs/{topic}/"


def is_pack_key(topic: str, object_key: str) -> bool:
    """Whether `object_key` is named like a pack of `topic` (`pack_key`), or of one of its
    partition groups (``packs/<topic>/<group>/run-….pack``, `tasks.groups.group_name`)."""
    name = object_key.removeprefix(packs_prefix(topic))
    group, _, rest = name.rpartition("/")
    if group:
        if not is_group_name(group):
            return False
        name = rest
    return (
        object_key.startswith(packs_prefix(topic))
        and len(name) == len("run-0000000000.pack")
        and name.startswith("run-")
        and name.endswith(".pack")
        and name[4:14].isdigit()
    )


def is_group_name(text: str) -> bool:
    """``p0_1``: the name `tasks.groups.group_name` gives (partitions joined by ``_``)."""
    parts = text[1:].split("_")
    return text.startswith("p") and all(p.isdigit() and p.isascii() for p in parts)


def checkpoint_pack_key(scope: str, run: int) -> str:
    """The checkpoint pack of run `run` of a scope (the topic, or ``<topic>/<group>``;
    tasks/checkpoint_pack.py): like the payload pack, a function of the run, so a resumed
    run rewrites the same object."""
    return f"packs/{scope}/run-{run:010d}.checkpoints"


def is_checkpoint_pack_key(topic: str, object_key: str, run: int) -> bool:
    """Whether `object_key` is the checkpoint pack of run `run` of `topic` or of one of its
    partition groups (``packs/<topic>/<group>/run-….checkpoints``)."""
    name = object_key.removeprefix(packs_prefix(topic))
    group, _, rest = name.rpartition("/")
    if group and not is_group_name(group):
        return False
    return object_key.startswith(packs_prefix(topic)) and rest == f"run-{run:010d}.checkpoints"


def checkpoint_key(topic: str, key: WindowKey, revision: int) -> str:
    return f"checkpoints/{_window_dir(topic, key)}/r{revision:04d}.json"


def receipt_key(topic: str, key: WindowKey, revision: int) -> str:
    return f"receipts/{_window_dir(topic, key)}/r{revision:04d}.json"


def receipts_prefix(topic: str, station_id: str | None = None) -> str:
    return f"receipts/{topic}/" + (f"{station_id}/" if station_id else "")


def window_receipts_prefix(topic: str, key: WindowKey) -> str:
    return f"receipts/{_window_dir(topic, key)}/"


def checkpoints_prefix(topic: str, station_id: str | None = None) -> str:
    return f"checkpoints/{topic}/" + (f"{station_id}/" if station_id else "")


def window_checkpoints_prefix(topic: str, key: WindowKey) -> str:
    return f"checkpoints/{_window_dir(topic, key)}/"


def shared_listings(window_prefixes: Iterable[str]) -> dict[str, list[str]]:
    """Listing prefix -> the window prefixes (each ending in '/') one LIST of it covers.

    A run with late data looks for per-window objects of every late window; one LIST per
    window cost ~2.5 ms of round trip and client work each (SeaweedFS), ~22,000 of them in
    a 10M-row backfill. Late windows come in runs of one station's consecutive days, so
    the windows of one station directory share one LIST: of their longest common prefix,
    which for days of one month or year narrows it to that month or year. A window alone
    keeps its own prefix. The caller files each listed key under its window by the key's
    directory, so a prefix that ends mid-name finds nothing it should not.
    """
    by_station: dict[str, list[str]] = {}
    for prefix in window_prefixes:
        station_dir = prefix.rstrip("/").rpartition("/")[0] + "/"
        by_station.setdefault(station_dir, []).append(prefix)
    # a character prefix, not a path: S3 and the local store list by string prefix
    return {os.path.commonprefix(members): members for members in by_station.values()}  # noqa: RUF071


def revision_of(object_key: str) -> int:
    """Revision number from a payload/checkpoint/receipt key (``.../r0003.json`` -> 3)."""
    name = object_key.rsplit("/", 1)[-1]
    return int(name[1:5])


def quarantine_key(scope: str, run: int) -> str:
    """The rejected messages of the scope's run number `run`, in one document.

    One object per run, not per message: a producer that floods the topic with junk would
    otherwise cost one PUT per junk message (34,000 junk messages took ~70 s of PUTs).
    Named by the run like the packs, so a resumed run writes the same bytes to the same key.
    (Earlier versions wrote ``quarantine/<topic>/p<partition>/<offset>.json``.)
    """
    return f"quarantine/{scope}/run-{run:010d}.json"


def batch_key(topic: str, batch_root_hex: str) -> str:
    return f"batches/{topic}/{batch_root_hex}.json"


def cursor_key(topic: str) -> str:
    return f"state/{topic}/cursor.json"


def pending_key(topic: str) -> str:
    return f"state/{topic}/pending.json"


def pending_note_key(topic: str) -> str:
    """The log key's signature over the write-ahead plan (a C2SP signed note)."""
    return f"state/{topic}/pending.sig"


def held_key(topic: str, sha256_hex: str) -> str:
    return f"state/{topic}/held/{sha256_hex}.json"


def lease_key(topic: str) -> str:
    return f"state/{topic}/lease.json"


def window_entry_key(topic: str, key: WindowKey, revision: int) -> str:
    """Ledger idempotency key of a window revision's entry."""
    return f"window/{topic}/{key.window_id}/r{revision}"


def batch_entry_key(topic: str, batch_root_hex: str) -> str:
    """Ledger idempotency key of a batch entry."""
    return f"batch/{topic}/{batch_root_hex}"


def head_entry_key(topic: str, size: int) -> str:
    """Ledger idempotency key of an anchored log head: one head per tree size, so a second,
    different head of the same size conflicts on every ledger that enforces keys."""
    return f"head/{topic}/{size}"
