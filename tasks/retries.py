"""Which failures a retry can fix: the one table the tasks, the docs and the tests share.

A retry helps only when the cause goes away by itself: a broker, S3 server, ledger node or
download host that is unreachable, slow or answering 5xx. It never helps with bad input, a
write-once key that holds other bytes, an anchor committed with another digest, or a cursor
written for another configuration; retrying those only delays the loud failure the
operator must see. `ERROR_TABLE` is that decision, most specific class first;
`retry_condition` applies it as Prefect's `retry_condition_fn`; `render_markdown` prints
it, with every task's declared retries, for docs/operations.md (a test keeps them equal:
``python -m tasks.retries`` regenerates the section).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from storage.kafka import KafkaLogError, OffsetRangeUnavailable
from storage.lease import LeaseError
from storage.ledger.base import AnchorConflict, LedgerError, LedgerUnavailable
from storage.logkey import LogKeyError
from storage.objectstore import (
    ObjectChanged,
    ObjectConflict,
    ObjectStoreError,
    ObjectStoreUnavailable,
)
from storage.source_errors import SourceError, SourceUnavailable
from storage.tlog import LogError
from tasks.checkpoint import CheckpointError
from tasks.dwd import DwdFormatError
from tasks.planner import CursorError
from tasks.tlog.note import NoteError

Kind = Literal["transient", "permanent"]
TRANSIENT: Kind = "transient"
PERMANENT: Kind = "permanent"


@dataclass(frozen=True)
class ErrorRule:
    error: type[BaseException]
    kind: Kind
    examples: str


ERROR_TABLE: tuple[ErrorRule, ...] = (
    ErrorRule(
        SourceUnavailable,
        TRANSIENT,
        "download host: connection refused, DNS failure, timeout, HTTP 429/5xx",
    ),
    ErrorRule(SourceError, PERMANENT, "download host: HTTP 404/403, not a zip archive, not JSON"),
    ErrorRule(
        OffsetRangeUnavailable,
        TRANSIENT,
        "Kafka: offsets not readable within read_timeout_seconds (after retention: fails)",
    ),
    ErrorRule(KafkaLogError, TRANSIENT, "Kafka: broker unreachable, metadata/offset timeouts"),
    ErrorRule(
        ObjectStoreUnavailable,
        TRANSIENT,
        "S3: connection refused, DNS failure, timeout, 5xx, SlowDown",
    ),
    ErrorRule(
        LeaseError,
        PERMANENT,
        "another run holds the topic's lease, or this run lost it (storage/lease.py)",
    ),
    ErrorRule(ObjectConflict, PERMANENT, "S3: a write-once key holds different bytes"),
    ErrorRule(ObjectChanged, PERMANENT, "S3: another writer replaced an object (lost CAS)"),
    ErrorRule(ObjectStoreError, PERMANENT, "S3: AccessDenied, NoSuchBucket, bad credentials"),
    ErrorRule(LedgerUnavailable, TRANSIENT, "ledger node unreachable or timing out"),
    ErrorRule(AnchorConflict, PERMANENT, "ledger: the key is anchored with another digest"),
    ErrorRule(
        LedgerError,
        PERMANENT,
        "ledger: corruption, foreign identity, auth failure, no funds, rejected transaction",
    ),
    ErrorRule(LogError, PERMANENT, "anchor log: forked or corrupted (tiles, checkpoint)"),
    ErrorRule(LogKeyError, PERMANENT, "anchor log: signing key missing, exposed or exists"),
    ErrorRule(
        NoteError,
        PERMANENT,
        "anchor log: a signed note or checkpoint that does not verify or parse",
    ),
    ErrorRule(DwdFormatError, PERMANENT, "bad data: a DWD file that does not parse"),
    ErrorRule(CheckpointError, PERMANENT, "bad data: a checkpoint violating its schema"),
    ErrorRule(CursorError, PERMANENT, "configuration: cursor of another topic or window size"),
    ErrorRule(FileNotFoundError, PERMANENT, "a local source file that does not exist"),
    ErrorRule(PermissionError, PERMANENT, "a local file the worker may not read"),
    ErrorRule(
        ValueError,
        PERMANENT,
        "any other bad data: a log entry, tile or checkpoint note that does not parse",
    ),
    ErrorRule(ConnectionError, TRANSIENT, "any other refused or reset connection"),
    ErrorRule(TimeoutError, TRANSIENT, "any other timeout"),
)
FALLBACK: Kind = PERMANENT  # a bug or unforeseen input: fail at once, with the traceback


def classify(exc: BaseException) -> Kind:
    """`transient` if retrying `exc` can succeed, else `permanent` (first matching rule)."""
    for rule in ERROR_TABLE:
        if isinstance(exc, rule.error):
            return rule.kind
    return FALLBACK


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures only."""
    try:
        state.result()
    except Exception as exc:
        return classify(exc) == TRANSIENT
    return True


# Declared on every I/O task of anchor-windows and ingest-dwd (tasks/steps.py).
IO_RETRY_COUNT = 3
IO_RETRY_DELAYS = [2, 10, 30]


def task_retry_rows(tasks: Iterable[Any]) -> list[tuple[str, int, str, str]]:
    """(task name, retries, delays, condition) of Prefect tasks, as declared."""
    rows = []
    for t in tasks:
        delays = t.retry_delay_seconds
        shown = ", ".join(str(int(d)) for d in delays) if isinstance(delays, list) else delays
        condition = (
            "transient only"
            if t.retry_condition_fn is retry_condition
            else ("every failure" if t.retries else "–")
        )
        rows.append((t.name, int(t.retries or 0), f"[{shown}]" if t.retries else "–", condition))
    return rows


def render_markdown(tasks: Iterable[Any]) -> str:
    """The retry section of docs/operations.md, generated from the code."""
    out = [
        "| failure | kind | examples |",
        "|---|---|---|",
        *(
            f"| `{r.error.__module__}.{r.error.__qualname__}` | {r.kind} | {r.examples} |"
            for r in ERROR_TABLE
        ),
        f"| anything else | {FALLBACK} | a bug: the run fails at once with its traceback |",
        "",
        "| task | retries | delays (s) | retried on |",
        "|---|---:|---|---|",
        *(f"| `{n}` | {r} | {d} | {c} |" for n, r, d, c in task_retry_rows(tasks)),
    ]
    return "\n".join(out) + "\n"


def all_tasks() -> list[Any]:
    """Every Prefect task of the deployed flows, in flow order."""
    from flows import audit, ingest_dwd
    from tasks import steps

    found: dict[str, Any] = {}
    for module in (steps, ingest_dwd, audit):
        for value in vars(module).values():
            value = getattr(value, "task", value)  # steps.unwalked wraps the Task
            if type(value).__name__ == "Task" and value.name not in found:
                found[value.name] = value
    return list(found.values())


if __name__ == "__main__":
    from tasks import retries  # the imported module, whose retry_condition the tasks hold

    print(retries.render_markdown(retries.all_tasks()), end="")
