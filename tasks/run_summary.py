"""What one anchor run did, per station: the `streamnotary demo` table and `anchor --json`.

Pure: filled by the flow as it completes plans, rendered by `tasks.run_artifacts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from storage import log_cache
from storage.log_cache import LogObjectCache
from tasks import stage_timing
from tasks.stage_timing import StageClock


@dataclass
class RunSummary:
    """What one run anchored, per station; the `streamnotary demo` table and `--json`."""

    topic: str
    ledger: str
    new_anchors: int = 0
    resumed_plan: bool = False
    messages_read: int = 0  # from Kafka in this run
    messages_held: int = 0  # of still-open windows, stored for the next run
    # offsets read again from Kafka to rebuild late windows from their whole ranges
    offsets_reread: int = 0
    offsets_reused: int = 0  # ... and taken from this run's own read instead
    backlog: int = 0  # offsets beyond this run's capped read, left for the next runs
    unattributable: int = 0
    ledger_entries: int = 0
    log_size: int | None = None
    log_root: str | None = None
    stations: dict[str, dict[str, int]] = field(default_factory=dict)
    held_open: dict[str, dict[str, Any]] = field(default_factory=dict)  # per station
    head_ref: dict[str, Any] | None = None  # where the run's log head is anchored
    log: dict[str, Any] | None = None  # the anchor-log head of this run (`log_head_summary`)
    completed_plans: list[Mapping[str, Any]] = field(default_factory=list, repr=False)
    # Created with the summary, i.e. when the flow body starts: per-stage seconds of the run.
    clock: StageClock = field(default_factory=stage_timing.start_run, repr=False)
    # The process's RSS at the run's start and end and its peak so far, filled by the flow
    # (`streamnotary.process_memory`): which run of a catch-up set the peak; and the
    # allocator's mmap threshold the process fixed (None: left to glibc or the operator).
    memory: dict[str, int | None] = field(default_factory=dict)
    # The catch-up's log cache (storage.log_cache), None outside one, and its counts when
    # the run started: how many anchor-log objects this run's reads found in it, and how
    # many it had to fetch from the bucket (a late window's lookup reaching further back),
    # and how many late windows it found by the position their entry was appended at.
    cache: LogObjectCache | None = field(default_factory=log_cache.active, repr=False)
    cache_start: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.cache is not None:
            self.cache_start = (self.cache.hits, self.cache.misses, self.cache.located)

    def log_cache_counts(self) -> dict[str, int] | None:
        """Hits, misses and located windows of the catch-up's log cache since the run
        started, or None outside a catch-up."""
        if self.cache is None:
            return None
        hits, misses, located = self.cache_start
        return {
            "hits": self.cache.hits - hits,
            "misses": self.cache.misses - misses,
            "located": self.cache.located - located,
        }

    def add(self, checkpoint: Mapping[str, Any]) -> None:
        station = checkpoint["window"]["station_id"]
        row = self.stations.setdefault(
            station,
            {
                "windows": 0,
                "revisions": 0,
                "records": 0,
                "missing_values": 0,
                "duplicates": 0,
                "conflicts": 0,
                "quarantined": 0,
            },
        )
        counts, aggs = checkpoint["counts"], checkpoint["aggregates"]
        row["windows"] += checkpoint["revision"] == 0
        row["revisions"] += checkpoint["revision"] > 0
        row["records"] += counts["records"]
        row["missing_values"] += (
            aggs["temperature_c"]["missing"] + aggs["relative_humidity_pct"]["missing"]
        )
        row["duplicates"] += counts["duplicates"]
        row["conflicts"] += counts["conflicts"]
        row["quarantined"] += counts["rejected"]
        self.new_anchors += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "ledger": self.ledger,
            "new_anchors": self.new_anchors,
            "resumed_plan": self.resumed_plan,
            "messages_read": self.messages_read,
            "messages_held": self.messages_held,
            "offsets_reread": self.offsets_reread,
            "offsets_reused": self.offsets_reused,
            "backlog": self.backlog,
            "unattributable": self.unattributable,
            "ledger_entries": self.ledger_entries,
            "log_size": self.log_size,
            "log_root": self.log_root,
            "stations": dict(sorted(self.stations.items())),
            "held_open": self.held_open,
            "head_ref": self.head_ref,
            "log": self.log,
            "timings": self.clock.report(),
            "memory": dict(self.memory) or None,
            "log_cache": self.log_cache_counts(),
        }
