"""On-call surfaces against a real ``prefect server`` on its own PostgreSQL database: the server's
database, and deployment parameters that describe themselves in the UI's run form."""

from __future__ import annotations

import json
import subprocess
from typing import Any
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from conftest import ROOT, SERVER_URL, url_for
from prefect_server import PREFECT_BIN, PrefectServer, prefect_database, prefect_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


def _exists(name: str) -> bool:
    with psycopg.connect(SERVER_URL) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.mark.db  # the helper makes (and drops) a database for a server; no server starts
def test_prefect_database_is_created_and_dropped() -> None:
    with prefect_database() as url:
        assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:5432/prefect_")
        name = url.rsplit("/", 1)[1]
        assert _exists(name)
    assert not _exists(name)


def test_server_runs_on_its_own_postgresql_database(prefect_server: PrefectServer) -> None:  # noqa: F811
    name = prefect_server.database_url.rsplit("/", 1)[1]
    assert name.startswith("prefect_")
    with psycopg.connect(url_for(SERVER_URL, name)) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"flow_run", "deployment", "concurrency_limit_v2"} <= tables
    assert not (prefect_server.home / "prefect.db").exists()


def _deploy(server: PrefectServer, *names: str) -> None:
    env = server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
    for cmd in ([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"],
                [PREFECT_BIN, "--no-prompt", "deploy", *[a for n in names for a in ("--name", n)]]):
        r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr


def _deployment(server: PrefectServer, name: str) -> dict[str, Any]:
    r = httpx.get(f"{server.api_url}/deployments/name/{name}", timeout=10)
    r.raise_for_status()
    return dict(r.json())


def test_deployment_parameters_are_described(prefect_server: PrefectServer) -> None:  # noqa: F811
    _deploy(prefect_server, "migrate/prod", "rollback/prod", "force/prod", "status-monitor/prod", "backup/prod",
            "restore-drill/prod")
    for name in ("migrate/prod", "rollback/prod", "force/prod", "status-monitor/prod", "backup/prod",
                 "restore-drill/prod"):
        props = _deployment(prefect_server, name)["parameter_openapi_schema"]["properties"]
        undescribed = [p for p, spec in props.items() if not spec.get("description")]
        assert not undescribed, f"{name}: {undescribed} have no description in the UI"
    force = _deployment(prefect_server, "force/prod")
    props = force["parameter_openapi_schema"]["properties"]
    assert "records now" in props["expected_current"]["description"]
    assert force["parameters"] == {"environment": "prod"}

    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from tasks._common import deployment_run_url

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_UI_URL: prefect_server.ui_url}):
        link = deployment_run_url("force/prod", {"environment": "prod", "expected_current": 7})
        assert deployment_run_url("force/nowhere", {}) is None
    assert link is not None
    base, _, query = link.partition("/run?parameters=")
    assert base == f"{prefect_server.ui_url}/deployments/deployment/{force['id']}"
    # the UI's router decodes once, then the run form JSON.parse(decodeURIComponent(...))s it
    assert json.loads(unquote(unquote(query))) == {"environment": "prod", "expected_current": 7}


def test_documented_automation_is_accepted_by_the_server(prefect_server: PrefectServer) -> None:  # noqa: F811
    env = prefect_server.client_env()
    r = subprocess.run([PREFECT_BIN, "automation", "create", "--from-file",
                        str(ROOT / "automations" / "prod-failure-pauses-migrate.yaml")],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    found = httpx.post(f"{prefect_server.api_url}/automations/filter", json={}, timeout=10).json()
    (auto,) = [a for a in found if a["name"] == "askfrank prod failure pauses its deployment"]
    assert set(auto["trigger"]["expect"]) == {"askfrank.migration.failed", "askfrank.database.dirty"}
    assert auto["trigger"]["match"] == {"askfrank.environment": "prod"}
    assert auto["actions"][0]["type"] == "pause-deployment"
