"""``--table`` names that would touch something not ours are refused up front, in one line, with
nothing created (issue 10.11)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from conftest import write_migration


def relations(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'v', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()}


@pytest.fixture
def one(migrations_dir: Path) -> Path:
    write_migration(migrations_dir, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    return migrations_dir


@pytest.mark.parametrize(
    ("setup", "table", "expected"),
    [
        ("", "t" * 56, "PostgreSQL truncates names to 63"),  # t*56 + _history = 64 bytes
        ("", '"' + "é" * 28 + '"', "PostgreSQL truncates names to 63"),  # 56 bytes of UTF-8 + _history
        ("", "pg_catalog.schema_migrations", "system schema pg_catalog"),
        ("", "information_schema.m", "system schema information_schema"),
        ("CREATE TABLE users (id bigint PRIMARY KEY, email text)", "users", "is not a golang-migrate state table"),
        ("CREATE TABLE schema_migrations (version varchar NOT NULL PRIMARY KEY)", "",
         "is not a golang-migrate state table (a table with columns version character varying"),
        ("CREATE VIEW sm AS SELECT 1::bigint AS version, false AS dirty", "sm", "a view"),
        ("CREATE TABLE orders_history (id int, payload text)", "orders", "is not this tool's audit table"),
        ("", "nosuch.schema_migrations", "schema 'nosuch' of the migrations table"),
    ],
)
def test_refused_in_one_line_with_nothing_created(
    cli, db_url: str, one: Path, setup: str, table: str, expected: str  # type: ignore[no-untyped-def]
) -> None:
    if setup:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(setup)
    before = relations(db_url)
    args = ["up", "--database-url", db_url, "--path", str(one)] + (["--table", table] if table else [])
    r = cli(*args)
    assert r.code == 2, r
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.err
    assert relations(db_url) == before  # nothing created, not even the audit table
    if "nosuch" not in table:  # status creates nothing, so a missing schema just means "no version"
        assert cli("status", "--database-url", db_url, "--path", str(one), *(["--table", table] if table else [])).code == 2


def test_longest_accepted_name_and_a_golang_migrate_table_work(cli, db_url: str, one: Path) -> None:  # type: ignore[no-untyped-def]
    name = "t" * 55  # + _history = 63 bytes: fits
    assert cli("up", "--database-url", db_url, "--path", str(one), "--table", name).code == 0
    assert f"public.{name}_history" in relations(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:  # exactly golang-migrate's DDL
        conn.execute("CREATE TABLE gm (version bigint not null primary key, dirty boolean not null)")
        conn.execute("INSERT INTO gm VALUES (1, false)")
    assert cli("up", "--database-url", db_url, "--path", str(one), "--table", "gm").code == 0
    assert "public.gm_history" in relations(db_url)
