"""Deterministic Parquet payloads (format `streamnotary.payload/1`).

A payload holds one window revision's canonical records, in canonical order, under a
fixed Arrow schema and fixed writer settings. With the pinned pyarrow the same records
always give byte-identical files, so the payload's SHA-256 can be anchored, and decoding
the payload and re-serializing each row canonically reproduces the window's Merkle root.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.record import Observation, RecordRejected, canonical_bytes, validate
from tasks.stage_timing import PARQUET, timed

PAYLOAD_FORMAT = "parquet/streamnotary.payload/1"

SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("observed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("temperature_c_tenths", pa.int16(), nullable=True),
        pa.field("relative_humidity_pct_tenths", pa.int16(), nullable=True),
        pa.field("quality_level", pa.int8(), nullable=False),
    ],
    metadata={b"streamnotary.format": PAYLOAD_FORMAT.encode()},
)

# Every setting that influences the bytes is fixed here; none is left to library defaults
# that might change between pyarrow releases without a version pin noticing.
_WRITER_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": False,
    "write_statistics": True,
    "data_page_version": "1.0",
    "version": "2.6",
    "row_group_size": 1_048_576,
    "data_page_size": 1_048_576,
    "write_page_index": False,
    "write_page_checksum": False,
    "store_schema": True,
}


class PayloadError(ValueError):
    """A payload cannot be decoded into canonical records."""


# Windows whose columns are built as one table in `encode_payloads`: bounds its memory
# (a few MB of columns), while the per-table cost is shared by this many payloads.
PAYLOAD_BATCH_WINDOWS = 2_000


def _table(records: Sequence[Observation]) -> pa.Table:
    """The records as one Arrow table of the payload schema, in the given order."""
    return pa.table(
        {
            "station_id": pa.array([r.station_id for r in records], pa.string()),
            "observed_at": pa.array(
                [int(r.observed_at.timestamp()) * 1000 for r in records],
                pa.timestamp("ms", tz="UTC"),
            ),
            "temperature_c_tenths": pa.array([r.temperature_tenths for r in records], pa.int16()),
            "relative_humidity_pct_tenths": pa.array(
                [r.humidity_tenths for r in records], pa.int16()
            ),
            "quality_level": pa.array([r.quality_level for r in records], pa.int8()),
        },
        schema=SCHEMA,
    )


def _write(table: pa.Table) -> bytes:
    # an Arrow buffer, not io.BytesIO: the writer then never calls back into Python
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **_WRITER_OPTIONS)
    return sink.getvalue().to_pybytes()


@timed(PARQUET)
def encode_payload(records: Sequence[Observation]) -> bytes:
    """Parquet bytes for records already in canonical order (see `tasks.dedup`)."""
    return _write(_table(records))


@timed(PARQUET)
def encode_payloads(windows: Sequence[Sequence[Observation]]) -> list[bytes]:
    """`encode_payload` of every window's records, in order: the same bytes, cheaper.

    A run encodes thousands of ~24-record payloads; building five Arrow arrays per payload
    cost a quarter of the Parquet stage. Here the columns of up to `PAYLOAD_BATCH_WINDOWS`
    windows are built once and each payload is written from a zero-copy slice: Parquet
    stores values, not the arrays' buffer offsets, so a slice writes the bytes a table of
    the same rows writes (tests/test_payload.py proves it, empty windows included).
    """
    out: list[bytes] = []
    for i in range(0, len(windows), PAYLOAD_BATCH_WINDOWS):
        out += encode_slices(*batch_table(windows[i : i + PAYLOAD_BATCH_WINDOWS]))
    return out


def batch_table(windows: Sequence[Sequence[Observation]]) -> tuple[pa.Table, list[int]]:
    """The records of consecutive windows as one table, and each window's row count."""
    return _table([r for records in windows for r in records]), [len(r) for r in windows]


def encode_slices(table: pa.Table, lengths: Sequence[int]) -> list[bytes]:
    """One payload per consecutive slice of `table` of the given lengths (`batch_table`).

    Bytes in, bytes out and nothing else: helper processes run this too
    (`tasks.payload_process`), on a table that crossed the process boundary as buffers.
    """
    out: list[bytes] = []
    start = 0
    for n in lengths:
        out.append(_write(table.slice(start, n)))
        start += n
    return out


def decode_payload(data: bytes) -> list[Observation]:
    """Read payload bytes back into validated observations, in stored order."""
    try:
        # one file, not a dataset: `pq.read_table` would set up the dataset machinery for
        # every payload (936 µs against 262 µs for a day's 24 rows; the same table)
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError) as exc:
        raise PayloadError(f"not a readable Parquet payload: {exc}") from exc
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise PayloadError(f"payload schema differs from {PAYLOAD_FORMAT}: {table.schema}")
    cols = table.to_pydict()
    out = []
    for i, (s, t, temp, hum, q) in enumerate(
        zip(
            cols["station_id"],
            cols["observed_at"],
            cols["temperature_c_tenths"],
            cols["relative_humidity_pct_tenths"],
            cols["quality_level"],
            strict=True,
        )
    ):
        try:
            out.append(validate(Observation(s, t.astimezone(UTC), temp, hum, q)))
        except RecordRejected as exc:
            raise PayloadError(f"row {i}: {exc}") from exc
    return out


def payload_leaves(data: bytes) -> list[bytes]:
    """Canonical record bytes of each payload row: the Merkle leaves, in order."""
    return [canonical_bytes(r) for r in decode_payload(data)]
