"""docs/operations.md, "One machine, step by step", executed from the doc's own code blocks.

The `guide` fixture (tests/fixtures/guide.py) copies nothing: it runs the section's bash
blocks as written. Checked here: every block succeeded; the anchor-windows run completed
with its headline and artifacts; the audit deployment's trigger started an audit that
completed with a fresh `pass` verdict; and no output of the guide (its commands, the
server log, the worker log) has an ERROR line, a traceback or telemetry noise.
"""

from __future__ import annotations

import re

import pytest

from tests.fixtures.guide import Guide

# the guide's fixture (server, services, deploy, anchor and audit runs) counts into the
# first test's time: minutes on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

NOISE = re.compile(
    r"\| ERROR |^ERROR|Traceback \(most recent call last\)|database is locked"
    r"|Failed to send telemetry",
    re.M,
)


def test_the_one_machine_guide_runs_as_written(guide: Guide) -> None:
    anchored = [r for r in guide.runs("anchor-windows") if r["state"]["type"] == "COMPLETED"]
    assert anchored, guide.output[-3000:]
    run = anchored[0]
    assert run["parameters"] == {"drain": True}
    assert run["state"]["message"].startswith("anchored 550 window revision(s) of dwd.observations")
    assert "0 window(s) held open" in run["state"]["message"]

    arts = guide.artifacts(run["id"])
    keys = {a["key"] for a in arts if a["key"]}
    assert {
        "anchor-windows-dwd-observations",
        "anchored-revisions-dwd-observations",
        "anchor-cursor-dwd-observations",
    } <= keys
    assert any(a["type"] == "progress" for a in arts)

    audits = guide.runs("audit")
    completed = [a for a in audits if a["state"]["type"] == "COMPLETED"]
    assert completed, [(a["name"], a["state"]) for a in audits]
    assert completed[0]["parameters"] == {"topic": "dwd.observations", "all_windows": True}
    assert completed[0]["state"]["message"].startswith(
        "audit of dwd.observations: pass - 550 window(s)"
    )
    assert completed[0]["created_by"]["type"] == "AUTOMATION", completed[0]["created_by"]

    # the guide's CLI steps printed what it says they print
    assert "anchored 550 window revision(s)" in guide.output

    logs = guide.logs()
    server_log = logs.pop("prefect-server.log", "")
    noisy = {name: NOISE.findall(text) for name, text in logs.items()}
    assert not any(noisy.values()), {n: m for n, m in noisy.items() if m}
    # The server's own log: no telemetry noise. SQLite write contention under heavy load
    # ("database is locked" in state validation, retried by the clients) is the one ERROR
    # tolerated there; docs/operations.md recommends PostgreSQL for busy servers.
    assert "telemetry" not in server_log.lower()
    errors = [b for b in server_log.split(" | ERROR ")[1:] if "database is locked" not in b]
    assert not errors, errors[:3]
