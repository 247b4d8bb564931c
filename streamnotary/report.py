"""Audit reports: JSON (`streamnotary.audit-report/1`), markdown, a table, and HTML.

One report document is built from the window audits; every other format is rendered from
that document alone, so what a reader sees in the Prefect UI, in the HTML file and in the
JSON is the same evidence. The HTML is self-contained (inline CSS and SVG, no script, no
external resource) so it can be archived and opened offline years later.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tasks.audit import (
    CHECKS,
    FAIL,
    VERDICTS,
    Finding,
    LedgerIntegrity,
    PartitionScan,
    WindowAudit,
    worst,
)

REPORT_SCHEMA = "streamnotary.audit-report/1"
VERDICT_COLOURS = {
    "pass": "#2e7d32",
    "pending": "#f9a825",
    "not_checkable": "#757575",
    "fail": "#c62828",
}


class ReportError(ValueError):
    """A report document does not conform to audit_report.schema.json."""


def _count_by(verdicts: Sequence[str]) -> dict[str, int]:
    out = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        out[v] += 1
    return out


def build_report(
    audits: Sequence[WindowAudit],
    *,
    topic: str,
    selection: dict[str, Any],
    integrity: LedgerIntegrity,
    scans: Sequence[PartitionScan],
    duration_seconds: float,
    generated_at: datetime | None = None,
    findings: Sequence[Finding] = (),
    log: dict[str, Any] | None = None,
    groups: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON report of one audit run; `findings` concern the run, not one window;
    `log` is the anchor log section (`flows.audit.log_report`), None without a log.
    A topic anchored in partition groups has `groups` instead: per group its name,
    partitions and log section (`flows.audit_groups`); a group without one fails."""
    windows = [a.to_json() for a in audits]
    verdicts = [a.verdict for a in audits]
    overall = [*verdicts, *(f.severity for f in findings)]
    for section in [log, *[g["log"] for g in groups or ()]]:
        if section is not None:
            overall += [section["verdict"], section["coverage"]["verdict"]]
    if any(g["log"] is None for g in groups or ()):
        overall.append(FAIL)
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "topic": topic,
        "selection": selection,
        "verdict": worst(overall),
        "summary": {
            "windows": len(audits),
            "revisions": sum(len(a.revisions) for a in audits),
            "by_verdict": _count_by(verdicts),
            "checks": {name: _count_by([a.check_verdict(name) for a in audits]) for name in CHECKS},
            "duration_seconds": round(max(duration_seconds, 0.0), 3),
        },
        "ledger": {
            "backend": integrity.backend,
            "integrity": {"ok": integrity.ok, "detail": integrity.detail, "seq": integrity.seq},
        },
        "kafka": {"partitions": [s.to_json() for s in sorted(scans, key=lambda s: s.partition)]},
        "windows": windows,
        "findings": [f.to_json() for f in findings],
        "log": log,
        **({} if groups is None else {"groups": list(groups)}),
    }


def validate_report(doc: Any) -> None:
    """Raise `ReportError` unless `doc` conforms to audit_report.schema.json."""
    import jsonschema

    from tasks.checkpoint import load_schema

    try:
        jsonschema.validate(doc, load_schema("audit_report.schema.json"))
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise ReportError(f"report invalid at /{path}: {exc.message}") from exc


def window_label(window: dict[str, Any]) -> str:
    """A report window's id, with its partition group when it has one: a station-day split
    across two groups is two windows of the same id."""
    group = window.get("group")
    return window["window_id"] if group is None else f"{window['window_id']} ({group})"


def failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-passing finding, flattened: window, revision, check, finding."""
    out = [
        {"window_id": "(run)", "revision": None, "check": "run", **f}
        for f in report.get("findings", [])
        if f["severity"] != "info"
    ]
    log = report.get("log") or {}
    out += [
        {"window_id": "(log)", "revision": None, "check": "log", **f}
        for f in log.get("findings", [])
        if f["severity"] != "info"
    ]
    for c in (log.get("coverage") or {}).get("partitions", []):
        out += [
            {"window_id": "(coverage)", "revision": None, "check": "coverage", **f}
            for f in c["findings"]
            if f["severity"] != "info"
        ]
    for w in report["windows"]:
        label = window_label(w)
        out += [
            {"window_id": label, "revision": None, "check": "window", **f}
            for f in w.get("findings", [])
            if f["severity"] != "info"
        ]
        for r in w["revisions"]:
            for name in CHECKS:
                for f in r["checks"][name]["findings"]:
                    if f["severity"] != "info":
                        out.append(
                            {
                                "window_id": label,
                                "revision": r["revision"],
                                "check": name,
                                **f,
                            }
                        )
    return out


def _rev(revision: int | None) -> str:
    return "-" if revision is None else str(revision)


def _where(f: dict[str, Any]) -> str:
    if "partition" in f and "offset" in f:
        return f"p{f['partition']}@{f['offset']}"
    if "partition" in f:
        return f"p{f['partition']}"
    return ""


def report_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per window revision, one column per check (Prefect table artifact)."""
    rows = []
    for w in report["windows"]:
        for r in w["revisions"]:
            row: dict[str, Any] = {
                "window": w["window_id"],
                "revision": r["revision"],
                "latest": r["latest"],
                "verdict": r["verdict"],
            }
            for name in CHECKS:
                row[name] = r["checks"][name]["verdict"]
            rows.append(row)
    return rows


def log_lines(log: dict[str, Any] | None) -> list[str]:
    """Markdown lines for the anchor log and the coverage of every offset."""
    if not log:
        return ["", "No anchor log for this topic: windows were found by listing the bucket."]
    out = [
        "",
        f"Anchor log `{log['origin']}`: size {log['size']}, {len(log['anchored_heads'])} "
        f"anchored heads, key {'pinned' if log['key_pinned'] else '**not pinned**'}: "
        f"**{log['verdict']}**. Coverage: **{log['coverage']['verdict']}**",
        "",
        "| partition | offsets | in windows | held open | unattributable | not checkable |",
        "|---|---|---|---|---|---|",
    ]
    for c in log["coverage"]["partitions"]:
        out.append(
            f"| {c['partition']} | [{c['first']}, {c['last']}) | {c['in_windows']} "
            f"| {c['held_open']} | {c['unattributable']} | {c['not_checkable']} |"
        )
    return out


def render_markdown(report: dict[str, Any], max_findings: int = 50) -> str:
    """Summary for the Prefect UI: counts per check, then the failing findings."""
    s = report["summary"]
    lines = [
        f"# Audit of `{report['topic']}`: **{report['verdict']}**",
        "",
        f"{s['windows']} windows, {s['revisions']} revisions, generated {report['generated_at']}, "
        f"{s['duration_seconds']} s. Ledger `{report['ledger']['backend']}` integrity: "
        + (
            "ok"
            if report["ledger"]["integrity"]["ok"]
            else f"**broken** ({report['ledger']['integrity']['detail']})"
        ),
        "",
        "| check | " + " | ".join(VERDICTS) + " |",
        "|---|" + "---|" * len(VERDICTS),
    ]
    for name in CHECKS:
        counts = s["checks"][name]
        lines.append(f"| {name} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    lines.append("| **windows** | " + " | ".join(str(s["by_verdict"][v]) for v in VERDICTS) + " |")
    lines += log_lines(report.get("log"))
    bad = failures(report)
    if bad:
        lines += [
            "",
            "## Findings",
            "",
            "| window | rev | check | severity | where | finding |",
            "|---|---|---|---|---|---|",
        ]
        for f in bad[:max_findings]:
            msg = f["message"].replace("|", "\\|")
            lines.append(
                f"| {f['window_id']} | {_rev(f['revision'])} | {f['check']} | {f['severity']} "
                f"| {_where(f)} | {msg} |"
            )
        if len(bad) > max_findings:
            lines.append(f"\n... and {len(bad) - max_findings} more (see the JSON report)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# HTML with one SVG chart per station
# ---------------------------------------------------------------------------------------

_W, _H = 900, 280
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 56, 16, 24, 52


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _num(v: str | None) -> float | None:
    return None if v is None else float(Decimal(v))


def station_chart(station: str, windows: Sequence[dict[str, Any]]) -> str:
    """SVG: per window the temperature min..max band, the mean line, and a verdict strip."""
    ws = sorted(windows, key=lambda w: w["start"])
    t0, t1 = _parse(ws[0]["start"]).timestamp(), _parse(ws[-1]["end"]).timestamp()
    temps = [
        (
            w,
            _num(w["aggregates"]["temperature_c"]["min"]),
            _num(w["aggregates"]["temperature_c"]["max"]),
            _num(w["aggregates"]["temperature_c"]["mean"]),
        )
        for w in ws
        if w.get("aggregates") and w["aggregates"]["temperature_c"]["min"] is not None
    ]
    lo = min((t[1] for t in temps), default=0.0)
    hi = max((t[2] for t in temps), default=1.0)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def x(t: float) -> float:
        return _PAD_L + (t - t0) / max(t1 - t0, 1) * plot_w

    def y(v: float) -> float:
        return _PAD_T + (hi - v) / (hi - lo) * plot_h

    parts = [
        f'<svg class="chart" data-station="{html.escape(station)}" '
        'xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="station {html.escape(station)} temperature band">',
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{plot_w}" height="{plot_h}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    # y grid and labels
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        yy = y(v)
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e0e0e0"/>'
        )
        parts.append(
            f'<text x="{_PAD_L - 6}" y="{yy + 4:.1f}" text-anchor="end" '
            f'font-size="11">{v:.1f}</text>'
        )
    parts.append(
        f'<text x="14" y="{_PAD_T + plot_h / 2:.0f}" font-size="11" '
        f'transform="rotate(-90 14 {_PAD_T + plot_h / 2:.0f})" text-anchor="middle">°C</text>'
    )
    # x labels: up to 6 window starts
    step = max(1, len(ws) // 6)
    for w in ws[::step]:
        xx = x(_parse(w["start"]).timestamp())
        parts.append(
            f'<text x="{xx:.1f}" y="{_H - _PAD_B + 30}" font-size="11" text-anchor="middle">'
            f"{html.escape(w['start'][:10])}</text>"
        )
    # band + mean, split into contiguous segments
    segments: list[list[tuple[dict[str, Any], float, float, float]]] = []
    for t in temps:
        if segments and segments[-1][-1][0]["end"] == t[0]["start"]:
            segments[-1].append(t)
        else:
            segments.append([t])
    for seg in segments:
        mids = [
            (_parse(w["start"]).timestamp() + _parse(w["end"]).timestamp()) / 2 for w, *_ in seg
        ]
        if len(seg) == 1:  # a lone window: draw its band as a bar over its own interval
            w, mn, mx, _mean = seg[0]
            xa, xb = x(_parse(w["start"]).timestamp()), x(_parse(w["end"]).timestamp())
            d = (
                f"M{xa:.1f},{y(mx):.1f}L{xb:.1f},{y(mx):.1f}"
                f"L{xb:.1f},{y(mn):.1f}L{xa:.1f},{y(mn):.1f}Z"
            )
        else:
            top = [f"{x(m):.1f},{y(t[2]):.1f}" for m, t in zip(mids, seg, strict=True)]
            bottom = [f"{x(m):.1f},{y(t[1]):.1f}" for m, t in zip(mids, seg, strict=True)][::-1]
            d = "M" + "L".join(top + bottom) + "Z"
        parts.append(
            f'<path class="band" d="{d}" fill="#90caf9" fill-opacity="0.55" stroke="#64b5f6"/>'
        )
        means = [(m, t[3]) for m, t in zip(mids, seg, strict=True) if t[3] is not None]
        if len(means) > 1:
            d = "M" + "L".join(f"{x(m):.1f},{y(v):.1f}" for m, v in means)
            parts.append(
                f'<path class="mean" d="{d}" fill="none" stroke="#0d47a1" stroke-width="1.5"/>'
            )
    # per window: verdict strip below the plot and a mean marker
    for w in ws:
        colour = VERDICT_COLOURS[w["verdict"]]
        xa, xb = x(_parse(w["start"]).timestamp()), x(_parse(w["end"]).timestamp())
        title = html.escape(f"{window_label(w)} r{_rev(w['latest_revision'])}: {w['verdict']}")
        parts.append(
            f'<rect class="verdict verdict-{w["verdict"]}" x="{xa:.1f}" y="{_H - _PAD_B + 6}" '
            f'width="{max(xb - xa - 0.5, 1):.1f}" height="10" fill="{colour}">'
            f"<title>{title}</title></rect>"
        )
        mean = _num(w["aggregates"]["temperature_c"]["mean"]) if w.get("aggregates") else None
        if mean is not None:
            parts.append(
                f'<circle class="window verdict-{w["verdict"]}" '
                f'cx="{(xa + xb) / 2:.1f}" cy="{y(mean):.1f}" '
                f'r="3.5" fill="{colour}"><title>{title}, mean {mean} °C</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:8px 0;font-size:.85em}
td,th{border:1px solid #ddd;padding:3px 6px}
.v{color:#fff;font-weight:600;text-align:center}
.pass{background:#2e7d32}.fail{background:#c62828}.pending{background:#f9a825}.not_checkable{background:#757575}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;color:#fff;border-radius:3px}
details{margin:4px 0} code{font-size:.9em}
"""


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: summary, one chart per station, per-check verdicts."""
    esc = html.escape
    s = report["summary"]
    by_station: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for w in report["windows"]:
        by_station[w["station_id"]].append(w)
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>streamnotary audit: {esc(report['topic'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Audit of <code>{esc(report['topic'])}</code>: "
        f"<span class='v {esc(report['verdict'])}' id='overall'>"
        f"&nbsp;{esc(report['verdict'])}&nbsp;</span></h1>",
        f"<p>{s['windows']} windows, {s['revisions']} revisions; "
        f"generated {esc(report['generated_at'])}; "
        f"ledger <code>{esc(report['ledger']['backend'])}</code> integrity "
        + (
            "ok"
            if report["ledger"]["integrity"]["ok"]
            else f"<b>broken</b>: {esc(report['ledger']['integrity']['detail'])}"
        )
        + "</p>",
        "<p class='legend'>"
        + "".join(f"<span class='{v}'>{v}</span>" for v in VERDICTS)
        + "</p><table><tr><th>check</th>"
        + "".join(f"<th>{v}</th>" for v in VERDICTS)
        + "</tr>",
    ]
    for name in CHECKS:
        out.append(
            f"<tr><td>{name}</td>"
            + "".join(f"<td>{s['checks'][name][v]}</td>" for v in VERDICTS)
            + "</tr>"
        )
    out.append("</table>")
    for station, ws in sorted(by_station.items()):
        out.append(f"<h2>Station {esc(station)}</h2>")
        out.append("<p>Air temperature per window: min–max band, mean line; strip = verdict.</p>")
        out.append(station_chart(station, ws))
        out.append(
            "<table><tr><th>window</th><th>rev</th>"
            + "".join(f"<th>{c}</th>" for c in CHECKS)
            + "</tr>"
        )
        for w in ws:
            for r in w["revisions"]:
                out.append(
                    f"<tr><td>{esc(w['window_id'])}</td><td>{r['revision']}"
                    f"{'' if r['latest'] else ' (superseded)'}</td>"
                    + "".join(
                        f"<td class='v {r['checks'][c]['verdict']}'>"
                        f"{r['checks'][c]['verdict']}</td>"
                        for c in CHECKS
                    )
                    + "</tr>"
                )
        out.append("</table>")
        bad = [f for f in failures(report) if f["window_id"].startswith(station + "_")]
        if bad:
            out.append(f"<details open><summary>{len(bad)} finding(s)</summary><ul>")
            for f in bad:
                out.append(
                    f"<li><b>{esc(f['window_id'])} r{_rev(f['revision'])}</b> {esc(f['check'])} "
                    f"[{esc(f['severity'])}] {esc(_where(f))} {esc(f['message'])}</li>"
                )
            out.append("</ul></details>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# Stored reports and the run's headline
# ---------------------------------------------------------------------------------------


def report_json_bytes(report: dict[str, Any]) -> bytes:
    """The stored JSON form of a report (sorted keys, so equal reports are equal bytes)."""
    import json

    return (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()


def report_keys(report: dict[str, Any]) -> tuple[str, str]:
    """Object keys of a report's JSON and HTML: a function of the report alone.

    ``reports/<topic>/audit/<generated_at>-<sha256 of the JSON, 16 hex>.json|.html``:
    they sort by time, a retried publish writes the same keys (write-once), and a later
    audit never overwrites an earlier one.
    """
    import hashlib

    digest = hashlib.sha256(report_json_bytes(report)).hexdigest()[:16]
    stamp = report["generated_at"].replace("-", "").replace(":", "")
    base = f"reports/{report['topic']}/audit/{stamp}-{digest}"
    return f"{base}.json", f"{base}.html"


def audit_headline(report: dict[str, Any]) -> str:
    """One line for the flow run's state message: verdict and counts."""
    s = report["summary"]
    counts = ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in s["by_verdict"].items())
    return (
        f"audit of {report['topic']}: {report['verdict']} - {s['windows']} window(s), "
        f"{s['revisions']} revision(s): {counts}"
    )
