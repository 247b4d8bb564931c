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
    """Ingest `sources` and anchor everything they contain."""
    ingested = ingest_dwd(sources=sources, topic=topic, lenient=lenient)
    anchored = anchor_windows(topic=topic, drain=True)
    return {"ingested": ingested, "anchored": anchored}
