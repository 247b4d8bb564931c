"""Kafka: topics, the idempotent producer, and bounded reads of closed offset ranges.

Only the standard client APIs of confluent-kafka (librdkafka) are used, so the same code
runs against a production Kafka cluster and the embedded Kafka-protocol broker (noida-db)
alike: AdminClient.create_topics / list_topics, the idempotent producer, ListOffsets
(`get_watermark_offsets`) and `assign()` + `consume()` without consumer groups.

Why reads are of *closed* ranges: a window revision is defined by the half-open offset
ranges ``[start, end)`` it covers (docs/design.md). The pipeline fixes ``end`` from the
high watermark at run start, and an auditor re-reads exactly the ranges named in a
checkpoint. A read therefore never waits for "more data": it either returns every
message of the range or raises `OffsetRangeUnavailable` within its deadline. It never
trusts the broker for more than the protocol guarantees: offsets may have gaps
(compaction, transaction markers, aborted transactions), so a read ends as soon as an
offset ``>= end`` is seen or the consumer position reaches ``end``, not when it has
counted ``end - start`` messages.

Isolation: the reader uses ``isolation.level=read_committed``. With it, the "high
watermark" of `watermarks` is the partition's *last stable offset*: the first offset
whose transaction is still undecided (the ordinary high watermark when no transaction is
open). Everything below it is final: committed messages are visible, aborted ones and
control markers are skipped forever. That is what makes ``[resume, high)`` a closed range.

Secrets in `client_config` (SASL passwords, TLS keys) are passed to librdkafka only and
never appear in `repr()`, logs or exception messages.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tasks.message import SourceMessage

if TYPE_CHECKING:
    from streamnotary.config import Settings

# A fixed group id: librdkafka requires one, but we never join the group (assign() only)
# and never commit offsets (durable positions live in the cursor object, not in Kafka).
READER_GROUP_ID = "streamnotary-reader"
DEFAULT_TOPIC_CONFIG = {"retention.ms": "-1"}  # keep history: checkpoints name old offsets
_METADATA_TIMEOUT_S = 15.0
_CONSUME_BATCH = 1000

# Inside `shared_producers()` (an ingest, a backfill), one idempotent producer per
# configuration and process, shared by every KafkaLog: a new one costs 0.5-1 s before its
# first acknowledgement (connection, metadata, producer id), which an ingest of many files
# paid per file (22 files: ~15 s of a 33 s ingest, while the messages themselves took under
# 2 s). librdkafka producers are thread-safe; each `produce` call has its own delivery
# callback and waits for its own messages. A producer that failed a delivery is dropped,
# so a retry starts afresh; all are dropped when the outermost scope ends, so no idle
# producer lingers (and keeps reconnecting) in a long-lived process. Keyed by process id
# too: a forked child must never use a parent's librdkafka threads.
_producers: dict[tuple[Any, ...], Producer] = {}
_producers_lock = threading.Lock()
_sharing = 0


@contextlib.contextmanager
def shared_producers() -> Iterator[None]:
    """Within this scope, KafkaLogs of the same configuration share one producer."""
    global _sharing
    with _producers_lock:
        _sharing += 1
    try:
        yield
    finally:
        with _producers_lock:
            _sharing -= 1
            if not _sharing:
                _producers.clear()


def _shared_producer(config: dict[str, Any]) -> Producer:
    key = (os.getpid(), *sorted((k, repr(v)) for k, v in config.items()))
    with _producers_lock:
        if not _sharing:
            return Producer(config)
        producer = _producers.get(key)
        if producer is None:
            producer = _producers[key] = Producer(config)
        return producer


def _drop_producer(producer: Producer) -> None:
    with _producers_lock:
        for key in [k for k, p in _producers.items() if p is producer]:
            del _producers[key]


class KafkaLogError(RuntimeError):
    """Base class of Kafka adapter failures."""


class KafkaDeliveryError(KafkaLogError):
    """At least one produced message was not acknowledged by the broker."""


class OffsetRangeUnavailable(KafkaLogError):
    """A closed offset range cannot be read completely (retention, not yet written, timeout)."""


class KafkaLog:
    """One topic of a Kafka cluster, as the pipeline and the auditor use it.

    Clients are created lazily and cached; the reading consumer is shared by calls and
    guarded by a lock (librdkafka consumers are not meant for concurrent use).
    """

    def __init__(
        self, bootstrap: str, topic: str, client_config: dict[str, str] | None = None
    ) -> None:
        if not bootstrap:
            raise KafkaLogError("no Kafka bootstrap servers configured (kafka_bootstrap)")
        self.bootstrap = bootstrap
        self.topic = topic
        self._client_config = dict(client_config or {})
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._read_lock = threading.Lock()
        # (partition, offset) the consumer stays assigned at after a read that consumed
        # nothing beyond its range: a read starting there continues without re-assigning.
        self._continues_at: tuple[int, int] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaLog:
        return cls(settings.kafka_bootstrap, settings.topic, settings.kafka_client)

    def __repr__(self) -> str:  # no client_config: it may hold SASL credentials
        return f"KafkaLog(bootstrap={self.bootstrap!r}, topic={self.topic!r})"

    # -- clients ---------------------------------------------------------------------

    def _base_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self._client_config}

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._base_config())
        return self._admin

    def _producer_client(self) -> Producer:
        if self._producer is None:
            config: dict[str, Any] = {
                # Same key -> same partition as Java clients, so other producers agree.
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                **self._base_config(),
                # Not overridable: retries must never duplicate or reorder messages.
                "enable.idempotence": True,
                "acks": "all",
            }
            self._producer = _shared_producer(config)
        return self._producer

    def _consumer_client(self) -> Consumer:
        if self._consumer is None:
            config: dict[str, Any] = {
                # librdkafka postpones a partition's next fetch by this much (default
                # 1,000 ms) once its fetch queue is over threshold, and the postponement
                # outlives an unassign: every short read after a large one waited for it
                # (~0.25 s a restart on the test broker, ~0.08 s at 20 ms; whole-partition
                # reads unchanged, docs/benchmarks.md). A user's kafka_client may override.
                "fetch.queue.backoff.ms": 20,
                **self._base_config(),
                "group.id": READER_GROUP_ID,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                # An offset outside the log must be an error, never a silent jump.
                "auto.offset.reset": "error",
            }
            self._consumer = Consumer(config)
        return self._consumer

    # -- topics ----------------------------------------------------------------------

    def ensure_topic(
        self,
        partitions: int = 3,
        config: dict[str, str] | None = None,
        *,
        replication_factor: int = -1,
        timeout_s: float = 30.0,
    ) -> None:
        """Create the topic if it is missing (idempotent).

        `replication_factor=-1` asks for the broker's default (KIP-464). Retention is
        infinite by default: a checkpoint names offsets an auditor must be able to
        re-read, and some brokers expire records by their (old) CreateTime otherwise.
        An existing topic is left as it is, whatever its partition count.
        """
        topic_config = {**DEFAULT_TOPIC_CONFIG, **(config or {})}
        new = NewTopic(
            self.topic,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=topic_config,
        )
        futures = self._admin_client().create_topics(
            [new], operation_timeout=timeout_s, request_timeout=timeout_s
        )
        try:
            futures[self.topic].result(timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            raise KafkaLogError(f"cannot create topic {self.topic!r}: {exc}") from exc
        except TimeoutError as exc:
            raise KafkaLogError(f"creating topic {self.topic!r} timed out") from exc

    def partitions(self) -> list[int]:
        """Partition ids of the topic, sorted; `KafkaLogError` if the topic does not exist."""
        try:
            md = self._admin_client().list_topics(self.topic, timeout=_METADATA_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaLogError(f"cannot read metadata of {self.topic!r}: {exc}") from exc
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            reason = meta.error if meta is not None and meta.error is not None else "missing"
            raise KafkaLogError(f"topic {self.topic!r} is not available: {reason}")
        return sorted(meta.partitions)

    def watermarks(self, partition: int) -> tuple[int, int]:
        """(low, high) offsets of `partition`, asked of the broker now (not cached).

        low: the first offset still stored (retention or delete_records move it up).
        high: the last stable offset under ``read_committed`` (see module docstring):
        every offset below it is final, so ``[x, high)`` is a closed range.
        """
        return self._watermarks(partition, _METADATA_TIMEOUT_S)

    def _watermarks(self, partition: int, timeout_s: float) -> tuple[int, int]:
        consumer = self._consumer_client()
        tp = TopicPartition(self.topic, partition)
        with self._read_lock:
            try:
                result = consumer.get_watermark_offsets(
                    tp, timeout=max(0.1, timeout_s), cached=False
                )
            except KafkaException as exc:
                raise KafkaLogError(
                    f"cannot query offsets of {self.topic}[{partition}]: {exc}"
                ) from exc
        if result is None:
            raise KafkaLogError(f"offsets of {self.topic}[{partition}]: no answer in time")
        low, high = result
        return int(low), int(high)

    # -- producing -------------------------------------------------------------------

    def produce(
        self,
        messages: Iterable[tuple[bytes, bytes, int]],
        *,
        on_progress: Callable[[int], None] | None = None,
        flush_timeout_s: float = 120.0,
    ) -> int:
        """Produce (key, value, timestamp_ms) messages and wait for every acknowledgement.

        The producer is idempotent with ``acks=all``: librdkafka's internal retries can
        neither duplicate nor reorder messages of a partition. Re-running an ingest
        still appends the messages again; de-duplication of re-ingested records is the
        pipeline's job (tasks/dedup.py), not the log's.

        `on_progress(n)` is called with the number of messages acknowledged since its
        previous call (an increment, as progress bars' ``advance`` expects).
        Raises `KafkaDeliveryError` when any message failed or the flush did not finish
        within `flush_timeout_s`; returns the number of messages delivered.
        """
        producer = self._producer_client()
        sent = delivered = 0
        failures: list[str] = []
        pending_progress = 0

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            nonlocal delivered, pending_progress
            if err is not None:
                failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            else:
                delivered += 1
                pending_progress += 1

        def report() -> None:
            nonlocal pending_progress
            if on_progress is not None and pending_progress:
                n, pending_progress = pending_progress, 0
                on_progress(n)

        for key, value, timestamp_ms in messages:
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=key,
                        value=value,
                        timestamp=int(timestamp_ms),
                        on_delivery=on_delivery,
                    )
                    sent += 1
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    producer.poll(0.5)
                    report()
            producer.poll(0)
            report()
        deadline = time.monotonic() + flush_timeout_s
        # this call's own messages: the shared producer may hold other callers' too
        remaining = sent - delivered - len(failures)
        while remaining and time.monotonic() < deadline:
            producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
            report()
            remaining = sent - delivered - len(failures)
        report()
        if failures or remaining:
            _drop_producer(producer)
            self._producer = None
        if failures:
            raise KafkaDeliveryError(
                f"{len(failures)} message(s) to {self.topic!r} failed, first: {failures[0]}"
            )
        if remaining:
            raise KafkaDeliveryError(
                f"{remaining} message(s) to {self.topic!r} not acknowledged "
                f"within {flush_timeout_s:.0f}s"
            )
        return delivered

    # -- reading closed ranges -------------------------------------------------------

    def read_range(
        self, partition: int, start: int, end: int, *, timeout_s: float = 30.0
    ) -> list[SourceMessage]:
        """Every message of the closed range ``[start, end)`` of `partition`, in offset order.

        Raises `OffsetRangeUnavailable` when `start` is below the low watermark (removed
        by retention), when `end` is beyond the high watermark (not written or not yet
        stable: the range is not closed), or when the range is not fully read within
        `timeout_s`. Never waits longer than `timeout_s` overall.
        """
        deadline = time.monotonic() + timeout_s
        return self._read(partition, start, end, deadline)

    def read_ranges(
        self, ranges: dict[int, tuple[int, int]], *, timeout_s: float = 30.0
    ) -> list[SourceMessage]:
        """`read_range` for several partitions under one overall deadline.

        Messages are returned ordered by (partition, offset).
        """
        deadline = time.monotonic() + timeout_s
        out: list[SourceMessage] = []
        for partition in sorted(ranges):
            start, end = ranges[partition]
            out.extend(self._read(partition, start, end, deadline))
        return out

    def read_chunks(
        self,
        ranges: dict[int, tuple[int, int]],
        *,
        chunk: int = 10_000,
        timeout_s: float = 30.0,
    ) -> Iterator[list[SourceMessage]]:
        """`read_ranges` in pieces of at most `chunk` offsets, each under its own deadline.

        For reads of unbounded length (a backfill's resume check, a topic range as a
        backfill source): memory holds one chunk, and every read still ends within
        `timeout_s` or raises `OffsetRangeUnavailable`. Chunks come in (partition, offset)
        order.
        """
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        for partition in sorted(ranges):
            start, end = ranges[partition]
            for lo in range(start, end, chunk):
                hi = min(end, lo + chunk)
                yield self._read(partition, lo, hi, time.monotonic() + timeout_s)

    def offsets_for_time(
        self, timestamp_ms: int, *, timeout_s: float = _METADATA_TIMEOUT_S
    ) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= `timestamp_ms` (ListOffsets
        by time); the high watermark where no message is that recent."""
        consumer = self._consumer_client()
        asked = [TopicPartition(self.topic, p, int(timestamp_ms)) for p in self.partitions()]
        with self._read_lock:
            try:
                found = consumer.offsets_for_times(asked, timeout=timeout_s)
            except KafkaException as exc:
                raise KafkaLogError(
                    f"cannot look up offsets of {self.topic!r} by time: {exc}"
                ) from exc
        out: dict[int, int] = {}
        for tp in found:
            if tp.error is not None:
                raise KafkaLogError(f"offsets of {self.topic}[{tp.partition}] by time: {tp.error}")
            out[tp.partition] = (
                tp.offset if tp.offset >= 0 else self._watermarks(tp.partition, timeout_s)[1]
            )
        return out

    def _read(self, partition: int, start: int, end: int, deadline: float) -> list[SourceMessage]:
        where = f"{self.topic}[{partition}] [{start}, {end})"
        if start < 0 or end < start:
            raise ValueError(f"invalid offset range {where}")
        if start == end:
            return []
        budget = min(_METADATA_TIMEOUT_S, deadline - time.monotonic())
        low, high = self._watermarks(partition, budget)
        if start < low:
            raise OffsetRangeUnavailable(
                f"{where}: offsets below {low} are no longer stored (retention or deletion)"
            )
        if end > high:
            raise OffsetRangeUnavailable(
                f"{where}: range is not closed, the partition's stable end is {high}"
            )
        consumer = self._consumer_client()
        out: list[SourceMessage] = []
        topic = self.topic
        with self._read_lock:
            if self._continues_at != (partition, start):
                consumer.assign([TopicPartition(self.topic, partition, start)])
            self._continues_at = None
            overshot = False
            try:
                position = start
                while position < end:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise OffsetRangeUnavailable(
                            f"{where}: timed out at offset {position} ({len(out)} message(s) read)"
                        )
                    # Ask for no more than the range still needs, so that consume() returns
                    # as soon as the range is complete instead of waiting out its timeout.
                    want = max(1, min(_CONSUME_BATCH, end - position))
                    batch = consumer.consume(want, timeout=min(remaining, 0.2))
                    for msg in batch:
                        offset = msg.offset()
                        if msg.error() is None and position <= offset < end:
                            # the common case inline (a backfill reads millions of these)
                            ts_type, ts = msg.timestamp()
                            out.append(
                                SourceMessage(
                                    topic,
                                    partition,
                                    offset,
                                    msg.key(),
                                    msg.value(),
                                    None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
                                )
                            )
                            position = offset + 1
                        else:
                            overshot = overshot or (msg.error() is None and offset >= end)
                            position = self._take(msg, where, end, position, out)
                        if position >= end:
                            # messages after this one in the batch lie beyond the range
                            overshot = overshot or msg is not batch[-1]
                            break
                    if position < end and not batch:
                        # Gaps at the end of the range (transaction markers, compaction)
                        # deliver no message; the fetch position still moves past them.
                        pos = consumer.position([TopicPartition(self.topic, partition)])
                        if pos and pos[0].offset >= 0:
                            position = max(position, pos[0].offset)
                if not overshot:
                    self._continues_at = (partition, end)
            finally:
                if self._continues_at is None:
                    consumer.unassign()
        return out

    def _take(
        self, msg: Message, where: str, end: int, position: int, out: list[SourceMessage]
    ) -> int:
        """Handle one consumed item; returns the new read position."""
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return max(position, msg.offset())  # fetch position reached the log end
            if err.code() == KafkaError._AUTO_OFFSET_RESET or err.code() == (
                KafkaError.OFFSET_OUT_OF_RANGE
            ):
                raise OffsetRangeUnavailable(f"{where}: {err.str()}")
            if err.fatal() or not err.retriable():
                raise KafkaLogError(f"{where}: {err.str()}")
            return position  # transient: librdkafka retries the fetch itself
        offset = msg.offset()
        if offset >= end:
            return offset
        if offset < position:  # never expected after assign(start); ignore duplicates
            return position
        ts_type, ts = msg.timestamp()
        out.append(
            SourceMessage(
                topic=msg.topic(),
                partition=msg.partition(),
                offset=offset,
                key=msg.key(),
                value=msg.value(),
                timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            )
        )
        return offset + 1

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Flush nothing (produce already waits), close the consumer, drop clients."""
        if self._consumer is not None:
            self._continues_at = None
            self._consumer.close()
            self._consumer = None
        self._producer = None
        self._admin = None

    def __enter__(self) -> KafkaLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
