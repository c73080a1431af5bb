"""End to end (issue 10.2): "Cancel" on a flow run in a real `prefect server` + process worker stops
the migration: the worker SIGTERMs the flow-run process, the engine cancels the running statement on
the server, rolls back, audits, and hands the signal to Prefect, which marks the run Cancelled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conftest import ROOT, write_migration
from prefect_server import PREFECT_BIN, PrefectServer, prefect_server, running_worker  # noqa: F401
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(300)


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _sleeping(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%%pg_sleep(120)%%' "
            "AND pid <> pg_backend_pid()"
        ).fetchone())


def _state(server: PrefectServer, run_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10).json()["state"])


def test_cancel_a_flow_run_cancels_the_migration(
    prefect_server: PrefectServer, db_url: str, tmp_path: Path  # noqa: F811
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    header = "-- Migration: {}\n-- Business justification: cancel test.\n\n"
    write_migration(migrations, 1, "a", header.format("000001_a") + "CREATE TABLE tbl_a (id int PRIMARY KEY);\n",
                    header.format("000001_a (rollback)") + "DROP TABLE IF EXISTS tbl_a;\n")
    write_migration(migrations, 2, "slow",
                    header.format("000002_slow") + "CREATE TABLE tbl_b (id int PRIMARY KEY);\nSELECT pg_sleep(120);\n",
                    header.format("000002_slow (rollback)") + "DROP TABLE IF EXISTS tbl_b;\n")
    env = prefect_server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
    r = _run([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([PREFECT_BIN, "--no-prompt", "deploy", "--name", "migrate/dev"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    hook = WebhookReceiver().start()  # alerts must resolve for a non-local environment (fail closed)
    worker_env = {
        "ASKFRANK_DEV_DATABASE_URL": db_url,
        "MIGRATIONS_PATH": str(migrations),
        "BACKUP_URL": f"file://{tmp_path / 'backups'}",
        "WEBHOOK_URL": hook.url,
        "WEBHOOK_SECRET": "e2e-cancel-hook-secret",
        "MIGRATOR_PROJECT_DIR": str(ROOT),
    }
    with running_worker(prefect_server, "migrations", cwd=ROOT, env=worker_env) as worker, ExitStack() as cleanup:
        cleanup.callback(hook.stop)
        r = _run([sys.executable, "-m", "migrator", "trigger", "migrate/dev", "--json"], env)
        assert r.returncode == 0, r.stdout + r.stderr
        run_id = json.loads(r.stdout)["flow_run_id"]
        deadline = time.monotonic() + 180
        while not _sleeping(db_url):
            ended = _state(prefect_server, run_id)["type"] in ("CANCELLED", "FAILED", "CRASHED", "COMPLETED")
            assert time.monotonic() < deadline and not ended, worker.log_tail(60)
            time.sleep(0.5)
        r = _run([PREFECT_BIN, "flow-run", "cancel", run_id], env)
        assert r.returncode == 0, r.stdout + r.stderr
        t0 = time.monotonic()
        state = None
        while time.monotonic() - t0 < 60:
            state = _state(prefect_server, run_id)
            if state["type"] in ("CANCELLED", "FAILED", "CRASHED", "COMPLETED"):
                break
            time.sleep(0.5)
        logs = worker.log_tail(200)
    assert not _sleeping(db_url)  # the statement was cancelled on the server, not left running
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(1, False)]
        assert conn.execute("SELECT to_regclass('tbl_b')").fetchone() == (None,)
        hist = conn.execute(
            "SELECT version, success, error, run_id FROM schema_migrations_history ORDER BY id"
        ).fetchall()
    assert hist == [
        (1, True, None, run_id),
        (2, False, "cancelled by SIGTERM (canceling statement due to user request)", run_id),
    ]
    assert state is not None and state["type"] == "CANCELLED", (state, logs)
    assert "migration 2 (up) cancelled by SIGTERM" in logs and "stays at version 1, clean" in logs
