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
    """The test's own database runs the slow statement (pg_stat_activity lists every database of the
    server: the Prefect server's own database and the other xdist worker's tests are on it too)."""
    with psycopg.connect(db_url) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%%pg_sleep(120)%%' "
            "AND pid <> pg_backend_pid() AND datname = current_database()"
        ).fetchone())


def _state(server: PrefectServer, run_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10).json()["state"])


_ENDED = ("CANCELLED", "FAILED", "CRASHED", "COMPLETED")


def _cancel_while_sleeping(server: PrefectServer, db_url: str, run_id: str, worker: Any,
                           env: dict[str, str]) -> dict[str, Any] | None:
    """Cancel the run once its statement sleeps on the server; its final state (None: never ended)."""
    deadline = time.monotonic() + 180
    while not _sleeping(db_url):
        assert time.monotonic() < deadline and _state(server, run_id)["type"] not in _ENDED, worker.log_tail(60)
        time.sleep(0.5)
    r = _run([PREFECT_BIN, "flow-run", "cancel", run_id], env)
    assert r.returncode == 0, r.stdout + r.stderr
    t0 = time.monotonic()
    state = None
    while time.monotonic() - t0 < 60:
        state = _state(server, run_id)
        if state["type"] in _ENDED:
            break
        time.sleep(0.5)
    return state


def _cancel_mid_migration(
    server: PrefectServer, db_url: str, tmp_path: Path, slow_up: str, slow_down: str = "DROP TABLE IF EXISTS tbl_b;\n"
) -> tuple[str, dict[str, Any] | None, str, list[str]]:
    """Deploy migrate/dev, start it on a real worker, cancel it while migration 2 sleeps on the
    server; returns (run id, final state, worker log, alert events delivered)."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    header = "-- Migration: {}\n-- Business justification: cancel test.\n\n"
    write_migration(migrations, 1, "a", header.format("000001_a") + "CREATE TABLE tbl_a (id int PRIMARY KEY);\n",
                    header.format("000001_a (rollback)") + "DROP TABLE IF EXISTS tbl_a;\n")
    write_migration(migrations, 2, "slow", header.format("000002_slow") + slow_up,
                    header.format("000002_slow (rollback)") + slow_down)
    env = server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
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
    with running_worker(server, "migrations", cwd=ROOT, env=worker_env) as worker, ExitStack() as cleanup:
        cleanup.callback(hook.stop)
        r = _run([sys.executable, "-m", "migrator", "trigger", "migrate/dev", "--json"], env)
        assert r.returncode == 0, r.stdout + r.stderr
        run_id = json.loads(r.stdout)["flow_run_id"]
        state = _cancel_while_sleeping(server, db_url, run_id, worker, env)
        time.sleep(1)  # an alert sent while the run ends is still being delivered
        logs = worker.log_tail(200)
        events = [req.json()["event"] for req in hook.requests]
    return run_id, state, logs, events


def test_cancel_a_flow_run_cancels_the_migration(
    prefect_server: PrefectServer, db_url: str, tmp_path: Path  # noqa: F811
) -> None:
    run_id, state, logs, _events = _cancel_mid_migration(
        prefect_server, db_url, tmp_path, "CREATE TABLE tbl_b (id int PRIMARY KEY);\nSELECT pg_sleep(120);\n"
    )
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


def test_cancel_mid_non_transactional_file_ends_dirty_and_paged(
    prefect_server: PrefectServer, db_url: str, tmp_path: Path  # noqa: F811
) -> None:
    """A cancelled non-transactional file ends dirty and alerted, like any failure (issue 10.2)."""
    run_id, state, logs, events = _cancel_mid_migration(
        prefect_server, db_url, tmp_path,
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_a_id ON tbl_a (id);\nSELECT pg_sleep(120);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_a_id;\n",
    )
    assert not _sleeping(db_url)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(2, True)]
        hist = conn.execute(
            "SELECT version, success, error, statements_done, run_id FROM schema_migrations_history ORDER BY id"
        ).fetchall()
    assert hist[0][:2] == (1, True) and hist[-1][4] == run_id
    assert hist[-1][0] == 2 and hist[-1][1] is False and "cancelled by SIGTERM" in (hist[-1][2] or "")
    assert hist[-1][3] == 1  # the index was built; the sleep was cancelled
    assert state is not None and state["type"] == "CANCELLED", (state, logs)
    assert events.count("database.dirty") == 1, (events, logs)


def test_cancel_a_recover_run_cancels_its_sql(
    prefect_server: PrefectServer, db_url: str, tmp_path: Path  # noqa: F811
) -> None:
    """A `recover` run goes through the executor too (issue 19): Cancel in Prefect while its resume
    sleeps on the server cancels that statement; the run is Cancelled, the database stays dirty, and
    the audit row says where it stopped."""
    from migrator.config import Settings
    from migrator.engine import Migrator
    from migrator.errors import MigrationFailedError

    migrations = tmp_path / "migrations"
    migrations.mkdir()
    header = "-- Migration: {}\n-- Business justification: cancel test.\n\n"
    write_migration(migrations, 1, "a", header.format("000001_a") + "CREATE TABLE tbl_a (id int PRIMARY KEY);\n",
                    header.format("000001_a (rollback)") + "DROP TABLE IF EXISTS tbl_a;\n")
    broken = "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON tbl_a (nope);\nSELECT pg_sleep(120);\n"
    write_migration(migrations, 2, "slow", header.format("000002_slow") + broken,
                    header.format("000002_slow (rollback)") + "DROP INDEX CONCURRENTLY IF EXISTS idx_a;\n")
    with pytest.raises(MigrationFailedError):
        Migrator(Settings(database_url=db_url, migrations_path=migrations)).up()  # type: ignore[arg-type]
    up = next(migrations.glob("000002_*.up.sql"))
    up.write_text(up.read_text().replace("(nope)", "(id)"))
    env = prefect_server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
    r = _run([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([PREFECT_BIN, "--no-prompt", "deploy", "--name", "recover/dev"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    hook = WebhookReceiver().start()
    worker_env = {"ASKFRANK_DEV_DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations),
                  "BACKUP_URL": f"file://{tmp_path / 'backups'}", "WEBHOOK_URL": hook.url,
                  "WEBHOOK_SECRET": "e2e-cancel-hook-secret", "MIGRATOR_PROJECT_DIR": str(ROOT)}
    try:
        with running_worker(prefect_server, "migrations", cwd=ROOT, env=worker_env) as worker:
            r = _run([sys.executable, "-m", "migrator", "trigger", "recover/dev", "--param", "action=resume",
                      "--param", "engineer=e2e", "--json"], env)
            assert r.returncode == 0, r.stdout + r.stderr
            run_id = json.loads(r.stdout)["flow_run_id"]
            state = _cancel_while_sleeping(prefect_server, db_url, run_id, worker, env)
            logs = worker.log_tail(200)
    finally:
        hook.stop()
    assert not _sleeping(db_url)  # cancelled on the server, not left running
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(2, True)]
        rows = conn.execute("SELECT action, success, error, statements_done FROM schema_migrations_history "
                            "ORDER BY id DESC").fetchall()
    row = rows[0] if rows else None
    assert row is not None and row[0] == "resume" and row[1] is False, (rows, state, logs)
    assert str(row[2]).startswith("cancelled by SIGTERM") and row[3] == 1, row  # the index was built, the sleep not
    assert state is not None and state["type"] == "CANCELLED", (state, logs)
