"""End to end: a real `prefect server` and a process worker on 127.0.0.1; deployments created from
prefect.yaml with `prefect deploy`; runs started with `migrator trigger`; the database checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from conftest import ROOT
from prefect_server import PREFECT_BIN, PrefectServer, prefect_server, running_worker  # noqa: F401
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(300)
PASSWORD = "E2e-Sentinel-pw-9"


def test_prefect_yaml_declares_every_flow_per_environment() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = spec["deployments"]
    names = set()
    for d in deployments:
        module, func = d["entrypoint"].split(":")
        flow_obj = getattr(__import__(module.removesuffix(".py").replace("/", "."), fromlist=[func]), func)
        names.add(f"{flow_obj.name}/{d['name']}")
        assert d["parameters"]["environment"] == d["name"] and d["work_pool"]["name"] == "migrations"
        assert d["name"] in d["tags"]
        assert (ROOT / "deployments" / f"{d['name']}.yaml").exists()
    flows = ["migrate", "rollback", "force", "recover", "status-monitor", "backup", "restore-drill"]
    fleets = {"migrate/tenants", "migrate-fleet/tenants", "fleet-status/tenants"}
    assert names == {f"{f}/{e}" for f in flows for e in ("dev", "staging", "prod")} | fleets
    schedules = {f"{d['entrypoint']}:{d['name']}": d.get("schedules") for d in deployments}
    assert schedules["flows/status_monitor.py:status_monitor:prod"][0]["interval"] == 900
    assert schedules["flows/restore_drill.py:restore_drill:prod"][0]["cron"] == "0 3 * * 1"
    text = (ROOT / "prefect.yaml").read_text() + "".join(p.read_text() for p in (ROOT / "deployments").glob("*.yaml"))
    assert "postgres://" not in text and "password" not in text.lower()  # no secret in YAML


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_deploy_trigger_and_migrate(prefect_server: PrefectServer, db_url: str, tmp_path: Path) -> None:  # noqa: F811
    url = db_url.replace("postgres@", f"postgres:{PASSWORD}@")
    backups = tmp_path / "backups"
    env = prefect_server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
    r = _run([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([PREFECT_BIN, "--no-prompt", "deploy", "--name", "migrate/dev", "--name", "force/dev"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    with WebhookReceiver() as hook:
        worker_env = {
            "ASKFRANK_DEV_DATABASE_URL": url,
            "BACKUP_URL": f"file://{backups}",
            "WEBHOOK_URL": hook.url,
            "WEBHOOK_SECRET": "e2e-hook-secret",
            "MIGRATOR_PROJECT_DIR": str(ROOT),
        }
        with running_worker(prefect_server, "migrations", cwd=ROOT, env=worker_env) as worker:
            trigger = [sys.executable, "-m", "migrator", "trigger", "migrate/dev", "--wait", "--poll", "1",
                       "--timeout", "200"]
            r = _run([*trigger, "--json"], env)
            assert r.returncode == 0, r.stdout + r.stderr + worker.log_tail()
            result: dict[str, Any] = json.loads(r.stdout)
            assert result["state_type"] == "COMPLETED"
            assert "RUNNING" in r.stderr and "COMPLETED" in r.stderr  # state changes were printed
            with psycopg.connect(db_url) as conn:
                state = conn.execute("SELECT version, dirty FROM schema_migrations").fetchall()
                run_ids = {row[0] for row in conn.execute("SELECT run_id FROM schema_migrations_history")}
            assert state == [(9, False)]
            assert run_ids == {result["flow_run_id"]}
            assert len(list(backups.rglob("*.dump"))) == 1
            (ev,) = hook.wait_for(1, timeout=30)
            assert ev.json()["event"] == "migration.succeeded" and ev.json()["version_after"] == 9
            # a refused force: the run fails, the trigger exits non-zero, nothing changes
            r = _run([sys.executable, "-m", "migrator", "trigger", "force/dev", "--param", "version=3",
                      "--param", "expected_current=5", "--wait", "--poll", "1", "--timeout", "200"], env)
            assert r.returncode == 1 and "refusing to force" in r.stderr
            with psycopg.connect(db_url) as conn:
                assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(9, False)]
            logs = worker.log_tail(2000)
    assert PASSWORD not in logs and PASSWORD not in r.stdout + r.stderr
    for req in hook.requests:
        assert PASSWORD.encode() not in req.body
