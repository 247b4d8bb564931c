"""KafkaLog against a real Kafka-protocol broker (noida-db): topics, produce, closed ranges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from storage.kafka import (
    KafkaDeliveryError,
    KafkaLog,
    KafkaLogError,
    OffsetRangeUnavailable,
    shared_producers,
)
from streamnotary.services import start_kafka_server, stop_process

BASE_TS = 1_700_000_000_000


@pytest.fixture
def log(kafka_bootstrap: str, kafka_topic: str) -> Iterator[KafkaLog]:
    with KafkaLog(kafka_bootstrap, kafka_topic) as kl:
        yield kl


def _messages(n: int, stations: int = 5) -> list[tuple[bytes, bytes, int]]:
    return [(f"{i % stations:05d}".encode(), f"value-{i}".encode(), BASE_TS + i) for i in range(n)]


def test_ensure_topic_is_idempotent_and_has_partitions(kafka_bootstrap: str) -> None:
    with KafkaLog(kafka_bootstrap, "idem.topic") as log:
        log.ensure_topic(partitions=2)
        log.ensure_topic(partitions=2)  # TOPIC_ALREADY_EXISTS is not an error
        assert log.partitions() == [0, 1]
        assert all(log.watermarks(p) == (0, 0) for p in (0, 1))


def test_produce_counts_progress_and_keeps_keys_on_one_partition(log: KafkaLog) -> None:
    progress: list[int] = []
    assert log.produce(_messages(300), on_progress=progress.append) == 300
    assert sum(progress) == 300
    marks = {p: log.watermarks(p) for p in log.partitions()}
    assert sum(high - low for low, high in marks.values()) == 300
    got = log.read_ranges(marks)
    assert len(got) == 300
    partition_of_key: dict[bytes | None, set[int]] = {}
    for m in got:
        partition_of_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values())
    # Per key, the producer's order is kept (idempotent producer: no reordering).
    for key in partition_of_key:
        values = [int(m.value.split(b"-")[1]) for m in got if m.key == key and m.value]
        assert values == sorted(values)
    # read_ranges orders by (partition, offset)
    assert [(m.partition, m.offset) for m in got] == sorted((m.partition, m.offset) for m in got)


def test_read_range_exact_bounds_and_fields(log: KafkaLog) -> None:
    # All on one key -> one partition, so offsets are 0..19 in production order.
    msgs = [(b"10001", f"v{i}".encode(), BASE_TS + i) for i in range(20)]
    log.produce(msgs)
    part = next(p for p in log.partitions() if log.watermarks(p)[1] == 20)
    got = log.read_range(part, 5, 9)
    assert [m.offset for m in got] == [5, 6, 7, 8]
    assert [m.value for m in got] == [b"v5", b"v6", b"v7", b"v8"]
    assert all(m.key == b"10001" and m.partition == part for m in got)
    assert [m.timestamp_ms for m in got] == [BASE_TS + i for i in range(5, 9)]
    assert [m.offset for m in log.read_range(part, 0, 20)] == list(range(20))
    assert [m.offset for m in log.read_range(part, 19, 20)] == [19]


def test_empty_ranges_read_nothing(log: KafkaLog) -> None:
    log.produce(_messages(10))
    for p in log.partitions():
        _, high = log.watermarks(p)
        assert log.read_range(p, high, high) == []
        assert log.read_range(p, 0, 0) == []
    assert log.read_ranges({}) == []


def test_range_beyond_high_watermark_fails_fast(log: KafkaLog) -> None:
    log.produce(_messages(10))
    p = log.partitions()[0]
    _, high = log.watermarks(p)
    started = time.monotonic()
    with pytest.raises(OffsetRangeUnavailable, match="not closed"):
        log.read_range(p, 0, high + 5, timeout_s=5.0)
    assert time.monotonic() - started < 5.0


def test_invalid_range_is_rejected(log: KafkaLog) -> None:
    with pytest.raises(ValueError):
        log.read_range(0, 5, 2)


def test_start_below_low_watermark_after_delete_records(
    log: KafkaLog, kafka_bootstrap: str
) -> None:
    log.produce([(b"10002", f"v{i}".encode(), BASE_TS + i) for i in range(10)])
    part = next(p for p in log.partitions() if log.watermarks(p)[1] == 10)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.delete_records([TopicPartition(log.topic, part, 4)], request_timeout=10)
    for f in futures.values():
        f.result(timeout=10)
    assert log.watermarks(part) == (4, 10)
    with pytest.raises(OffsetRangeUnavailable, match="no longer stored"):
        log.read_range(part, 2, 6)
    assert [m.offset for m in log.read_range(part, 4, 10)] == list(range(4, 10))


def test_tombstone_value_is_none(log: KafkaLog, kafka_bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(log.topic, key=b"10003", value=None, timestamp=BASE_TS, partition=1)
    assert producer.flush(10) == 0
    got = log.read_range(1, 0, 1)
    assert len(got) == 1 and got[0].value is None and got[0].key == b"10003"


def test_gaps_from_aborted_transactions_are_skipped(log: KafkaLog, kafka_bootstrap: str) -> None:
    """Offsets of aborted messages and transaction markers are gaps; reads still end."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": log.topic})
    producer.init_transactions(10)
    for value, commit in ((b"kept-1", True), (b"aborted", False), (b"kept-2", True)):
        producer.begin_transaction()
        producer.produce(log.topic, key=b"10004", value=value, partition=0)
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)
    low, high = log.watermarks(0)
    assert high > 3  # markers and the aborted message occupy offsets
    started = time.monotonic()
    got = log.read_range(0, low, high, timeout_s=5.0)
    assert [m.value for m in got] == [b"kept-1", b"kept-2"]
    assert time.monotonic() - started < 2.0
    # A range ending in a gap (the last commit marker) also ends without waiting it out.
    last = got[-1].offset
    assert [m.value for m in log.read_range(0, last, high, timeout_s=5.0)] == [b"kept-2"]


def test_consecutive_pages_continue_one_assignment(log: KafkaLog) -> None:
    """Pages read back to back keep the partition assigned (librdkafka's read-ahead is
    kept); any other read, backwards or on another partition, assigns anew. Same messages."""
    log.produce([(b"10007", f"v{i}".encode(), BASE_TS + i) for i in range(50)])
    part = next(p for p in log.partitions() if log.watermarks(p)[1] == 50)
    other = next(p for p in log.partitions() if p != part)
    pages = [log.read_range(part, lo, min(50, lo + 7)) for lo in range(0, 50, 7)]
    assert log._continues_at == (part, 50)
    assert [m.value for page in pages for m in page] == [f"v{i}".encode() for i in range(50)]
    assert [m.offset for m in log.read_range(part, 3, 10)] == list(range(3, 10))
    assert log.read_range(other, 0, 0) == []
    assert [m.offset for m in log.read_range(part, 10, 12)] == [10, 11]  # continues
    assert [m.offset for m in log.read_range(part, 40, 50)] == list(range(40, 50))  # jumps


def test_pages_across_transaction_gaps_read_every_message_once(
    log: KafkaLog, kafka_bootstrap: str
) -> None:
    """A page that ends inside a gap may consume the next page's first message: that page
    must not continue from there, or the message is lost."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": log.topic})
    producer.init_transactions(10)
    values = [f"t{i}".encode() for i in range(6)]
    for value in values:
        for commit in (True, False):
            producer.begin_transaction()
            producer.produce(log.topic, key=b"10008", value=value if commit else b"x", partition=2)
            if commit:
                producer.commit_transaction(10)
            else:
                producer.abort_transaction(10)
    low, high = log.watermarks(2)
    assert high - low > len(values)  # markers (and aborted messages) occupy offsets
    for size in (1, 2, 3, 5, 50):
        got = [
            m.value
            for lo in range(low, high, size)
            for m in log.read_range(2, lo, min(high, lo + size), timeout_s=5.0)
        ]
        assert got == values, size


def test_open_transaction_keeps_high_watermark_at_last_stable_offset(
    log: KafkaLog, kafka_bootstrap: str
) -> None:
    log.produce([(b"10005", b"before", BASE_TS)])
    part = next(p for p in log.partitions() if log.watermarks(p)[1] == 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": log.topic})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(log.topic, key=b"10005", value=b"undecided", partition=part)
    assert producer.flush(10) == 0
    _, high = log.watermarks(part)
    assert high == 1  # the undecided message is not part of any closed range yet
    assert [m.value for m in log.read_range(part, 0, high)] == [b"before"]
    producer.abort_transaction(10)


def test_reads_are_bounded_when_the_broker_goes_away(tmp_path: Path) -> None:
    """A dead broker turns into an error within the read's deadline, never a hang."""
    server = start_kafka_server(tmp_path / "data", tmp_path / "kafka.log")
    try:
        log = KafkaLog(server.bootstrap, "doomed")
        log.ensure_topic(partitions=1)
        log.produce([(b"10006", b"v", BASE_TS)])
        assert log.watermarks(0) == (0, 1)
    finally:
        stop_process(server.process)
    started = time.monotonic()
    with pytest.raises(KafkaLogError):
        log.read_range(0, 0, 1, timeout_s=2.0)
    assert time.monotonic() - started < 4.0
    log.close()


def test_logs_share_one_producer_inside_a_scope_and_drop_a_failed_one(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """An ingest of many files pays a producer's start (0.5-1 s) once, not per file; no
    producer outlives the scope, and one that failed a delivery is not reused."""
    with KafkaLog(kafka_bootstrap, kafka_topic) as a, KafkaLog(kafka_bootstrap, kafka_topic) as b:
        assert a._producer_client() is not b._producer_client()  # outside: one each
    with shared_producers():
        with KafkaLog(kafka_bootstrap, kafka_topic) as a:
            assert a.produce(_messages(10)) == 10
            first = a._producer_client()
        with KafkaLog(kafka_bootstrap, kafka_topic) as b:
            assert b._producer_client() is first  # the next file's log: same producer
            assert b.produce(_messages(10)) == 10
        server = start_kafka_server(tmp_path / "data", tmp_path / "kafka.log")
        doomed = KafkaLog(server.bootstrap, "doomed")
        doomed.ensure_topic(partitions=1)
        broken = doomed._producer_client()
        stop_process(server.process)
        with pytest.raises(KafkaDeliveryError):
            doomed.produce([(b"10006", b"v", BASE_TS)], flush_timeout_s=2.0)
        assert doomed._producer_client() is not broken  # dropped: a retry starts afresh
    with KafkaLog(kafka_bootstrap, kafka_topic) as c:
        assert c._producer_client() is not first  # the scope ended: nothing kept


def test_read_spans_reads_close_spans_as_one_but_returns_only_theirs(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """A late-window re-read (`tasks.steps.read_spans`) bridges short gaps between spans to
    save read restarts; the gaps' messages, even under a wanted key, are not returned."""
    from streamnotary.config import Settings
    from tasks import steps

    with KafkaLog(kafka_bootstrap, kafka_topic) as log:
        log.produce(_messages(600, stations=6))
        p, (_, high) = max(((p, log.watermarks(p)) for p in log.partitions()), key=lambda x: x[1])
        whole = log.read_range(p, 0, high)
    assert high >= 60
    keys = {m.key for m in whole}
    assert len(keys) >= 2  # several stations share the partition: the key filter matters
    wanted_key = sorted(keys)[0]
    spans = [(3, 7), (10, 12), (high - 2, high)]  # all three bridged into one read
    settings = Settings(home=str(tmp_path), kafka_bootstrap=kafka_bootstrap, topic=kafka_topic)

    def expected(ks: set[bytes]) -> list[tuple[int, bytes]]:
        return [
            (m.offset, m.value or b"")
            for m in whole
            if m.key in ks and any(lo <= m.offset < hi for lo, hi in spans)
        ]

    for ks in (keys, {wanted_key}):
        got = steps.read_spans.fn(settings, {p: spans}, {p: ks})
        assert [(m.offset, m.value or b"") for m in got] == expected(ks)
        assert all(m.partition == p for m in got)
