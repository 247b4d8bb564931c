"""Prefect edge of `tasks.run_report`: a run's explanation as artifacts and state message.

anchor-windows calls `track_progress` when it starts and `explain_run` when it ends; the
rendering itself is pure (tasks/run_report.py). Markdown, table and link artifacts are
keyed by topic, so the UI's Artifacts page shows their history across runs; progress
artifacts belong to the run only. The returned `Completed` state carries the headline as
its message (the run list shows it) and the summary as its data (callers of the flow get
the summary dict, as before).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.states import Completed, State

from storage.objectstore import open_store
from streamnotary import process_memory
from streamnotary.config import Settings
from tasks import steps
from tasks.planner import Cursor
from tasks.run_log import log_size_after, plan_layout
from tasks.run_report import (
    MAX_TABLE_ROWS,
    anchored_revisions,
    artifact_key,
    document_links,
    headline,
    render_markdown,
    revision_table,
)

PROGRESS_MIN_INTERVAL_S = 1.0  # at most one API update per phase and second, and the last


class ProgressArtifacts:
    """A progress hook (tasks.steps) that mirrors each phase into a progress artifact."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.ids: dict[str, UUID] = {}
        self.last: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        description = f"{phase}: {done}/{total} ({self.topic})"
        now = time.monotonic()
        if phase not in self.ids:
            self.ids[phase] = create_progress_artifact(percent, description=description)
        elif done == total or now - self.last[phase] >= PROGRESS_MIN_INTERVAL_S:
            update_progress_artifact(self.ids[phase], percent, description=description)
        else:
            return
        self.last[phase] = now


# The tracking hook of each thread's run (partition groups run on threads of one process).
_active: dict[int, ProgressArtifacts] = {}


def track_progress(topic: str) -> None:
    """Mirror the long steps' progress (payloads, documents, anchors) of this thread's run
    into artifacts."""
    stop_tracking()
    hook = ProgressArtifacts(topic)
    _active[threading.get_ident()] = hook
    steps.add_progress_hook(hook, this_thread=True)


def stop_tracking() -> None:
    hook = _active.pop(threading.get_ident(), None)
    if hook is not None:
        steps.remove_progress_hook(hook)


class RunRecord(Protocol):
    """What anchor-windows' `RunSummary` offers: its JSON and the plans it carried out."""

    completed_plans: list[Mapping[str, Any]]
    memory: dict[str, int | None]

    def to_json(self) -> dict[str, Any]: ...


def explain_run(
    settings: Settings, run: RunRecord, cursor_before: Cursor, cursor_after: Cursor
) -> State:
    """Publish the run's artifacts; return its final state (headline message, summary data)."""
    stop_tracking()
    run.memory.update(process_memory.at_end())
    summary = run.to_json()
    plans = run.completed_plans
    topic = settings.topic
    uri_of = open_store(settings).uri
    revisions = []
    quarantine: list[Mapping[str, Any]] = []
    for plan in plans:
        log = plan.get("log")
        room = MAX_TABLE_ROWS - len(revisions)  # the table shows no more (revision_table)
        if plan["windows"] and log and room > 0:
            revisions += anchored_revisions(
                topic,
                plan["windows"][:room],
                log_size_after(log),
                uri_of,
                receipts=plan_layout(log) == "per_window",
                scope=settings.log_scope.name,
                log=log,
            )
        quarantine += plan.get("quarantine", [])
    links = document_links(settings.log_scope.name, uri_of, summary.get("log"))
    before = cursor_before.to_json()
    create_markdown_artifact(
        markdown=render_markdown(
            summary,
            cursor_before=before,
            cursor_after=cursor_after.to_json(),
            quarantine=quarantine,
            links=links,
            idle_timeout_seconds=settings.idle_timeout_seconds,
        ),
        key=artifact_key("anchor-windows", topic),
        description=f"what anchor-windows did on {topic}",
    )
    if revisions:
        create_table_artifact(
            table=revision_table(revisions),
            key=artifact_key("anchored-revisions", topic),
            description=f"window revisions anchored on {topic}, with object URIs and ledger keys",
        )
    for link in links:
        create_link_artifact(
            link=link.url, link_text=link.text, key=link.key, description=link.description
        )
    if summary["new_anchors"]:
        announce_anchored(summary)
    return Completed(message=headline(summary), data=summary)


ANCHORED_EVENT = "streamnotary.windows.anchored"


def announce_anchored(summary: Mapping[str, Any]) -> None:
    """Emit the event the audit deployment's trigger waits for (prefect.yaml).

    Emitted only by runs that anchored something, after the cursor moved, so the audit
    it starts sees every document of the run. The flow run, flow and deployment are
    attached as related resources by Prefect.
    """
    topic = summary["topic"]
    emit_event(
        event=ANCHORED_EVENT,
        resource={
            "prefect.resource.id": f"streamnotary.topic.{topic}",
            "prefect.resource.name": topic,
            "streamnotary.topic": topic,
        },
        payload={
            "topic": topic,
            "new_anchors": summary["new_anchors"],
            "log_size": summary["log_size"],
            "log_root": summary["log_root"],
        },
    )
