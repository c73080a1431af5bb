"""A waiting migrator never holds a snapshot (issue 10.1).

``CREATE INDEX CONCURRENTLY`` waits for every transaction with an older snapshot. A second
migrator that sat inside ``pg_advisory_lock()`` held one, so the two deadlocked: the waiter died
with DeadlockDetected, or PostgreSQL cancelled the CIC and left the database dirty. The CIC here is
made slow (seconds) by an index expression that sleeps, instead of a 3M-row table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, create_database, dbname_of, drop_database, url_for, write_migration
from migrator.errors import LockTimeoutError
from migrator.execute.state import StateTable, acquire_lock

SLOW_FN = (
    "CREATE FUNCTION slow_id(int) RETURNS int IMMUTABLE LANGUAGE plpgsql "
    "AS $$ BEGIN PERFORM pg_sleep({delay}); RETURN $1; END $$;\n"
)


def cic_folder(directory: Path, count: int, rows: int, delay: float, cic_every: int) -> None:
    """``count`` migrations; every ``cic_every``-th builds a slow index CONCURRENTLY."""
    write_migration(
        directory, 1, "base",
        "CREATE TABLE t (x int);\n" + f"INSERT INTO t SELECT g FROM generate_series(1, {rows}) g;\n"
        + SLOW_FN.format(delay=delay),
        "DROP TABLE t; DROP FUNCTION slow_id(int);",
    )
    for v in range(2, count + 1):
        if v % cic_every == 0:
            up = f"CREATE INDEX CONCURRENTLY t_slow_{v} ON t (slow_id(x + {v}));\n"
            down = f"DROP INDEX CONCURRENTLY IF EXISTS t_slow_{v};\n"
        else:
            up, down = f"CREATE TABLE t{v} (id int);\n", f"DROP TABLE t{v};\n"
        write_migration(directory, v, f"step_{v}", up, down)


def start_up(db_url: str, migrations_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "migrator", "up", "--lock-wait", "120"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_query(url: str, fragment: str, timeout: float = 30.0) -> None:
    """Until a session on ``url``'s database runs ``fragment``: only there (pg_stat_activity lists the whole
    server, where the other xdist worker's tests sleep too; a clean-clone CI run signalled too early)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid() "
                "AND datname = current_database()",
                (f"%{fragment}%",),
            ).fetchone():
                return
            time.sleep(0.05)
    raise AssertionError(f"no backend ran {fragment!r} within {timeout}s")


def check_applied_once(db_url: str, last: int) -> None:
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(last, False)]
        applied = conn.execute(
            "SELECT version, count(*) FROM schema_migrations_history WHERE direction = 'up' AND success GROUP BY 1"
        ).fetchall()
        invalid = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
    assert sorted(applied) == [(v, 1) for v in range(1, last + 1)]
    assert invalid == []


def test_second_up_waits_without_deadlocking_a_create_index_concurrently(db_url: str, migrations_dir: Path) -> None:
    cic_folder(migrations_dir, 3, rows=300, delay=0.01, cic_every=2)  # migration 2: a CIC of ~3 s
    first = start_up(db_url, migrations_dir)
    try:
        wait_for_query(db_url, "CREATE INDEX CONCURRENTLY")
        time.sleep(0.5)
        second = start_up(db_url, migrations_dir)
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    assert [first.returncode, second.returncode] == [0, 0], outs
    check_applied_once(db_url, 3)


def test_parallel_ups_over_cic_migrations_apply_each_once(db_url: str, migrations_dir: Path) -> None:
    """The issue's stress, small: 4 parallel ``up`` over 20 migrations, every 5th a CIC."""
    cic_folder(migrations_dir, 20, rows=100, delay=0.005, cic_every=5)
    procs = []
    for _ in range(4):
        procs.append(start_up(db_url, migrations_dir))
        time.sleep(0.2)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    check_applied_once(db_url, 20)


def test_the_lock_holder_named_is_on_the_same_database(db_url: str, pg_server: str) -> None:
    """Advisory locks belong to one database; the holder named in a lock timeout is the one on the
    migrated database, never a session holding the same lock id on another database of the server."""
    st = StateTable("public", "schema_migrations", dbname_of(db_url))
    others = [create_database(pg_server, prefix="t_other") for _ in range(3)]
    sessions: list[psycopg.Connection] = []
    try:
        for other in others:  # the same lock id, held on other databases of the server
            conn = psycopg.connect(url_for(pg_server, other), autocommit=True, application_name="elsewhere")
            conn.execute("SELECT pg_advisory_lock(%s)", (st.lock_ids[0],))
            sessions.append(conn)
        holder = psycopg.connect(db_url, autocommit=True, application_name="the-real-holder")
        sessions.append(holder)
        holder.execute("SELECT pg_advisory_lock(%s)", (st.lock_ids[0],))
        holder_pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(db_url, autocommit=True) as waiter, pytest.raises(LockTimeoutError) as exc:
            acquire_lock(waiter, st, wait_seconds=0.2)
        assert f"held by pid {holder_pid} (the-real-holder," in str(exc.value), str(exc.value)
    finally:
        for conn in sessions:
            conn.close()
        for other in others:
            drop_database(pg_server, other)
