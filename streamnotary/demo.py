"""`streamnotary demo`: the whole promise on embedded services, in one command.

Starts the embedded Kafka-protocol broker and S3 server (idempotently), replays the two
shipped DWD files into Kafka, runs anchor-windows as a Prefect flow run, and prints what
was anchored. A second run anchors nothing new and says so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from streamnotary.config import default_home
from tasks.stage_timing import add_call_time, describe

DEMO_TOPICS = {
    "local": "dwd.observations",
    "evm": "dwd.observations.evm",
    "multichain": "dwd.observations.multichain",
}
_PHASES = {
    "produce": "replaying into Kafka",
    "payloads": "writing Parquet payloads",
    "checkpoints": "writing checkpoints",
    "anchors": "anchoring window entries",
    "receipts": "writing receipts",
}


def set_profile(home: Path, **settings: Any) -> None:
    """Record the demo's ledger and topic beside the embedded services' URLs.

    `streamnotary audit` and `anchor` then use the same ledger and topic without flags.
    """
    path = home / "services.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.setdefault("settings", {}).update(settings)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


class RateColumn(ProgressColumn):
    """Items per second of a progress bar (records, payloads, anchors), for backfill ETAs."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


@contextmanager
def progress_bars(console: Console) -> Iterator[None]:
    """Progress bars on stderr, fed by the in-process hook of tasks.steps."""
    from tasks.steps import add_progress_hook, remove_progress_hook

    progress = Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    bars: dict[str, Any] = {}

    def hook(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            kind, _, detail = phase.partition(":")
            label = _PHASES.get(kind, kind) + (f" (…{detail[-12:]})" if detail else "")
            bars[phase] = progress.add_task(label, total=total)
        progress.update(bars[phase], completed=done, total=total)

    add_progress_hook(hook)
    try:
        with progress:
            yield
    finally:
        remove_progress_hook(hook)


def run_demo(
    *, ledger: str = "local", home: Path | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run the demo end to end; returns the anchor-windows summary plus ingest counts."""
    from streamnotary.services import start_services

    home = home or default_home()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    err = Console(stderr=True, quiet=quiet)
    err.print(f"[bold]streamnotary demo[/] (home {home})")
    start_services(home)
    from streamnotary.commands.services import start_local_prefect

    prefect_url, _ = start_local_prefect(home)
    if prefect_url:
        os.environ["PREFECT_API_URL"] = prefect_url
        # looking for a user's own API above imported Prefect, which read its settings
        # then: without this, the flows below would run on a temporary server
        from streamnotary.cli import refresh_imported_prefect

        refresh_imported_prefect()
    from streamnotary.warm import start_runner

    start_runner(home, wait=False)  # the next commands (audit, prove, anchor) start warm
    profile: dict[str, Any] = {"ledger": ledger, "topic": DEMO_TOPICS[ledger]}
    if ledger == "evm":
        from streamnotary.chain_nodes import ensure_anvil

        profile.update(ensure_anvil(home))
    if ledger == "multichain":
        from streamnotary.multichain_node import ensure_multichain

        profile.update(ensure_multichain(home))
    set_profile(home, **profile)
    from storage.logkey import ensure_key
    from streamnotary.config import load_settings

    ensure_key(load_settings(home=str(home)))  # the anchor log's signing key (0600)

    from flows.anchor_windows import anchor_windows
    from flows.ingest_dwd import ingest_dwd
    from tasks.dwd import demo_files

    sources = [str(p) for p in demo_files()]
    with progress_bars(err):
        ingested = ingest_dwd(sources=sources, topic=profile["topic"])
        started = time.perf_counter()
        summary = anchor_windows(topic=profile["topic"], drain=True, ledger=ledger)
        add_call_time(summary["timings"], time.perf_counter() - started)
    summary["ingested_records"] = sum(r["records"] for r in ingested.values())
    if prefect_url:
        summary["prefect_ui"] = prefect_url.removesuffix("/api")
    return summary


def render_summary(summary: dict[str, Any], console: Console) -> None:
    """The human-readable table of what one run anchored."""
    table = Table(title=f"anchored on the {summary['ledger']} ledger, topic {summary['topic']}")
    for col in (
        "station",
        "windows",
        "revisions",
        "records",
        "missing values",
        "duplicates",
        "quarantined",
    ):
        table.add_column(col, justify="right" if col != "station" else "left")
    totals = dict.fromkeys(
        ("windows", "revisions", "records", "missing_values", "duplicates", "quarantined"), 0
    )
    for station, row in summary["stations"].items():
        table.add_row(station, *(str(row[k]) for k in totals))
        for k in totals:
            totals[k] += row[k]
    if summary["stations"]:
        table.add_section()
        table.add_row("total", *(str(v) for v in totals.values()))
    console.print(table)
    console.print(
        f"ledger entries written: {summary['ledger_entries']}    "
        f"unattributable messages: {summary['unattributable']}    "
        f"log head: {summary['log_size'] or '-'} {str(summary['log_root'] or '')[:16]}"
    )
    render_held_open(summary, console)
    if summary.get("timings"):
        console.print(describe(summary["timings"]))
    if summary["new_anchors"] == 0:
        console.print("[bold]Nothing new to anchor:[/] every closed window is already anchored.")
    else:
        console.print(f"[bold green]{summary['new_anchors']} window revision(s) anchored.[/]")
    if summary.get("prefect_ui"):
        console.print(
            f"Prefect UI: {summary['prefect_ui']} (every run of this home)\n"
            "Next: `streamnotary audit` (verify every window), "
            "`streamnotary prove --station 00433 --at 2019-09-07T17:00Z` (inclusion proof), "
            "`streamnotary status`."
        )


def render_held_open(summary: dict[str, Any], console: Console) -> None:
    """Windows read but not closed yet, per station, with what would close them."""
    held = summary.get("held_open") or {}
    for station, h in held.items():
        console.print(
            f"station {station}: {h['windows']} window(s) held open since "
            f"{h['oldest_window_start']} (watermark {h['watermark']}, "
            f"{h['messages']} message(s) waiting)"
        )
    if held:
        console.print(
            "Open windows close when newer data moves the watermark past their end plus the "
            "allowed lateness; `streamnotary anchor --drain` closes them now, "
            "idle_timeout_seconds closes those of silent stations (docs/operations.md)."
        )
