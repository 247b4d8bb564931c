"""Which windows an audit covers: the selection, and discovery from the bucket and log."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage import layout
from storage.objectstore import ObjectStore
from tasks.audit import (
    FAIL,
    Finding,
)
from tasks.audit.documents import (
    KINDS,
    parse_object_name,
    parse_window_id,
)
from tasks.window import WindowKey, WindowSpecError


class SelectionError(ValueError):
    """The window selection is empty or malformed."""


# ---------------------------------------------------------------------------------------
# Window selection
# ---------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """Accept ``2019-09-07T17:00Z``, ``2019-09-07T17:00:00Z``, offsets, or a bare date (UTC)."""
    try:
        t = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise SelectionError(f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def iso_z(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Selection:
    """Which windows to audit: ids, a station, a time range, the latest N, or all.

    Criteria combine (a station and a time range select that station's windows that
    overlap the range); `latest` then keeps the N windows that end last.
    """

    window_ids: tuple[str, ...] = ()
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    latest: int | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if not (
            self.window_ids or self.station or self.since or self.until or self.latest or self.all
        ):
            raise SelectionError(
                "select windows: ids, --station, --since/--until, --latest N or --all"
            )
        if self.latest is not None and self.latest < 1:
            raise SelectionError("--latest must be at least 1")
        for wid in self.window_ids:
            try:
                parse_window_id(wid)
            except WindowSpecError as exc:
                raise SelectionError(str(exc)) from exc

    def matches(self, key: WindowKey) -> bool:
        if self.window_ids and key.window_id not in self.window_ids:
            return False
        if self.station and key.station_id != self.station:
            return False
        if self.since and key.end <= self.since:
            return False
        return not (self.until and key.start >= self.until)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_ids": list(self.window_ids),
            "station": self.station,
            "since": iso_z(self.since),
            "until": iso_z(self.until),
            "latest": self.latest,
            "all": self.all,
        }


@dataclass
class Discovery:
    """Selected windows and their revisions, plus what the listing could not attribute.

    `window_findings` hold stray objects under a window's prefix (reported on that
    window); `run_findings` hold objects that name no window at all (reported on the run).
    """

    windows: dict[WindowKey, list[int]] = field(default_factory=dict)
    window_findings: dict[WindowKey, list[Finding]] = field(default_factory=dict)
    run_findings: list[Finding] = field(default_factory=list)
    # (kind, window, revision) of every selected revision's receipt and checkpoint the
    # listing found; None: not listed, every document must be fetched to know (`listed`)
    objects: set[tuple[str, WindowKey, int]] | None = None

    def listed(self, kind: str, key: WindowKey, revision: int) -> bool:
        """Whether the listing found that object (True when nothing was listed).

        A receipt or checkpoint that was not listed is missing without a GET: in layout
        pack neither exists per window, and fetching them anyway was 2 of every 3 requests
        of an audit. One created after the listing is not audited, as if it came later.
        """
        return self.objects is None or (kind, key, revision) in self.objects


def discover_windows(
    store: ObjectStore,
    topic: str,
    selection: Selection,
    logged: dict[str, list[int]] | None = None,
) -> Discovery:
    """Selected windows and their revisions, from receipts, checkpoints *and* payloads.

    All three are listed so that a checkpoint without a receipt (never anchored), a
    receipt whose checkpoint is gone and a lone payload are all audited, and all fail.
    `logged` (window id -> revisions, from the anchor log) adds every logged revision, so
    a window whose objects were all deleted is still audited, and fails by name.
    Object names are hostile input: anything that does not follow `storage.layout` is a
    finding (`tasks.audit.documents.parse_object_name`), never an exception.
    """
    if selection.window_ids and not selection.all:
        suffixes = [
            layout.window_receipts_prefix(topic, parse_window_id(w)).removeprefix("receipts/")
            for w in selection.window_ids
        ]
    else:
        suffixes = [layout.receipts_prefix(topic, selection.station).removeprefix("receipts/")]
    found: dict[WindowKey, set[int]] = defaultdict(set)
    out = Discovery(objects=set())
    for suffix in suffixes:
        for kind in KINDS:
            for k in store.list(f"{kind}/{suffix}"):
                name = parse_object_name(topic, k)
                if name.window is None:
                    out.run_findings.append(name.finding())
                    continue
                if not selection.matches(name.window):
                    continue
                found[name.window]  # a window named only by stray objects is still reported
                if name.revision is None:
                    out.window_findings.setdefault(name.window, []).append(name.finding())
                else:
                    found[name.window].add(name.revision)
                    if kind != "payloads":  # a payload is located by its checkpoint
                        out.objects.add((kind, name.window, name.revision))
    for window_id, revisions in (logged or {}).items():  # the log is the authority
        try:
            key = parse_window_id(window_id)
        except WindowSpecError:
            out.run_findings.append(
                Finding(FAIL, "log_window_invalid", f"the log names window {window_id!r}")
            )
            continue
        if selection.matches(key):
            found[key].update(revisions)
    keys = sorted(found, key=lambda k: (k.start, k.station_id, k.size_seconds))
    if selection.latest is not None:
        keys = sorted(keys, key=lambda k: (k.end, k.station_id))[-selection.latest :]
        keys.sort(key=lambda k: (k.start, k.station_id, k.size_seconds))
    out.windows = {k: sorted(found[k]) for k in keys}
    return out
