"""Window contents and payloads built in chunks, as compact bytes: the unit of parallel work.

Building a window (dedup, canonical order, Merkle root, aggregates) and encoding its
Parquet payload are independent per window and are most of a run's CPU time, so
`flows/window_build.py` hands them to Dask workers in chunks. A chunk crosses the process
boundary as ONE `bytes` object each way (pickled here, once), never as a list of records:
Prefect walks every task parameter and result (`visit_collection`, see
`tasks.steps.unwalked`) and Dask would otherwise serialize thousands of small objects one
by one. Bytes are a leaf to both.

The worker calls exactly the function the serial path calls (`build_all`), with the
same inputs, so a chunk's results are the same objects and the same payload bytes as a
serial run: same roots, same checkpoint digests, same log.
Checkpoints are still built by the caller (they name object URIs and revisions, which
only the run knows).

Pickle is used because both ends are this program (the parent and its own Dask workers,
which exchange pickles anyway); nothing read from Kafka, the bucket or a user is ever
unpickled here. Pure: no I/O, no Prefect.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tasks.message import Classified
from tasks.payload import encode_payloads
from tasks.record import Observation
from tasks.window import WindowKey
from tasks.window_content import WindowContent, build_window

# Windows per chunk at most: bounds one task's memory (its messages, records and payloads).
MAX_CHUNK_WINDOWS = 2_000
# Chunks per worker: enough to even out windows of different sizes, few enough that
# per-task overhead (a Prefect task run, a Dask round trip) stays small.
CHUNKS_PER_WORKER = 2
# Windows per batch handed to a payload encoder (`build_all`): small enough that the last
# batch, which nothing overlaps, is short; large enough that a batch's hand-over is cheap.
OVERLAP_WINDOWS = 250


@dataclass(frozen=True, slots=True)
class Built:
    """One window's content and its payload bytes."""

    content: WindowContent
    payload: bytes


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What a worker returns for one chunk, and how long its two stages took there."""

    built: list[Built]
    window_s: float
    parquet_s: float


class PendingBatch(Protocol):
    """A submitted batch's payloads, once encoded."""

    def result(self) -> list[bytes]: ...


class PayloadSubmitter(Protocol):
    """Encodes batches of payloads elsewhere (`tasks.payload_process.PayloadEncoder`)."""

    def submit(self, windows: Sequence[Sequence[Observation]]) -> PendingBatch: ...


def build_all(
    windows: Sequence[tuple[WindowKey, Sequence[Classified]]],
    encoder: PayloadSubmitter | None = None,
) -> list[Built]:
    """Every window's content and payload (`encode_payloads`: the bytes of `encode_payload`
    per window), in order. The serial path and the Dask workers call this.

    With an `encoder`, each batch of `OVERLAP_WINDOWS` windows goes to it as soon as the
    batch is built, and the next batch is built while it encodes: same bytes, less time.
    """
    if encoder is None:
        return _built([build_window(key, items) for key, items in windows])
    contents: list[WindowContent] = []
    pending: list[PendingBatch] = []
    for i in range(0, len(windows), OVERLAP_WINDOWS):
        batch = [build_window(key, items) for key, items in windows[i : i + OVERLAP_WINDOWS]]
        pending.append(encoder.submit([c.records for c in batch]))
        contents += batch
    payloads = [p for batch in pending for p in batch.result()]
    return [Built(c, p) for c, p in zip(contents, payloads, strict=True)]


def _built(contents: list[WindowContent]) -> list[Built]:
    payloads = encode_payloads([c.records for c in contents])
    return [Built(c, p) for c, p in zip(contents, payloads, strict=True)]


def split(
    windows: Sequence[tuple[WindowKey, Sequence[Classified]]],
    workers: int,
    max_chunk: int = MAX_CHUNK_WINDOWS,
) -> list[list[tuple[WindowKey, Sequence[Classified]]]]:
    """Consecutive chunks of about equal size, in order (results are joined in order)."""
    if not windows:
        return []
    count = max(workers * CHUNKS_PER_WORKER, math.ceil(len(windows) / max_chunk))
    size = math.ceil(len(windows) / min(count, len(windows)))
    return [list(windows[i : i + size]) for i in range(0, len(windows), size)]


def pack_chunk(chunk: Sequence[tuple[WindowKey, Sequence[Classified]]]) -> bytes:
    """A chunk of windows (key and classified messages) as one bytes object."""
    return pickle.dumps([(k, list(items)) for k, items in chunk], protocol=5)


def build_chunk(blob: bytes) -> bytes:
    """Worker side: build every window of a packed chunk; the results packed again."""
    windows: list[tuple[WindowKey, list[Classified]]] = pickle.loads(blob)
    t0 = time.perf_counter()
    contents = [build_window(key, items) for key, items in windows]
    t1 = time.perf_counter()
    built = _built(contents)
    t2 = time.perf_counter()
    return pickle.dumps(ChunkResult(built, t1 - t0, t2 - t1), protocol=5)


def unpack_result(blob: bytes) -> ChunkResult:
    """Parent side: a worker's packed `ChunkResult` (produced by `build_chunk`)."""
    result = pickle.loads(blob)
    if not isinstance(result, ChunkResult):
        raise TypeError(f"a window chunk returned {type(result).__name__}, not ChunkResult")
    return result
