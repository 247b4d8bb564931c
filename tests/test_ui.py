"""The Prefect UI, looked at: headless Chromium on the guide's server renders the artifacts.

The `guide` fixture (docs/operations.md, one machine) leaves a real Prefect server with
the UI, an anchor-windows run and the audit run its trigger started. Chromium (headless,
no sandbox, no GPU, no background networking) loads the two run pages and the artifact
pages of the anchor run's markdown and table and of the audit's summary, lets the UI's
JavaScript run, and the rendered DOM must show the artifacts' content (not "Oops", not an
empty artifact list). Screenshots are kept in test-output/ui/ (gitignored) for a human.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.guide import Guide

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # may start the guide fixture

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "ui"
CHROMIUM_TIMEOUT_S = 180
RENDER_BUDGET_MS = 30_000  # virtual time for the UI's JavaScript and API calls


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (README: scripts/install_test_deps.sh installs it)"
    return found


def browse(url: str, profile: Path, screenshot: Path) -> str:
    """The DOM of `url` after its scripts ran; a screenshot of the page beside it."""
    common = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1440,2200",
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=True,
    ).stdout
    subprocess.run(
        [*common, f"--screenshot={screenshot}", url],
        capture_output=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=True,
    )
    assert screenshot.stat().st_size > 10_000, f"empty screenshot of {url}"
    return dom


def _artifact(guide: Guide, run_id: str, key: str) -> dict:
    (found,) = [a for a in guide.artifacts(run_id) if a["key"] == key]
    return found


def _completed(guide: Guide, flow_name: str) -> dict:
    runs = [r for r in guide.runs(flow_name) if r["state"]["type"] == "COMPLETED"]
    assert runs, f"no completed {flow_name} run on the guide's server"
    return runs[0]


def test_run_pages_and_artifacts_render_in_a_browser(guide: Guide, tmp_path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    anchor = _completed(guide, "anchor-windows")
    audit = _completed(guide, "audit")
    pages = {
        # the run pages (the Artifacts tab is one click away; the pages below render them)
        "anchor-run": (
            f"{guide.ui_url}/runs/flow-run/{anchor['id']}",
            [anchor["name"], "Completed", "Artifacts", "Task Runs"],
        ),
        "anchor-markdown": (
            f"{guide.ui_url}/artifacts/artifact/"
            + _artifact(guide, anchor["id"], "anchor-windows-dwd-observations")["id"],
            ["Windows held open", "Cursor before", "00433"],
        ),
        "anchor-table": (
            f"{guide.ui_url}/artifacts/artifact/"
            + _artifact(guide, anchor["id"], "anchored-revisions-dwd-observations")["id"],
            ["00433_20180924T000000Z_86400s", "ledger key (window)"],
        ),
        "audit-run": (
            f"{guide.ui_url}/runs/flow-run/{audit['id']}",
            [audit["name"], "Completed", "Artifacts"],
        ),
        "audit-markdown": (
            f"{guide.ui_url}/artifacts/artifact/"
            + _artifact(guide, audit["id"], "audit-summary-dwd-observations")["id"],
            ["Audit of", "pass", "Stored report"],
        ),
    }
    missing = {}
    for name, (url, expected) in pages.items():
        dom = browse(url, tmp_path / "chromium-profile", SHOTS / f"{name}.png")
        (SHOTS / f"{name}.html").write_text(dom)
        assert "Oops" not in dom, f"{name}: the UI could not reach its API ({url})"
        absent = [text for text in expected if text not in dom]
        if absent:
            missing[name] = absent
    assert not missing, f"not rendered (DOMs in {SHOTS}): {missing}"
