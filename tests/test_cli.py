"""The CLI: every engine command, exit codes, one-line errors, and credentials never printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, write_migration

SENTINEL = "S3ntinel-Pa55word"


def with_password(url: str, password: str = SENTINEL) -> str:
    # trust auth ignores the password, so the URL still connects
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


@pytest.fixture
def two(migrations_dir: Path) -> Path:
    write_migration(migrations_dir, 1, "create_a", "CREATE TABLE a (id int);", "DROP TABLE IF EXISTS a;")
    write_migration(migrations_dir, 2, "create_b", "CREATE TABLE b (id int);", "DROP TABLE IF EXISTS b;")
    return migrations_dir


def test_every_engine_command(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    g = ["--database-url", db_url, "--path", str(two)]
    r = cli("version", *g)
    assert r.code == 1 and r.err.strip() == "error: no migration"
    r = cli("status", "--check", *g)
    assert r.code == 4 and "2 pending" in r.out
    r = cli("up", "1", *g)
    assert r.code == 0 and "1/u create_a (" in r.err
    r = cli("status", "--json", *g)
    st = json.loads(r.out)
    assert r.code == 0 and st["version"] == 1 and [m["version"] for m in st["pending"]] == [2]
    r = cli("up", *g)
    assert r.code == 0 and "2/u create_b" in r.err
    r = cli("up", *g)
    assert r.code == 0 and "no change" in r.err
    r = cli("version", *g)
    assert r.out.strip() == "2"
    r = cli("status", "--check", *g)
    assert r.code == 0
    r = cli("list", "--json", *g)
    assert [(m["version"], m["state"]) for m in json.loads(r.out)["migrations"]] == [(1, "applied"), (2, "applied")]
    r = cli("down", *g)
    assert r.code == 0 and "2/d create_b" in r.err
    r = cli("goto", "2", "--json", *g)
    assert json.loads(r.out)["version_after"] == 2
    r = cli("down-all", *g)  # no TTY, no --yes
    assert r.code == 1 and "add --yes" in r.err
    r = cli("down-all", "--yes", *g)
    assert r.code == 0
    r = cli("reset", "--yes", *g)
    assert r.code == 0 and "version none -> 2" in r.err
    r = cli("force", "1", *g)  # clean database: forcing it elsewhere asks, and without a terminal needs --yes
    assert r.code == 1 and "add --yes" in r.err
    r = cli("force", "1", "--yes", *g)
    assert r.code == 0
    r = cli("history", "--json", *g)
    hist = json.loads(r.out)
    assert hist[0]["direction"] == "force" and hist[0]["to_version"] == 1
    r = cli("history", *g)
    assert r.code == 0 and "audit trail" in r.out


def test_global_options_before_or_after_command(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("--json", "--database-url", db_url, "--path", str(two), "status")
    assert r.code == 0 and json.loads(r.out)["version"] == -1


def test_environment_variables(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("up", env={"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(two), "MIGRATIONS_TABLE": "my_versions"})
    assert r.code == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version FROM my_versions").fetchone() == (2,)


def test_dirty_status_exits_non_zero(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "bad", "VACUUM;\nSELECT * FROM nowhere;", "SELECT 1;")
    g = ["--database-url", db_url, "--path", str(migrations_dir)]
    r = cli("up", *g)
    assert r.code == 1 and "DIRTY at version 1" in r.err and "000001_bad.up.sql:2:15" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "`migrator recover` shows which statements ran" in r.err
    assert "force" not in r.err  # a bare force (no --expect) is not the advice: recover is
    r = cli("status", *g)
    assert r.code == 3 and "DIRTY" in r.out
    r = cli("status", "--json", *g)
    assert r.code == 3 and json.loads(r.out)["dirty"] is True
    r = cli("version", *g)
    assert r.out.strip() == "1 (dirty)"
    r = cli("up", "--json", *g)
    assert r.code == 1 and "Dirty database version 1" in r.err


def test_failed_migration_json_has_location(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "bad", "CREATE TABLE x (id int);\nINSERT INTO x VALUES ('nan');", "SELECT 1;")
    r = cli("up", "--json", "--database-url", db_url, "--path", str(migrations_dir))
    assert r.code == 1
    data = json.loads(r.out)
    assert data["ok"] is False and data["line"] == 2 and data["version"] == 1 and data["dirty"] is False
    assert "invalid input syntax" in data["pg_message"]


def test_create_command(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "m"
    r = cli("create", "add_patient_table", "--path", str(d))
    assert r.code == 0 and (d / "000001_add_patient_table.up.sql").exists()
    r = cli("create", "Add Patient", "--path", str(d))
    assert r.code == 2 and "not descriptive snake_case" in r.err and "Traceback" not in r.err
    r = cli("create", "add_patient_table", "--path", str(d))
    assert r.code == 1 and "already exists" in r.err


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["status"], {"MIGRATOR_LOCK_TIMEOUT": "soon"}, "--lock-timeout / MIGRATOR_LOCK_TIMEOUT='soon' is not a duration"),
        (["status", "--table", "a.b.c"], {}, "migrations table 'a.b.c' is not a valid name"),
        (["status", "--database-url", "mysql://u:pw@h/db"], {}, "scheme 'mysql' is not PostgreSQL"),
        (["status", "--path", "/nonexistent/migrations"], {}, "does not exist; create it or point --path"),
        (["status"], {"MIGRATOR_LOCK_WAIT": "forever"}, "MIGRATOR_LOCK_WAIT='forever' is not a number"),
        (["status"], {"WEBHOOK_FORMAT": "xml"}, "WEBHOOK_FORMAT / --webhook-format='xml': use json or slack"),
    ],
)
def test_bad_settings_one_line_errors(cli, two: Path, args: list[str], env: dict[str, str], expected: str) -> None:  # type: ignore[no-untyped-def]
    base_env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres", "MIGRATIONS_PATH": str(two)}
    r = cli(*args, env={**base_env, **env})
    assert r.code in (1, 2)
    assert expected in r.err
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: ")


def test_password_never_printed(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "ok", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, 2, "bad", "SELECT 1/0;", "SELECT 1;")
    url = with_password(db_url)
    outputs = []
    for args in (["up", "1"], ["status"], ["status", "--json"], ["up"], ["up", "--json"], ["list", "--json"],
                 ["history", "--json"], ["version"], ["up", "-v"]):
        r = cli(*args, "--path", str(migrations_dir), env={"DATABASE_URL": url})
        outputs.append(r.out + r.err)
    # a connection failure echoes the URL: still redacted
    bad = with_password(db_url).replace(":5432/", ":1/")
    r = cli("status", "--database-url", bad, "--path", str(migrations_dir))
    assert r.code == 2 and "cannot connect to postgresql://postgres:****@127.0.0.1:1/" in r.err
    outputs.append(r.out + r.err)
    r = cli("status", "--database-url", "host=127.0.0.1 port=1 user=postgres password=" + SENTINEL,
            "--path", str(migrations_dir))
    outputs.append(r.out + r.err)
    assert r.code == 2
    for text in outputs:
        assert SENTINEL not in text
    with psycopg.connect(db_url) as conn:  # nor in the audit trail
        rows = conn.execute("SELECT * FROM schema_migrations_history").fetchall()
    assert SENTINEL not in repr(rows)


def test_makefile_targets_call_the_cli(db_url: str, tmp_path: Path) -> None:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    d = tmp_path / "m"
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(d), "MIGRATOR": f"{sys.executable} -m migrator"}

    def make(*targets: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "-C", str(ROOT), *targets], env=env, capture_output=True, text=True)

    assert make("migrate-create", "NAME=add_thing").returncode == 0
    up = d / "000001_add_thing.up.sql"
    up.write_text(up.read_text() + "CREATE TABLE thing (id int);\n")
    down = d / "000001_add_thing.down.sql"
    down.write_text(down.read_text() + "DROP TABLE IF EXISTS thing;\n")
    for target in ("migrate-up", "migrate-status", "migrate-list", "migrate-down", "migrate-goto V=1",
                   "migrate-force V=1", "migrate-reset YES=1", "migrate-down-all YES=1", "migrate-tool-up", "migrate-tool-status",
                   "migrate-tool-down"):
        r = make(*target.split())
        assert r.returncode == 0, (target, r.stdout, r.stderr)
    r = make("migrate-create")  # no NAME, no TTY
    assert r.returncode != 0 and "NAME=" in (r.stdout + r.stderr)


@pytest.mark.db  # starts the embedded PostgreSQL (in a subprocess)
def test_embedded_default_on_a_fresh_folder(tmp_path: Path) -> None:
    """No DATABASE_URL: the CLI starts the embedded PostgreSQL in ./.migrator and migrates it."""
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATIONS_PATH")}
    run = [sys.executable, "-m", "migrator"]
    try:
        r = subprocess.run([*run, "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*run, "status", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
        st = json.loads(r.stdout)
        assert st["database"] == "askfrank" and st["pending"] == [] and st["version"] >= 8
        assert (tmp_path / ".migrator" / ".gitignore").read_text() == "*\n"
    finally:
        from migrator import embedded

        embedded.stop(tmp_path / ".migrator" / "pgdata")


def test_status_shows_recent_applied_unless_all(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    for v in range(1, 13):
        write_migration(migrations_dir, v, f"create_t{v}", f"CREATE TABLE t{v} (id int);", f"DROP TABLE t{v};")
    g = ["--database-url", db_url, "--path", str(migrations_dir)]
    assert cli("up", "11", *g).code == 0
    r = cli("status", *g)
    assert "1 earlier applied migrations not shown" in r.out and "create_t12" in r.out
    assert "create_t1 " not in r.out and "create_t2 " in r.out
    r = cli("status", "--all", *g)
    assert "create_t1 " in r.out and "not shown" not in r.out
    assert len(json.loads(cli("status", "--json", *g).out)["applied"]) == 11


def test_command_owners_name_the_module_that_registers_each_command() -> None:
    """cli.COMMAND_OWNERS lets a run build only its command's parser; it must match the modules."""
    import argparse

    from migrator.cli import COMMAND_MODULES, COMMAND_OWNERS, build_parser

    owners: dict[str, str] = {}
    for module in COMMAND_MODULES:
        parser = build_parser()
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        before = set(sub.choices)
        scratch = argparse.ArgumentParser()
        scratch_sub = scratch.add_subparsers()
        __import__(module, fromlist=["register"]).register(scratch_sub, argparse.ArgumentParser(add_help=False))
        owners.update(dict.fromkeys(scratch_sub.choices, module))
        assert set(scratch_sub.choices) <= before
    assert owners == COMMAND_OWNERS
    only = build_parser(["--env", "validate", "status", "--json"])
    (sub,) = [a for a in only._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {k for k, v in COMMAND_OWNERS.items() if v == "migrator.commands.engine"}
