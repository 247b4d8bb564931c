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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow

from streamnotary.config import load_settings
from tasks.groups import GroupConfigError, groups_of


class GroupRunsFailed(RuntimeError):
    """At least one group's run failed; the others finished (their summaries are kept)."""

    def __init__(self, failures: dict[str, BaseException], summaries: dict[str, Any]) -> None:
        self.failures, self.summaries = failures, summaries
        text = "; ".join(f"{g}: {type(e).__name__}: {e}" for g, e in sorted(failures.items()))
        super().__init__(f"partition group run(s) failed: {text}")


def run_groups(topic: str | None = None, **params: Any) -> dict[str, Any]:
    """Run anchor-windows for every configured group concurrently; summaries by group."""
    from flows.anchor_windows import anchor_windows

    settings = load_settings(topic=topic)
    groups = groups_of(settings.partition_groups)
    if not groups:
        raise GroupConfigError("no partition_groups configured")
    summaries: dict[str, Any] = {}
    failures: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="group") as pool:
        # each thread in a copy of the caller's context: the group runs are its subflows
        futures = {
            g.name: pool.submit(
                contextvars.copy_context().run,
                anchor_windows,
                topic=settings.topic,
                group=g.name,
                **params,
            )
            for g in groups
        }
        for name, future in futures.items():
            try:
                summaries[name] = future.result()
            except Exception as exc:  # reported together once every group has finished
                failures[name] = exc
    if failures:
        raise GroupRunsFailed(failures, summaries)
    return summaries


@flow(name="anchor-groups", log_prints=True)
def anchor_groups(
    topic: str | None = None,
    drain: bool = False,
    ledger: str | None = None,
) -> dict[str, Any]:
    """Anchor every partition group of the topic, the groups in parallel."""
    return run_groups(topic, drain=drain, ledger=ledger)
