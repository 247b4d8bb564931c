"""Flow parameters cannot reach outside what the operator configured (issue 9, item 8).

Whoever can start a Prefect flow run chooses its parameters: the audit flow's report paths
must stay inside ``report_dir`` and ingest-dwd's sources inside ``ingest_roots`` /
``ingest_url_prefixes``. Each test calls the real flow on the real session services.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.audit import audit
from flows.ingest_dwd import ingest_dwd
from streamnotary.paths import SourceNotAllowed, UnsafePath, check_source, resolve_output
from tasks.dwd import demo_files
from tests.pipeline_env import PipelineEnv, make_env

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, s3_server: Any) -> PipelineEnv:
    return make_env(tmp_path, kafka_bootstrap, s3_server)


@pytest.mark.parametrize("name", ["../escaped.json", "{victim}", "reports/../../escaped.json"])
def test_audit_report_path_outside_report_dir_is_refused(
    env: PipelineEnv, tmp_path: Path, name: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with env.active() as settings, pytest.raises(UnsafePath, match="outside the report"):
        audit(all_windows=True, json_path=name.format(victim=victim))
    assert victim.read_text() == "precious"
    assert not (settings.home_path / "escaped.json").exists()
    assert not (tmp_path / "escaped.json").exists()


@pytest.mark.parametrize("name", ["../state", "{outside}", "reports/../../state"])
def test_audit_state_dir_outside_report_dir_is_refused(
    env: PipelineEnv, tmp_path: Path, name: str
) -> None:
    """`state_dir` is written to (the remembered head), so a run's parameter is confined too."""
    outside = tmp_path / "outside"
    with env.active(), pytest.raises(UnsafePath, match="outside the report"):
        audit(all_windows=True, state_dir=name.format(outside=outside))
    assert not outside.exists()
    assert not (tmp_path / "state").exists()


def test_symlink_in_report_dir_does_not_lead_out(tmp_path: Path) -> None:
    reports, outside = tmp_path / "reports", tmp_path / "outside"
    reports.mkdir()
    outside.mkdir()
    (reports / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        resolve_output(reports, "link/report.json")
    assert resolve_output(reports, "sub/report.json") == (reports / "sub/report.json").resolve()


@pytest.mark.parametrize(
    "source",
    [
        "/etc/passwd",
        "{tmp}/../../etc/hostname",
        "https://example.org/climate_environment/CDC/x.zip",
        "https://opendata.dwd.de.evil.example/climate_environment/CDC/x.zip",
        "https://opendata.dwd.de@evil.example/climate_environment/CDC/x.zip",
        "https://opendata.dwd.de/climate_environment/CDC/../../../secret",
        "http://opendata.dwd.de/climate_environment/CDC/x.zip",
        "http://127.0.0.1:9/latest/meta-data",
    ],
)
def test_ingest_sources_outside_the_allow_lists_are_refused(
    env: PipelineEnv, tmp_path: Path, source: str
) -> None:
    with env.active(), pytest.raises(SourceNotAllowed):
        ingest_dwd(sources=[source.format(tmp=tmp_path)])


def test_ingest_allows_configured_roots_and_dwd_prefix(env: PipelineEnv) -> None:
    with env.active() as settings:
        roots = [str(r) for r in settings.ingest_root_paths]
        prefixes = settings.ingest_url_prefixes
    for demo in demo_files():  # packaged demo data is always allowed
        assert check_source(str(demo), roots, prefixes) == str(demo)
    inside = str(env.home / "incoming.txt")
    assert check_source(inside, roots, prefixes) == inside
    url = (
        "https://opendata.dwd.de/climate_environment/CDC/observations_germany/climate/"
        "hourly/air_temperature/recent/stundenwerte_TU_00433_akt.zip"
    )
    assert check_source(url, roots, prefixes) == url


def test_cli_may_name_its_own_files(env: PipelineEnv, tmp_path: Path) -> None:
    """The operator's command line extends the allow-list for that process only."""
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    product = next(p for p in demo_files() if "00433" in p.name)
    copy = elsewhere / product.name
    copy.write_bytes(product.read_bytes()[:20_000].rsplit(b"\n", 1)[0] + b"\n")
    with env.active(), pytest.raises(SourceNotAllowed):
        ingest_dwd(sources=[str(copy)])
    done = env.run_cli("ingest", str(copy))
    assert done.returncode == 0, done.stderr
    assert "produced" in done.stdout
