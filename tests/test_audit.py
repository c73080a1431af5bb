"""The AUDIT API: every attempt leaves a row (killed ones included), old tables upgrade in place,
and ``Status.failure`` says statement by statement what a dirty attempt did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from test_lock_wait import wait_for_query

from conftest import ROOT, query, reap, write_migration
from migrator.config import Settings, TableName
from migrator.engine import Migrator
from migrator.errors import MigrationFailedError
from migrator.execute.state import STARTED_ERROR, last_attempt, resolve_table, statement_hash

OLD_HISTORY_DDL = """CREATE TABLE schema_migrations_history (
    id bigserial PRIMARY KEY, run_id text, version bigint NOT NULL, name text,
    direction text NOT NULL CHECK (direction IN ('up', 'down', 'force')), checksum text,
    success boolean NOT NULL, from_version bigint, to_version bigint, started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL, duration_ms bigint NOT NULL, db_user text NOT NULL DEFAULT current_user,
    client_host text, client_addr inet DEFAULT inet_client_addr(), tool_version text NOT NULL,
    environment text, approved_by text, error text)"""


def make(url: str, path: Path, **kw: object) -> Migrator:
    return Migrator(Settings(database_url=url, migrations_path=path, **kw))  # type: ignore[arg-type]


def test_old_history_table_upgrades_in_place(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)")
        conn.execute(OLD_HISTORY_DDL)
        conn.execute(
            "INSERT INTO schema_migrations_history (version, direction, success, started_at, finished_at, "
            "duration_ms, tool_version) VALUES (0, 'force', true, now(), now(), 0, 'old')"
        )
    m = make(db_url, migrations_dir)
    m.up()
    cols = {r[0] for r in query(db_url, "SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'schema_migrations_history'")}
    assert {"statements_total", "statements_done", "failed_statement", "statement_hashes", "action",
            "comment"} <= cols
    hist = m.history()
    assert [(r["version"], r["direction"]) for r in hist] == [(1, "up"), (0, "force")]  # the old row kept
    assert hist[0]["statements_total"] == 1 and hist[0]["statements_done"] == 1
    assert hist[0]["statement_hashes"] == [statement_hash("CREATE TABLE a (id int)")]
    with psycopg.connect(db_url, autocommit=True) as conn:  # 'recover' now passes the CHECK ...
        conn.execute(
            "INSERT INTO schema_migrations_history (version, direction, success, started_at, finished_at, "
            "duration_ms, tool_version, action) VALUES (1, 'recover', true, now(), now(), 0, 'x', 'resume')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):  # ... and a wrong direction still fails it
            conn.execute(
                "INSERT INTO schema_migrations_history (version, direction, success, started_at, finished_at, "
                "duration_ms, tool_version) VALUES (1, 'sideways', true, now(), now(), 0, 'x')"
            )
    assert len(query(db_url, "SELECT conname FROM pg_constraint WHERE contype = 'c' AND conrelid = "
                            "'schema_migrations_history'::regclass")) == 1
    make(db_url, migrations_dir).down()  # a second session finds nothing to upgrade and works
    assert query(db_url, "SELECT version, dirty FROM schema_migrations") == []


def test_last_attempt_and_force_checksum(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, 2, "b", "CREATE TABLE b (id int);\nSELECT 1/0;", "DROP TABLE b;")
    m = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir), run_id="run-7")
    with m.session(lock=False) as s:
        assert last_attempt(s.conn, s.st) is None  # no history table yet
    m.up(1)
    with pytest.raises(MigrationFailedError):
        m.up()
    with m.session(lock=True) as s:
        newest = last_attempt(s.conn, s.st)
        first = last_attempt(s.conn, s.st, 1)
        none = last_attempt(s.conn, s.st, 3)
    assert newest is not None and first is not None and none is None
    assert (newest.version, newest.direction, newest.success) == (2, "up", False)
    assert (newest.statements_total, newest.statements_done, newest.failed_statement) == (2, 1, 2)
    assert newest.run_id == "run-7" and newest.error == "division by zero"
    assert newest.checksum == m.load_files().get(2).up.sha256  # type: ignore[union-attr]
    assert (first.version, first.success, first.statements_done) == (1, True, 1)
    m.force(2)
    forced = m.history(1)[0]
    assert forced["direction"] == "force" and forced["name"] == "b"
    assert forced["checksum"] == m.load_files().get(2).up.sha256  # type: ignore[union-attr]


def test_status_failure_on_half_failed_create_index_concurrently(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1);", "DROP TABLE t;")
    write_migration(
        migrations_dir, 2, "uniq",
        "CREATE TABLE u (id int);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);\n"
        "CREATE TABLE v (id int);\n",
        "DROP INDEX IF EXISTS t_x; DROP TABLE IF EXISTS u, v;",
    )
    m = make(db_url, migrations_dir)
    m.up(1)
    with pytest.raises(MigrationFailedError) as err:
        m.up()
    assert err.value.dirty and err.value.line == 2
    st = m.status()
    assert st.dirty and st.version == 2 and st.failure is not None
    f = st.failure
    assert (f.version, f.name, f.direction, f.line, f.finished, f.file_changed) == (2, "uniq", "up", 2, True, False)
    assert f.statement == "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x)" and "could not create unique index" in (f.pg_error or "")
    assert [(x.index, x.line, x.state) for x in f.statements] == [(1, 1, "done"), (2, 2, "failed"), (3, 3, "not run")]
    assert st.to_dict()["failure"]["statements"][1]["state"] == "failed"
    # the INVALID index PostgreSQL leaves behind is real, and v was never created
    assert query(db_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x'::regclass") == [(False,)]
    assert query(db_url, "SELECT to_regclass('v')") == [(None,)]
    (migrations_dir / "000002_uniq.up.sql").write_text("CREATE TABLE u (id int, y int);\nSELECT 1;\n")
    assert m.status().failure.file_changed  # type: ignore[union-attr]


def test_started_row_survives_kill_9_mid_non_transactional_file(db_url: str, migrations_dir: Path) -> None:
    write_migration(
        migrations_dir, 1, "slow_cic",
        "CREATE TABLE t (x int);\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\n"
        "SELECT pg_sleep(60);\n"
        "CREATE TABLE never (id int);\n",
        "DROP TABLE IF EXISTS t, never;",
    )
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "up", "--run-id", "killed-run"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_query(db_url, "pg_sleep(60)")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        reap(proc)
    # the server notices the dead client (client_connection_check_interval) and stops the sleep
    deadline = time.monotonic() + 15
    while query(db_url, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%%' "
                 "AND datname = current_database()"):
        assert time.monotonic() < deadline, "the killed migrator's statement still runs on the server"
        time.sleep(0.2)
    assert query(db_url, "SELECT version, dirty FROM schema_migrations") == [(1, True)]
    hist = query(db_url, "SELECT version, direction, success, error, run_id, statements_total, statements_done, "
                        "failed_statement, array_length(statement_hashes, 1) FROM schema_migrations_history")
    assert hist == [(1, "up", False, STARTED_ERROR, "killed-run", 4, 2, None, 4)]
    st = make(db_url, migrations_dir).status()
    assert st.failure is not None and not st.failure.finished and st.failure.run_id == "killed-run"
    assert [x.state for x in st.failure.statements] == ["done", "done", "failed", "not run"]
    assert st.failure.line == 3
    with psycopg.connect(db_url) as conn:
        a = last_attempt(conn, resolve_table(conn, TableName()), 1)
    assert a is not None and a.statements_done == 2 and a.error == STARTED_ERROR


def test_forced_version_counts_as_applied_for_drift(db_url: str, migrations_dir: Path) -> None:
    """Issue 10.7: after a dirty CIC finished by hand and `force 2`, version 2's checksum is recorded,
    so a later `up` does not make drift call version 2 "never applied" (MIG303)."""
    from migrator.lint import drift

    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1);", "DROP TABLE t;")
    write_migration(migrations_dir, 2, "uniq", "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);",
                    "DROP INDEX IF EXISTS t_x;")
    write_migration(migrations_dir, 3, "c", "CREATE TABLE c (id int);", "DROP TABLE c;")
    settings = Settings(database_url=db_url, migrations_path=migrations_dir)
    m = Migrator(settings)
    m.up(1)
    with pytest.raises(MigrationFailedError):
        m.up(1)
    with psycopg.connect(db_url, autocommit=True) as conn:  # the operator finishes it by hand
        conn.execute("DROP INDEX t_x; DELETE FROM t WHERE ctid <> (SELECT min(ctid) FROM t);")
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x)")
    m.force(2)
    m.up()
    findings = drift.check(settings, m.load_files())
    assert [f.rule for f in findings] == [], [f.message for f in findings]
