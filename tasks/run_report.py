"""What one anchor-windows run did, as an operator reads it in the Prefect UI (pure).

The Prefect edge (`tasks.run_artifacts`) publishes what this module renders: a markdown
summary, a table of the anchored window revisions, links to the stored documents, and the
one-line headline that becomes the flow run's state message. Everything here is computed
from the run's summary, its write-ahead plan (`streamnotary.pending/1`) and its cursors
before and after, so the explanation shows exactly what the run wrote and anchored: no
clock, no I/O, no Prefect, and the same inputs always give the same text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage import layout
from tasks.checkpoint_pack import checkpoint_ref
from tasks.message import Classified
from tasks.planner import Cursor
from tasks.window import WindowKey

_TS = "%Y-%m-%dT%H:%M:%SZ"
# A backfill run anchors ~7,700 revisions, no table shows them all, and a 2,000-row table
# cost ~0.19 s of Prefect API time a run (~10 s of a 10M-row catch-up; "Session 26").
MAX_TABLE_ROWS = 500
MAX_QUARANTINE_ROWS = 20
ARTIFACT_KEY_MAX = 100


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lower-case letters, digits, dashes) from a name and a topic.

    Keys are what make the UI show an artifact's history across runs, so they depend on
    the topic only, never on the run.
    """
    text = "-".join(parts).lower()
    slug = "".join(ch if ch.isalnum() and ch.isascii() else "-" for ch in text)
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug.strip("-")[:ARTIFACT_KEY_MAX].rstrip("-")


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.strftime(_TS)


# ---------------------------------------------------------------------------------------
# Windows held open
# ---------------------------------------------------------------------------------------


def held_open_by_station(
    held_open: Mapping[WindowKey, Sequence[Classified]], next_cursor: Cursor
) -> dict[str, dict[str, Any]]:
    """Per station: how many windows this run read but left open, and since when.

    ``oldest_window_start`` is the event time the oldest open window begins at;
    ``last_progress_at`` is the wall-clock time the station's watermark last advanced
    (what `idle_timeout_seconds` counts from); ``closed_until`` is where closing stopped.
    """
    by_station: dict[str, list[WindowKey]] = defaultdict(list)
    messages: Counter[str] = Counter()
    for key, items in held_open.items():
        by_station[key.station_id].append(key)
        messages[key.station_id] += len(items)
    out: dict[str, dict[str, Any]] = {}
    for station, keys in sorted(by_station.items()):
        keys.sort()
        cur = next_cursor.station(station)
        out[station] = {
            "windows": len(keys),
            "messages": messages[station],
            "oldest_window": keys[0].window_id,
            "oldest_window_start": _ts(keys[0].start),
            "newest_window": keys[-1].window_id,
            "watermark": _ts(cur.watermark),
            "closed_until": _ts(cur.closed_until),
            "last_progress_at": _ts(cur.progress_at),
        }
    return out


def held_open_advice(held: Mapping[str, Mapping[str, Any]], idle_timeout_seconds: int) -> str:
    """Why windows stay open and what closes them (docs/operations.md, "Windows held open")."""
    if not held:
        return ""
    idle = (
        f"`idle_timeout_seconds` is {idle_timeout_seconds}: a station whose watermark has not "
        f"advanced for that long has its open windows closed by the next run"
        if idle_timeout_seconds
        else "`idle_timeout_seconds` is 0 (off), so a station that stops sending keeps its last "
        "window open forever"
    )
    return (
        "A window closes when its station's watermark (newest observation time) passes the "
        "window's end plus `allowed_lateness_seconds`. Windows of a finished file (a backfill) "
        "never get there: run anchor-windows with `drain=true` (the `backfill` deployment does) "
        f"to close them all now. {idle}."
    )


# ---------------------------------------------------------------------------------------
# Rows and links
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchoredRevision:
    """One anchored window revision with every place its evidence lives."""

    window_id: str
    station: str
    revision: int
    close_reason: str
    records: int
    checkpoint_digest: str
    payload_uri: str
    checkpoint_uri: str
    receipt_uri: str | None  # None: layout pack, no receipt (the log tiles serve the proof)
    head_ledger_key: str
    window_ledger_key: str

    def row(self) -> dict[str, Any]:
        return {
            "window": self.window_id,
            "station": self.station,
            "revision": self.revision,
            "close reason": self.close_reason,
            "records": self.records,
            "checkpoint digest": self.checkpoint_digest,
            "payload": self.payload_uri,
            "checkpoint": self.checkpoint_uri,
            "receipt": self.receipt_uri or "-",
            "ledger key (log head)": self.head_ledger_key,
            "ledger key (window)": self.window_ledger_key,
        }


def anchored_revisions(
    topic: str,
    windows: Sequence[Mapping[str, Any]],
    head_size: int,
    uri_of: Callable[[str], str],
    receipts: bool = True,
    scope: str | None = None,
    log: Mapping[str, Any] | None = None,
) -> list[AnchoredRevision]:
    """The plan's window revisions (``pending["windows"]``), with their object URIs and keys;
    `head_size` is the size of the log head the run anchored, in the log of `scope` (the
    topic, or ``<topic>/<group>`` for a partition group, whose windows have their own
    keys). A checkpoint that the plan's `log` entries locate in a checkpoint pack (layout
    pack) is named by the pack's URI and its byte range."""
    shown = {(w["window_id"], int(w["revision"])) for w in windows}
    refs = {
        (e["window_id"], e["revision"]): checkpoint_ref(topic, e)
        for e in (log or {}).get("entries", [])
        if e["type"] == "window" and (e["window_id"], e["revision"]) in shown
    }
    keys_of = scope or topic
    out = []
    for w in windows:
        key = WindowKey.parse(w["window_id"])
        rev = int(w["revision"])
        cp = w["checkpoint"]
        ref = refs.get((key.window_id, rev))
        out.append(
            AnchoredRevision(
                window_id=key.window_id,
                station=key.station_id,
                revision=rev,
                close_reason=str(cp.get("close_reason", "")),
                records=int(cp["counts"]["records"]),
                checkpoint_digest=str(w["checkpoint_digest"]),
                payload_uri=str(cp["payload"]["uri"]),  # its own object or its run's pack
                checkpoint_uri=uri_of(layout.checkpoint_key(keys_of, key, rev))
                if ref is None
                else uri_of(ref.key) + ref.uri_suffix,
                receipt_uri=uri_of(layout.receipt_key(keys_of, key, rev)) if receipts else None,
                head_ledger_key=layout.head_entry_key(scope or topic, head_size),
                window_ledger_key=layout.window_entry_key(keys_of, key, rev),
            )
        )
    return out


def revision_table(revisions: Sequence[AnchoredRevision]) -> list[dict[str, Any]]:
    return [r.row() for r in revisions[:MAX_TABLE_ROWS]]


@dataclass(frozen=True)
class Link:
    key: str
    url: str
    text: str
    description: str


def document_links(
    topic: str, uri_of: Callable[[str], str], log: Mapping[str, Any] | None
) -> list[Link]:
    """Links to the run's stored documents: cursor, signed log checkpoint."""
    links = [
        Link(
            artifact_key("anchor-cursor", topic),
            uri_of(layout.cursor_key(topic)),
            f"cursor of {topic}",
            "where the next run resumes (streamnotary.cursor/1)",
        )
    ]
    if log and log.get("checkpoint_key"):
        links.append(
            Link(
                artifact_key("anchor-log-checkpoint", topic),
                uri_of(str(log["checkpoint_key"])),
                f"log checkpoint of {topic} (size {log.get('size', '?')})",
                "signed checkpoint of the append-only anchor log after this run",
            )
        )
    return links


# ---------------------------------------------------------------------------------------
# Headline and markdown
# ---------------------------------------------------------------------------------------


def headline(summary: Mapping[str, Any]) -> str:
    """One line for the flow run's state message: what was anchored, held open, rejected."""
    held = summary.get("held_open") or {}
    open_windows = sum(h["windows"] for h in held.values())
    quarantined = sum(s["quarantined"] for s in summary["stations"].values()) + summary.get(
        "unattributable", 0
    )
    if summary["new_anchors"]:
        text = (
            f"anchored {summary['new_anchors']} window revision(s) of {summary['topic']} "
            f"on the {summary['ledger']} ledger (log head {summary.get('log_size')})"
        )
    else:
        text = f"nothing new to anchor on {summary['topic']} ({summary['messages_read']} read)"
    text += f"; {open_windows} window(s) held open"
    if held:
        text += f" in {len(held)} station(s)"
    if quarantined:
        text += f"; {quarantined} message(s) quarantined"
    return text


def _cursor_rows(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    rows = ["| partition | resume | read end |", "|---|---|---|"]
    parts = sorted({*before.get("partitions", {}), *after.get("partitions", {})}, key=int)
    for p in parts:
        b = before.get("partitions", {}).get(p, {"resume": 0, "read_end": 0})
        a = after.get("partitions", {}).get(p, b)
        rows.append(f"| {p} | {b['resume']} → {a['resume']} | {b['read_end']} → {a['read_end']} |")
    rows += ["", "| station | watermark | closed until |", "|---|---|---|"]
    for s in sorted({*before.get("stations", {}), *after.get("stations", {})}):
        b = before.get("stations", {}).get(s, {})
        a = after.get("stations", {}).get(s, {})
        rows.append(
            f"| {s} | {b.get('watermark') or '–'} → {a.get('watermark') or '–'} "
            f"| {b.get('closed_until') or '–'} → {a.get('closed_until') or '–'} |"
        )
    return rows


def _locator(locator: Mapping[str, Any]) -> str:
    """``{"txid": "ab..", "vout": 0}`` -> ``txid `ab..`, vout `0```."""
    return ", ".join(f"{_md_escape(k)} `{_md_escape(v)}`" for k, v in sorted(locator.items()))


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def log_head_summary(
    topic: str,
    origin: str,
    head: Mapping[str, Any],
    previous_size: int,
    ledger_ref: Mapping[str, Any],
    checkpoint_key: str,
) -> dict[str, Any]:
    """The run's anchor-log head as the summary and the markdown artifact show it: what an
    auditor compares with the ledger (origin, size, root, anchored key and locator)."""
    return {
        "origin": origin,
        "size": head["size"],
        "root": head["root"],
        "previous_size": previous_size,
        "ledger_key": layout.head_entry_key(topic, head["size"]),
        "ledger_locator": dict(ledger_ref.get("locator") or {}),
        "checkpoint_key": checkpoint_key,
    }


def render_markdown(
    summary: Mapping[str, Any],
    *,
    cursor_before: Mapping[str, Any],
    cursor_after: Mapping[str, Any],
    quarantine: Sequence[Mapping[str, Any]],
    links: Sequence[Link],
    idle_timeout_seconds: int,
) -> str:
    """The run's markdown artifact."""
    out = [f"# anchor-windows: {_md_escape(summary['topic'])}", "", f"**{headline(summary)}**", ""]
    if summary.get("resumed_plan"):
        out += ["This run first finished the unfinished plan of an earlier run.", ""]
    out += ["## Anchored", ""]
    stations = summary["stations"]
    cols = ("windows", "revisions", "records", "missing_values", "duplicates", "conflicts")
    if stations:
        out += [
            "| station | " + " | ".join(c.replace("_", " ") for c in cols) + " | quarantined |",
            "|---|" + "---:|" * (len(cols) + 1),
        ]
        for station, row in stations.items():
            cells = [str(row.get(c, 0)) for c in (*cols, "quarantined")]
            out.append(f"| {_md_escape(station)} | " + " | ".join(cells) + " |")
    else:
        out.append("No window closed in this run.")
    out += [
        "",
        f"Messages read: {summary['messages_read']} (and {summary.get('offsets_reread', 0)} "
        "offsets read again to rebuild late windows); unattributable (no station or time): "
        f"{summary.get('unattributable', 0)}; ledger entries written: "
        f"{summary['ledger_entries']}.",
        "",
    ]
    if summary.get("log_size"):
        ref = summary.get("head_ref") or {}
        entry_key = layout.head_entry_key(summary["topic"], summary["log_size"])
        out += [
            "## Log head and ledger",
            "",
            f"- log head: size {summary['log_size']}, root `{summary.get('log_root')}`",
            f"- ledger entry key: `{entry_key}`",
            f"- ledger: {_md_escape(summary['ledger'])}"
            + (f", entry at {_locator(ref['locator'])}" if ref.get("locator") else ""),
        ]
        out.append("")
    log = summary.get("log")
    if log:
        out += [
            "## Anchor log head",
            "",
            f"- origin: `{_md_escape(log['origin'])}`",
            f"- size {log['size']}, root `{log['root']}` (previous anchored head: size "
            f"{log['previous_size']})",
            f"- anchored as ledger entry `{_md_escape(log['ledger_key'])}` on the "
            f"{_md_escape(summary['ledger'])} ledger"
            + (f", at {_locator(log['ledger_locator'])}" if log.get("ledger_locator") else ""),
            f"- signed checkpoint: `{_md_escape(log['checkpoint_key'])}`",
            "",
        ]
    out += ["## Cursor before → after", "", *_cursor_rows(cursor_before, cursor_after), ""]
    held = summary.get("held_open") or {}
    out += ["## Windows held open", ""]
    if held:
        out += [
            "| station | open windows | messages | oldest open window starts | "
            "watermark | closed until | watermark last advanced |",
            "|---|---:|---:|---|---|---|---|",
        ]
        for station, h in held.items():
            out.append(
                f"| {_md_escape(station)} | {h['windows']} | {h['messages']} | "
                f"{h['oldest_window_start']} | {h['watermark'] or '–'} | "
                f"{h['closed_until'] or '–'} | {h['last_progress_at'] or '–'} |"
            )
        out += ["", held_open_advice(held, idle_timeout_seconds), ""]
    else:
        out += ["None: every window with data read so far is anchored.", ""]
    out += ["## Quarantined", ""]
    if quarantine:
        reasons = Counter(str(q.get("reason", "rejected")) for q in quarantine)
        out.append(", ".join(f"{n} × `{_md_escape(r)}`" for r, n in sorted(reasons.items())))
        out += ["", "| partition | offset | window | reason | detail |", "|---:|---:|---|---|---|"]
        for q in quarantine[:MAX_QUARANTINE_ROWS]:
            out.append(
                f"| {q['partition']} | {q['offset']} | {_md_escape(q.get('window_id') or '–')} "
                f"| {_md_escape(q.get('reason'))} | {_md_escape(q.get('detail', ''))[:120]} |"
            )
        if len(quarantine) > MAX_QUARANTINE_ROWS:
            out.append(f"\n… and {len(quarantine) - MAX_QUARANTINE_ROWS} more under `quarantine/`.")
        out.append("")
    else:
        out += ["No message was quarantined in this run.", ""]
    if links:
        out += ["## Documents", ""]
        out += [f"- [{_md_escape(link.text)}]({link.url}): {link.description}" for link in links]
    return "\n".join(out) + "\n"
