"""anchor-groups: one anchor-windows run per partition group, all at the same time.

With the setting `partition_groups`, each group is its own writer: own lease, cursor,
write-ahead plan and anchor log (docs/design.md, "Partition groups"). This flow starts an
`anchor-windows` subflow per group on a thread each, so the groups' reads, object writes,
log appends and ledger anchors overlap; a group that fails (its lease is held, its plan
needs repair) does not stop the others, and the flow fails after all have finished.
Window building is CPU work under one interpreter here: for one process per group, run
`streamnotary anchor` (it starts a process per group) or one deployment per group
(`anchor-windows` with parameter `group`, prefect.yaml).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect import flow

from streamnotary.config import load_settings
from tasks.groups import GroupConfigError, groups_of

R = TypeVar("R")


class GroupRunsFailed(RuntimeError):
    """At least one group's run failed; the others finished (their summaries are kept)."""

    def __init__(self, failures: dict[str, BaseException], summaries: dict[str, Any]) -> None:
        self.failures, self.summaries = failures, summaries
        text = "; ".join(f"{g}: {type(e).__name__}: {e}" for g, e in sorted(failures.items()))
        super().__init__(f"partition group run(s) failed: {text}")


def run_each(jobs: Mapping[str, Callable[[], R]]) -> dict[str, R]:
    """Run every job at once, each on its own thread; their results by name.

    Each thread runs in a copy of the caller's context, so flows a job calls are subflows
    of the caller's flow run. A job that fails does not stop the others: once all have
    finished, `GroupRunsFailed` names every failure (the first is chained as its cause, so
    its traceback is kept) and carries the others' results. No exception is caught here:
    each future hands back its own.
    """
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="group") as pool:
        futures = {
            name: pool.submit(contextvars.copy_context().run, job) for name, job in jobs.items()
        }
    # leaving the pool waited for every job
    failures = {n: exc for n, f in futures.items() if (exc := f.exception()) is not None}
    results = {n: f.result() for n, f in futures.items() if n not in failures}
    if failures:
        raise GroupRunsFailed(failures, dict(results)) from next(iter(failures.values()))
    return results


def run_groups(topic: str | None = None, **params: Any) -> dict[str, Any]:
    """Run anchor-windows for every configured group concurrently; summaries by group."""
    from flows.anchor_windows import anchor_windows

    settings = load_settings(topic=topic)
    groups = groups_of(settings.partition_groups)
    if not groups:
        raise GroupConfigError("no partition_groups configured")
    return run_each(
        {
            g.name: functools.partial(anchor_windows, topic=settings.topic, group=g.name, **params)
            for g in groups
        }
    )


@flow(name="anchor-groups", log_prints=True)
def anchor_groups(
    topic: str | None = None,
    drain: bool = False,
    ledger: str | None = None,
) -> dict[str, Any]:
    """Anchor every partition group of the topic, the groups in parallel."""
    return run_groups(topic, drain=drain, ledger=ledger)
