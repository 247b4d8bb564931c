"""Paged Kafka reads against one whole read, on a real broker started for the run.

    python benchmarks/kafka_read.py [--messages 450000] [--partitions 3] [--repeat 3]

Produces `--messages` canonical-record-sized messages into a fresh topic of the test broker
(noida-db), then reads every partition back through `KafkaLog`:

* baseline: one `read_range` per partition (what a run reads when its range fits a page);
* paged: `read_range` page by page, as `read_offset_ranges` and `read_chunks` read with
  `read_page_messages` (10,000 and 50,000), each page on the same `KafkaLog`, so
  consecutive pages keep their partition assigned;
* short spans: 20 separate spans of 2,000 offsets per partition, each a `read_range` of
  its own (a late-window rebuild reads such spans, `tasks.steps.read_spans`): what a read
  restart costs, whatever the span's length;
* both again with librdkafka's default `fetch.queue.backoff.ms` (1,000 ms) as the
  baseline of the reader's setting (20 ms, `storage.kafka`): a short read after a large
  one used to wait out that postponement.

Prints the median of `--repeat` runs with the spread, in messages/s, for each. A paged read
near the baseline means the pages cost nothing extra; before session 7 every page
re-assigned its partition and pages of 10,000 ran 6x slower (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.kafka import KafkaLog  # noqa: E402
from streamnotary.services import start_kafka_server, stop_process  # noqa: E402

VALUE = (
    b'{"observed_at":"2015-01-01T00:00:00Z","quality_level":3,'
    b'"relative_humidity_pct_tenths":800,"station_id":"00433","temperature_c_tenths":12}'
)


def read_all(bootstrap: str, topic: str, page: int | None, client: dict[str, str]) -> int:
    """Messages read from every partition, whole (page None) or page by page."""
    count = 0
    with KafkaLog(bootstrap, topic, client) as log:
        for p in log.partitions():
            end = log.watermarks(p)[1]
            step = page or max(1, end)
            for lo in range(0, end, step):
                count += len(log.read_range(p, lo, min(end, lo + step), timeout_s=120))
    return count


SPANS, SPAN = 20, 2_000
DEFAULT_BACKOFF = {"fetch.queue.backoff.ms": "1000"}  # librdkafka's own default


def read_short_spans(bootstrap: str, topic: str, client: dict[str, str]) -> int:
    """Messages read in `SPANS` separate spans of `SPAN` offsets, spread over each partition."""
    count = 0
    with KafkaLog(bootstrap, topic, client) as log:
        for p in log.partitions():
            end = log.watermarks(p)[1]
            step = max(SPAN, (end - SPAN) // SPANS)
            for lo in range(0, max(0, end - SPAN), step)[:SPANS]:
                count += len(log.read_range(p, lo, lo + SPAN, timeout_s=120))
    return count


def rate(fn: Callable[[], int], repeat: int) -> str:
    """Median messages/s of `repeat` calls of `fn`, with the spread."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - started))
    rates.sort()
    return f"{statistics.median(rates):,.0f} msg/s ({rates[0]:,.0f}..{rates[-1]:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=450_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sn-kafka-read-") as tmp:
        server = start_kafka_server(Path(tmp) / "data", Path(tmp) / "kafka.log")
        try:
            topic = "bench.read"
            with KafkaLog(server.bootstrap, topic) as log:
                log.ensure_topic(partitions=args.partitions, config={"retention.ms": "-1"})
                log.produce(
                    (f"{i % 114:05d}".encode(), VALUE, 1_420_070_400_000 + i)
                    for i in range(args.messages)
                )
            print(
                f"# {args.messages:,} messages, {args.partitions} partitions, "
                f"median of {args.repeat} (min..max)"
            )
            boot = server.bootstrap
            read_all(boot, topic, None, {})  # warm-up, unmeasured: the first read ran slower
            for label, page, client in (
                ("baseline, one read per partition", None, {}),
                ("pages of 10,000", 10_000, {}),
                ("pages of 50,000", 50_000, {}),
                ("one read per partition, librdkafka's default backoff", None, DEFAULT_BACKOFF),
            ):
                figure = rate(functools.partial(read_all, boot, topic, page, client), args.repeat)
                print(f"{label}: {figure}")
            for label, client in (("", {}), (", librdkafka's default backoff", DEFAULT_BACKOFF)):
                figure = rate(functools.partial(read_short_spans, boot, topic, client), args.repeat)
                print(f"{SPANS} spans of {SPAN:,} per partition, each read alone{label}: {figure}")
        finally:
            stop_process(server.process)


if __name__ == "__main__":
    main()
