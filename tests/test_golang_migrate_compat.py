"""Compatibility with golang-migrate's PostgreSQL driver: table layout, state meaning, lock ids."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, dbname_of, write_migration
from migrator.config import Settings, TableName
from migrator.engine import Migrator
from migrator.errors import LockTimeoutError
from migrator.execute.state import StateTable, advisory_lock_id


def test_lock_id_vectors_from_golang_migrate() -> None:
    # database/util_test.go
    assert advisory_lock_id("database_name") == 1764327054
    assert advisory_lock_id("database_name", "schema_name_1") == 2453313553
    # postgres driver: schema, table, then the database name (CLI: URL path with its slash)
    st = StateTable(schema="public", table="schema_migrations", database="askfrank")
    assert st.lock_ids == (4073763377, 2496859180)


def _golang_migrate_layout(url: str, version: int, dirty: bool) -> None:
    """Exactly what golang-migrate v4 creates and writes (postgres.go ensureVersionTable/SetVersion)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "public"."schema_migrations" (version bigint not null primary key, '
            "dirty boolean not null)"
        )
        with conn.transaction():
            conn.execute('TRUNCATE "public"."schema_migrations"')
            conn.execute(
                'INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (%s, %s)', (version, dirty)
            )


def test_continues_a_database_migrated_by_golang_migrate(db_url: str, migrations_dir: Path) -> None:
    for v, t in [(1, "a"), (2, "b"), (3, "c")]:
        write_migration(migrations_dir, v, f"create_{t}", f"CREATE TABLE {t} (id int);", f"DROP TABLE {t};")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE a (id int); CREATE TABLE b (id int);")
    _golang_migrate_layout(db_url, 2, False)
    m = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir))
    r = m.up()
    assert [s.version for s in r.steps] == [3]


def test_golang_migrate_dirty_state_is_refused(db_url: str, migrations_dir: Path, cli) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, 2, "create_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    _golang_migrate_layout(db_url, 1, True)
    r = cli("up", "--database-url", db_url, "--path", str(migrations_dir))
    assert r.code == 1 and "Dirty database version 1. Fix and force version" in r.err
    r = cli("status", "--database-url", db_url, "--path", str(migrations_dir))
    assert r.code == 3


def test_state_table_layout_matches_golang_migrate(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 5, "create_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).up()
    with psycopg.connect(db_url) as conn:
        cols = conn.execute(
            """SELECT column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_name = 'schema_migrations' ORDER BY ordinal_position"""
        ).fetchall()
        pk = conn.execute(
            """SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
               AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'schema_migrations'::regclass AND i.indisprimary"""
        ).fetchall()
        rows = conn.execute("SELECT version, dirty FROM schema_migrations").fetchall()
    assert cols == [("version", "bigint", "NO"), ("dirty", "boolean", "NO")]
    assert pk == [("version",)]
    assert rows == [(5, False)]


def test_lock_held_by_golang_migrate_times_out_clearly(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "create_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    dbname = dbname_of(db_url)
    cli_lock = StateTable("public", "schema_migrations", dbname).lock_ids[0]  # the `migrate` CLI's id
    m = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir, lock_wait_seconds=1.0))
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (cli_lock,))
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as err:
            m.up()
        waited = time.monotonic() - t0
    assert waited >= 0.9
    msg = str(err.value)
    assert f"migration lock {cli_lock}" in msg and "held by pid" in msg and "--lock-wait" in msg
    # released: now it proceeds
    assert [s.version for s in m.up().steps] == [1]


def test_waits_for_lock_then_proceeds(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "create_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    dbname = dbname_of(db_url)
    go_lock = StateTable("public", "schema_migrations", dbname).lock_ids[1]  # Go code's WithInstance id
    holder = psycopg.connect(db_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (go_lock,))
    threading.Timer(0.5, holder.close).start()  # the other process finishes
    m = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir, lock_wait_seconds=10))
    assert [s.version for s in m.up().steps] == [1]


def test_several_processes_apply_each_migration_exactly_once(db_url: str, migrations_dir: Path) -> None:
    for v in range(1, 11):
        write_migration(
            migrations_dir,
            v,
            f"step_{v}",
            f"CREATE TABLE t{v} (id int); SELECT pg_sleep(0.05);",
            f"DROP TABLE t{v};",
        )
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "migrator", "up", "--json"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], results
    with psycopg.connect(db_url) as conn:
        applied = conn.execute(
            "SELECT version, count(*) FROM schema_migrations_history WHERE direction='up' AND success GROUP BY 1"
        ).fetchall()
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(10, False)]
    assert sorted(applied) == [(v, 1) for v in range(1, 11)]


def test_table_name_resolution_defaults_to_current_schema(db_url: str) -> None:
    from migrator.execute.state import resolve_table

    with psycopg.connect(db_url + "?options=-csearch_path%3Dops,public", autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ops")
        st = resolve_table(conn, TableName())
    assert st.schema == "ops" and st.table == "schema_migrations"
