"""backfill: on-demand ingestion of historical DWD archives, then anchoring with drain.

Data engineers backfill years of history with it: the archives are produced into Kafka
(re-running skips archives already ingested), then anchor-windows runs with
``drain=True`` so that the last window of each archive is anchored too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.anchor_windows import anchor_windows
from flows.ingest_dwd import ingest_dwd


@flow(name="backfill", log_prints=True)
def backfill(
    sources: Sequence[str], topic: str | None = None, lenient: bool = False
) -> dict[str, Any]:
    """Ingest `sources` and anchor everything they contain.

    Each anchor-windows run reads at most `max_messages_per_run` offsets (and takes the
    topic's lease itself), so a long archive is anchored by several runs in a row, until
    no backlog is left; only the last one drains.
    """
    ingested = ingest_dwd(sources=sources, topic=topic, lenient=lenient)
    runs = [anchor_windows(topic=topic, drain=True)]
    # Stop when the backlog stops shrinking (producers outpace the cap): the schedule goes on.
    while 0 < runs[-1]["backlog"] < (runs[-2]["backlog"] if len(runs) > 1 else float("inf")):
        runs.append(anchor_windows(topic=topic, drain=True))
    anchored = {
        **runs[-1],
        "new_anchors": sum(r["new_anchors"] for r in runs),
        "messages_read": sum(r["messages_read"] for r in runs),
        "runs": len(runs),
    }
    return {"ingested": ingested, "anchored": anchored}
