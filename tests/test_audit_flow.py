"""The audit Prefect flow and `streamnotary audit`: artifacts, JSON schema, failure semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.audit import AuditFailed, audit
from storage import layout
from streamnotary.cli import main as cli_main
from streamnotary.report import validate_report
from tasks.window import WindowKey
from tests.audit_env import anchored_env
from tests.pipeline_env import PipelineEnv

__all__ = ["anchored_env"]


def _slug(topic: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in topic.lower()).strip("-")


def test_flow_passes_publishes_artifacts_and_writes_reports(anchored_env: PipelineEnv) -> None:
    with anchored_env.active() as settings:
        report = audit(all_windows=True, json_path="r.json", html_path="out/r.html")
    out_json, out_html = settings.report_path / "r.json", settings.report_path / "out/r.html"
    assert report["verdict"] == "pass" and report["summary"]["windows"] == 6
    validate_report(json.loads(out_json.read_text()))
    assert "<svg" in out_html.read_text()
    slug = _slug(anchored_env.topic)
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"audit-summary-{slug}", f"audit-windows-{slug}"])
            )
        )
    kinds = {a.key: a.type for a in arts}
    assert kinds == {f"audit-summary-{slug}": "markdown", f"audit-windows-{slug}": "table"}
    table = next(a for a in arts if a.type == "table").data
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == 6 and {r["verdict"] for r in rows} == {"pass"}


def test_flow_finishes_every_window_then_raises(anchored_env: PipelineEnv) -> None:
    store = anchored_env.store()
    key = layout.payload_key(
        anchored_env.topic, WindowKey.parse("00433_20190908T000000Z_86400s"), 0
    )
    original = store.get(key)
    store.put(key, original + b"\x00")
    try:
        with anchored_env.active(), pytest.raises(AuditFailed) as caught:
            audit(station="00433")
    finally:
        store.put(key, original)
    report: dict[str, Any] = caught.value.report
    assert report["summary"]["windows"] == 3  # all of the station's windows were audited
    assert report["summary"]["by_verdict"] == {
        "pass": 2,
        "pending": 0,
        "not_checkable": 0,
        "fail": 1,
    }
    assert report["summary"]["checks"]["payload"]["fail"] == 1


def test_cli_audit_all_json_is_valid_and_exit_code_reflects_verdict(
    anchored_env: PipelineEnv, capsys: Any
) -> None:
    with anchored_env.active():
        rc = cli_main(["audit", "--all", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    validate_report(report)
    assert rc == 0 and report["verdict"] == "pass"
    with anchored_env.active():
        assert cli_main(["audit", "--latest", "2", "--json"]) == 0
    out = capsys.readouterr().out
    latest = json.loads(out[out.index("{") :])
    assert [w["window_id"] for w in latest["windows"]] == [
        "00427_20190908T000000Z_86400s",
        "00433_20190908T000000Z_86400s",
    ]
