"""The executor's state machine on its own (no Prefect, no engine): which path a file takes, what
the state and the audit row say after success and failure, where a resume starts, what an observer
sees, which timeouts apply, and what is refused before anything runs. Against real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, write_migration
from migrator import files
from migrator.config import Settings, TableName
from migrator.errors import MigrationFileError
from migrator.execute.executor import Audit, ExecutionFailed, Executor, Job, Timeouts
from migrator.execute.state import ensure_tables, resolve_table
from migrator.sql import Statement


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def file_of(tmp: Path, up: str, version: int = 1) -> files.MigrationFile:
    write_migration(tmp, version, "m", up, "SELECT 1;")
    mig = files.load(tmp).get(version)
    assert mig is not None and mig.up is not None
    return mig.up


def executor(conn: psycopg.Connection, **kw: Any) -> Executor:
    st = resolve_table(conn, TableName())
    ensure_tables(conn, st)
    return Executor(conn, st, Timeouts(10_000, 60_000), **kw)


AUDIT = Audit("up", 1, "m", "run-x", "test")


def rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return list(conn.execute("SELECT direction, success, statements_done, failed_statement, transactional, to_version "
                             "FROM schema_migrations_history ORDER BY id").fetchall())


def state(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return list(conn.execute("SELECT version, dirty FROM schema_migrations").fetchall())


def test_transactional_success_and_failure(conn: psycopg.Connection, migrations_dir: Path) -> None:
    ex = executor(conn)
    done = ex.run(Job(file_of(migrations_dir, "CREATE TABLE a (id int); CREATE TABLE b (id int);"), -1, 1, 1), AUDIT)
    assert done.transactional and done.ran == 2 and state(conn) == [(1, False)]
    bad = file_of(migrations_dir, "CREATE TABLE c (id int);\nSELECT nope;", version=2)
    with pytest.raises(ExecutionFailed) as failed:
        ex.run(Job(bad, 1, 2, 2), Audit("up", 2, "m", None, "test"))
    f = failed.value.failure
    assert f.transactional and not f.dirty and f.index == 2 and f.done == 1
    assert state(conn) == [(1, False)] and conn.execute("SELECT to_regclass('c')").fetchone() == (None,)
    assert rows(conn) == [("up", True, 2, None, True, 1), ("up", False, 1, 2, True, 2)]


def test_non_transactional_failure_leaves_dirty_and_a_resume_starts_after_what_ran(
        conn: psycopg.Connection, migrations_dir: Path) -> None:
    conn.execute("CREATE TABLE t (id int)")
    mf = file_of(migrations_dir, "INSERT INTO t VALUES (1);\nCREATE INDEX CONCURRENTLY t_i ON t (nope);\n"
                                 "INSERT INTO t VALUES (3);")
    ex = executor(conn)
    with pytest.raises(ExecutionFailed) as failed:
        ex.run(Job(mf, -1, 1, 1), AUDIT)
    assert failed.value.failure.dirty and failed.value.failure.done == 1 and state(conn) == [(1, True)]
    fixed = file_of(migrations_dir, mf.sql.replace("(nope)", "(id)"))
    done = ex.run(Job(fixed, 1, 1, None, start=1), Audit("recover", 1, "m", None, "test", action="resume"))
    assert not done.transactional and done.ran == 2 and state(conn) == [(1, False)]
    assert [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")] == [1, 3]  # statement 1 ran once
    assert rows(conn)[-1] == ("recover", True, 3, None, False, 1)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def before(self, index: int, stmt: Statement) -> None:
        self.seen.append(f"before {index}")

    def after(self, index: int, stmt: Statement) -> None:
        self.seen.append(f"after {index}")

    def failed(self, index: int, stmt: Statement, exc: Exception) -> None:
        self.seen.append(f"failed {index}")


def test_an_observer_sees_each_statement_inside_the_transaction(conn: psycopg.Connection, migrations_dir: Path) -> None:
    rec = Recorder()
    ex = executor(conn, observer=rec)
    with pytest.raises(ExecutionFailed):
        ex.run(Job(file_of(migrations_dir, "CREATE TABLE a (id int);\nSELECT nope;\nSELECT 3;"), -1, 1, 1), AUDIT)
    assert rec.seen == ["before 1", "after 1", "before 2", "failed 2"]
    assert conn.execute("SELECT to_regclass('a')").fetchone() == (None,) and state(conn) == []


def test_a_file_that_cannot_run_as_written_is_refused_before_anything(conn: psycopg.Connection,
                                                                        migrations_dir: Path) -> None:
    ex = executor(conn)
    for text, expected in (("CREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);", ":2: BEGIN at line 2 is never"),
                           ("COMMIT;", ":1: COMMIT at line 1 has no BEGIN"),
                           ("COPY t FROM STDIN;", ":1: COPY ... FROM STDIN")):
        with pytest.raises(MigrationFileError, match=expected):
            ex.run(Job(file_of(migrations_dir, text), -1, 1, 1), AUDIT)
    assert state(conn) == [] and rows(conn) == [] and conn.execute("SELECT to_regclass('a')").fetchone() == (None,)


def test_timeouts_come_from_the_option_or_else_the_url() -> None:
    base = Settings(database_url="postgres://x/y")  # type: ignore[arg-type]
    assert Timeouts.of(base, None) == Timeouts(10_000, 1_800_000)
    assert Timeouts.of(base, 5_000).statement_ms == 5_000  # x-statement-timeout when the option is at its default
    assert Timeouts.of(Settings(statement_timeout="2s", lock_timeout="1s"), 5_000) == Timeouts(1_000, 2_000)


def test_sigterm_cancels_a_running_recover_resume(db_url: str, migrations_dir: Path) -> None:
    """``recover --resume`` runs in a cancel scope: SIGTERM cancels its statement on the server (it
    does not run on), the row says so, the database stays dirty, exit 143."""
    from migrator.engine import Migrator
    from migrator.errors import MigrationFailedError

    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    write_migration(migrations_dir, 2, "slow", "INSERT INTO t VALUES (1);\nCREATE INDEX CONCURRENTLY t_i ON t (nope);\n"
                                               "SELECT pg_sleep(30);", "SELECT 1;")
    s = Settings(database_url=db_url, migrations_path=migrations_dir)  # type: ignore[arg-type]
    with pytest.raises(MigrationFailedError):
        Migrator(s).up()
    up = next(migrations_dir.glob("000002_*.up.sql"))
    up.write_text(up.read_text().replace("(nope)", "(id)"))
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "migrator", "recover", "--resume", "--engineer", "oz"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with psycopg.connect(db_url, autocommit=True) as watch:
        deadline = time.monotonic() + 30
        while not watch.execute("SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND datname = current_database()").fetchone():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert not watch.execute("SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND datname = current_database()").fetchone()
        row = watch.execute("SELECT action, success, error, statements_done FROM schema_migrations_history "
                            "ORDER BY id DESC LIMIT 1").fetchone()
        assert watch.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(2, True)]
    assert proc.returncode == 143, err
    assert row is not None and row[0] == "resume" and not row[1] and str(row[2]).startswith("cancelled by SIGTERM")
    assert row[3] == 2 and "cancelled by SIGTERM" in err and "dirty: yes" in err
