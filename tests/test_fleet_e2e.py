"""End to end: migrate-fleet/tenants on a real `prefect server` with TWO process workers.

The fleet run starts one ``migrate/tenants`` child run per tenant database (``run_deployment``);
each worker runs at most 3 flow runs at once, so a wave of 4 children cannot fit on one worker:
the worker logs show child runs on both (5 tenants: the canary, then that wave). All tenants reach
the latest version, each with its own backup, and the webhook receives ONE fleet alert."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, SERVER_URL, tenant_databases, url_for
from prefect_server import PREFECT_BIN, PrefectServer, prefect_server, running_worker  # noqa: F401
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(420)
PASSWORD = "Fleet-E2e-pw-31"


@pytest.fixture
def tenants(pg_server: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``request.param`` tenant databases in a catalogue (parametrized indirectly by each test)."""
    with tenant_databases("fleete2e", request.param,
                          "CREATE TABLE tenant_databases (name text PRIMARY KEY, shard_host text NOT NULL, "
                          "active bool DEFAULT true)",
                          "INSERT INTO tenant_databases (name, shard_host) VALUES (%s, '127.0.0.1')") as dbs:
        yield dbs


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run_fleet(prefect_server: PrefectServer, tenants: dict[str, Any],  # noqa: F811
              tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str], list[Any], Path]:
    """Deploy migrate/tenants + migrate-fleet/tenants, start two workers (3 runs each at most),
    trigger the fleet and wait; returns the trigger's result, the worker logs, the alerts, the backups."""
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    backups = tmp_path / "backups"
    # the repository's tenants.yaml, with approval off and file:// backups for the test
    text = (ROOT / "deployments" / "tenants.yaml").read_text()
    text = text.replace("required: true", "required: false").replace("?sslmode=require", "")
    text = text.replace("s3://askfrank-backups/askfrank", f"file://{backups}").replace("max_parallel: 8",
                                                                                      "max_parallel: 4")
    text = text.replace("ORDER BY canary_order, name", "ORDER BY name").replace("format: slack", "format: json")
    (ddir / "tenants.yaml").write_text(text)
    env = prefect_server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
    r = _run([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([PREFECT_BIN, "--no-prompt", "deploy", "--name", "migrate/tenants", "--name", "migrate-fleet/tenants"],
             env)
    assert r.returncode == 0, r.stdout + r.stderr
    with WebhookReceiver() as hook:
        worker_env = {
            "MIGRATOR_DEPLOYMENTS_DIR": str(ddir),
            "ASKFRANK_TENANT_CATALOGUE_URL": url_for(SERVER_URL, tenants["catalogue"]),
            "ASKFRANK_TENANT_CREDENTIALS": f"postgres:{PASSWORD}",
            "WEBHOOK_URL": hook.url,
            "WEBHOOK_SECRET": "fleet-e2e-secret",
            "MIGRATOR_PROJECT_DIR": str(ROOT),
        }
        with running_worker(prefect_server, "migrations", cwd=ROOT, env=worker_env, limit=3, name="w1") as w1, \
                running_worker(prefect_server, "migrations", cwd=ROOT, env=worker_env, limit=3, name="w2") as w2:
            r = _run([sys.executable, "-m", "migrator", "trigger", "migrate-fleet/tenants", "--wait", "--poll", "1",
                      "--timeout", "360", "--json"], env, timeout=400)
            logs = {w.pool + name: w.log_tail(5000) for name, w in (("1", w1), ("2", w2))}
            hook.wait_for(1, timeout=30)
            time.sleep(1)  # a second alert would arrive now
            return r, logs, list(hook.requests), backups


@pytest.mark.parametrize("tenants", [5], indirect=True)
def test_fleet_children_spread_over_two_workers(prefect_server: PrefectServer, tenants: dict[str, Any],  # noqa: F811
                                                tmp_path: Path) -> None:
    r, logs, requests, backups = run_fleet(prefect_server, tenants, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr + "\n".join(logs.values())
    fleet_run = json.loads(r.stdout)["flow_run_id"]
    (ev,) = requests
    submitted = {k: set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", v)) - {fleet_run}
                 for k, v in logs.items()}
    children = set().union(*submitted.values())
    assert len(children) == len(tenants["names"]), submitted
    assert all(submitted.values()), f"child runs did not spread over both workers: {submitted}"
    for name in tenants["names"]:
        with psycopg.connect(url_for(SERVER_URL, name)) as conn:
            assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(9, False)]
            run_ids = {row[0] for row in conn.execute("SELECT run_id FROM schema_migrations_history")}
        assert len(run_ids) == 1 and run_ids <= children  # audited by its own child run
    dumps = list(backups.rglob("*.dump"))
    assert {d.parent.name for d in dumps} == set(tenants["names"])
    assert ev.json()["event"] == "fleet.completed"
    assert ev.json()["details"]["counts"] == {"succeeded": len(tenants["names"])}
    assert PASSWORD not in "".join(logs.values()) and PASSWORD.encode() not in ev.body


@pytest.mark.parametrize("tenants", [6], indirect=True)  # the canary, a wave of 4, one more wave
def test_failed_child_run_stops_later_waves(prefect_server: PrefectServer, tenants: dict[str, Any],  # noqa: F811
                                            tmp_path: Path) -> None:
    """Deployment children: a tenant whose first migration conflicts fails its own run; with
    max_failures 0 the next wave never starts; ONE fleet.failed alert names it with its run link."""
    names = tenants["names"]
    bad = names[2]  # wave 1 (canary, then waves of 4)
    with psycopg.connect(url_for(SERVER_URL, bad), autocommit=True) as conn:
        conn.execute("CREATE TABLE tbl_user (legacy text)")
    r, logs, requests, _ = run_fleet(prefect_server, tenants, tmp_path)
    assert r.returncode != 0 and bad in r.stderr
    (ev,) = requests
    e = ev.json()
    assert e["event"] == "fleet.failed" and e["details"]["counts"] == {"succeeded": 4, "failed": 1, "not started": 1}
    (failed,) = e["details"]["failed_databases"]
    assert failed["database"] == bad and "already exists" in failed["error"] and failed["dirty"] is False
    assert "/runs/flow-run/" in failed["run_url"]
    for name in names[5:]:
        with psycopg.connect(url_for(SERVER_URL, name)) as conn:
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    assert PASSWORD not in "".join(logs.values()) and PASSWORD.encode() not in ev.body
