"""Catch up on a backlog in one process: anchor-windows runs, one after another.

One anchor-windows run reads at most `max_messages_per_run` offsets, so that a run's memory
and duration stay bounded however far behind the pipeline is. A data engineer who has just
produced years of history, or an operator after an outage, wants the whole backlog
anchored now, not one scheduled run at a time: `streamnotary anchor --until-caught-up` and
the backfill flow call `anchor_until_caught_up`, which starts the next run as soon as the
previous one finished. Each run is still its own Prefect flow run with its own lease,
write-ahead plan and cursor step, exactly as if the schedule had started it; only the
process (its imports, its clients, the anchor-log objects its runs wrote:
`storage.log_cache`, and the flow runs' heartbeat thread: `flows.heartbeat`) is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows import heartbeat
from flows.anchor_windows import anchor_windows
from storage import log_cache


def backlog_of(summary: dict[str, Any]) -> int:
    """Offsets a run left unread (with partition groups in one run: all groups' together)."""
    if "groups" in summary:
        return sum(backlog_of(s) for s in summary["groups"].values())
    return int(summary["backlog"])


def anchor_until_caught_up(
    *,
    topic: str | None = None,
    drain: bool = False,
    ledger: str | None = None,
    group: str | None = None,
    after_run: Callable[[dict[str, Any]], None] | None = None,
    max_runs: int | None = None,
) -> list[dict[str, Any]]:
    """anchor-windows runs until no backlog is left; every run's summary, in order.

    It also stops when the backlog stops shrinking: producers are writing faster than the
    cap lets a run read, and running on would never end; the schedule takes it from there.
    With `max_runs` it stops after that many runs, backlog or not: the process's RSS rises
    run after run (docs/benchmarks.md, "Session 23"), so a long backlog can be caught up
    by several processes one after the other, each bounded. `after_run` is called with
    each run's summary as soon as the run has finished.
    """
    if max_runs is not None and max_runs < 1:
        raise ValueError(f"max_runs must be at least 1, got {max_runs}")
    runs: list[dict[str, Any]] = []
    previous = None
    # a late window's lookup reads what the last runs wrote; one heartbeat thread for all
    # runs, not one each that every run waits for at its end (flows/heartbeat.py)
    with log_cache.remembering(), heartbeat.shared_by_runs():
        while True:
            summary = anchor_windows(topic=topic, drain=drain, ledger=ledger, group=group)
            runs.append(summary)
            if after_run is not None:
                after_run(summary)
            backlog = backlog_of(summary)
            if backlog == 0 or (previous is not None and backlog >= previous):
                return runs
            if max_runs is not None and len(runs) >= max_runs:
                return runs
            previous = backlog
