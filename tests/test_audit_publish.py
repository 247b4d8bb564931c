"""The audit is never stale: stored reports in the bucket, links, verdict in the state."""

from __future__ import annotations

import json

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.audit import audit
from streamnotary.report import audit_headline, render_html, report_keys, validate_report
from tests.audit_env import anchored_env
from tests.pipeline_env import PipelineEnv

__all__ = ["anchored_env"]


def test_audit_stores_its_reports_links_them_and_states_its_verdict(
    anchored_env: PipelineEnv,
) -> None:
    with anchored_env.active():
        state = audit(all_windows=True, return_state=True)
    report = state.result()
    assert state.is_completed()
    assert state.message.startswith(audit_headline(report))
    assert audit_headline(report).startswith(f"audit of {anchored_env.topic}: pass - 6 window(s)")
    assert "6 pass, 0 pending, 0 not checkable, 0 fail" in state.message

    store = anchored_env.store()
    json_key, html_key = report_keys(report)
    assert json_key.startswith(f"reports/{anchored_env.topic}/audit/")
    stored = json.loads(store.get(json_key))
    validate_report(stored)
    assert stored == report
    assert store.get(html_key).decode() == render_html(report)
    assert store.uri(json_key) in state.message

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    data = {a.key: a.data for a in arts if a.key}
    slug = anchored_env.topic.replace(".", "-")
    assert store.uri(json_key) in data[f"audit-report-json-{slug}"]
    assert store.uri(html_key) in data[f"audit-report-html-{slug}"]
    assert store.uri(html_key) in data[f"audit-summary-{slug}"]

    # a later audit stores a new report beside the first, never over it
    with anchored_env.active():
        again = audit(all_windows=True, return_state=True).result()
    assert report_keys(again)[0] != json_key
    assert len(list(store.list(f"reports/{anchored_env.topic}/audit/"))) == 4
