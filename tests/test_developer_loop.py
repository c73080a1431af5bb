"""Issue 21: the developer's day through make and the CLI: help pages, make-aware messages, pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, write_migration

HEADER = "-- Business justification: T-21 developer loop test.\n"


def make(target: str, *vars_: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MIGRATOR": f"{sys.executable} -m migrator", **env}
    full.pop("MIGRATOR_VIA_MAKE", None)
    return subprocess.run(["make", "-s", "-C", str(ROOT), target, *vars_], env=full, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, cwd=cwd)


def migrator(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("MIGRATOR_VIA_MAKE", None)
    return subprocess.run([sys.executable, "-m", "migrator", *args], env=full, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, cwd=cwd)


def _two(d: Path) -> None:
    write_migration(d, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);", "DROP TABLE IF EXISTS rooms;")
    write_migration(d, 2, "add_room_lang", HEADER + "ALTER TABLE rooms ADD COLUMN lang text;",
                    "ALTER TABLE rooms DROP COLUMN IF EXISTS lang;")


def test_bare_migrator_lists_the_commands(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli()
    assert r.code == 2
    for command in ("up", "down-all", "status", "validate", "recover", "fleet-status"):
        assert f"\n    {command} " in r.err
    assert "the following arguments are required" not in r.err


def test_command_pages_show_their_arguments_and_the_globals_once(cli) -> None:  # type: ignore[no-untyped-def]
    top = cli("--help")
    assert top.code == 0 and "--database-url URL" in top.out and "--lock-wait SECONDS" in top.out
    for args, own in ((["goto"], "the version to end at"), (["force"], "the version to record"),
                      (["history"], "--limit N"), (["backups", "list"], "--all")):
        page = cli(*args, "--help")
        assert page.code == 0 and own in page.out, page.out
        assert "--database-url" not in page.out.split("global options (")[0]  # not in usage, not as a block
        assert "`migrator --help` describes them" in page.out
        assert len(page.out.splitlines()) < 25
    # the globals still work on every command, before or after it
    assert cli("goto", "--help", "--json").code == 0


def test_make_down_all_says_yes_1_and_the_cli_says_yes(db_url: str, migrations_dir: Path) -> None:
    _two(migrations_dir)
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    assert migrator("up", env=env).returncode == 0
    by_make = make("migrate-down-all", env=env)
    assert by_make.returncode == 2 and "add YES=1 to proceed" in by_make.stderr and "--yes" not in by_make.stderr
    direct = migrator("down-all", env=env)
    assert direct.returncode == 1 and "add --yes to proceed" in direct.stderr
    done = make("migrate-down-all", "YES=1", env=env)
    assert done.returncode == 0, done.stderr
    assert "version 2 -> none (2 migrations)" in done.stderr and "-1" not in done.stderr


def test_status_ways_out_in_make_form(tmp_path: Path, db_url: str) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id int PRIMARY KEY);",
                    "DROP TABLE IF EXISTS patients;")
    write_migration(d, 2, "add_patient_email", HEADER + "ALTER TABLE patients ADD COLUMN email text;\n"
                    "CREATE INDEX CONCURRENTLY idx_patients_email ON patients (emial);\n",
                    "DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email;\n")
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(d)}
    assert migrator("up", env=env).returncode == 1
    st = make("migrate-status", env=env)
    assert st.returncode == 2 and "Error 3" in st.stderr  # GNU make's own code; its line names ours
    # ... and the line before make's says what 3 means and how a script gets the code itself
    assert "migrator status exited 3: the database is dirty. make shows that as `Error 3`" in st.stderr
    assert "a script that branches on 3 runs `.venv/bin/migrator status`" in st.stderr
    again = make("migrate-up", env=env)  # the core's error, in the make forms status uses
    assert again.returncode == 2 and "Dirty database version 2" in again.stderr
    assert "`make migrate-status` shows what ran" in again.stderr and "`.venv/bin/migrator recover`" in again.stderr
    assert 'then `make migrate-force V=... ARGS="--expect 2"`' in again.stderr
    assert "`migrator " not in again.stderr and "exited" not in again.stderr  # 1 is plain failure: no extra line
    assert 'then `make migrate-force V=2 ARGS="--expect 2"`' in st.stdout
    assert 'then `make migrate-force V=1 ARGS="--expect 2"`' in st.stdout
    assert "`.venv/bin/migrator recover` shows what each action would do now" in st.stdout
    direct = migrator("status", env=env)
    assert direct.returncode == 3 and "`migrator force 2 --expect 2`" in direct.stdout
    assert "exited 3" not in direct.stderr  # outside make the exit code speaks for itself
    up = migrator("up", env=env)
    assert "`migrator status` shows what ran" in up.stderr and "make" not in up.stderr


def test_a_bad_make_argument_points_at_the_venvs_help_page(tmp_path: Path) -> None:
    env = {"MIGRATIONS_PATH": str(tmp_path)}
    r = make("migrate-goto", "V=abc", env=env)
    assert r.returncode == 2 and "error: argument V: 'abc' is not a whole number; see " \
        "`.venv/bin/migrator goto --help`" in r.stderr, r.stderr
    direct = migrator("goto", "abc", env=env)
    assert direct.returncode == 2 and direct.stderr.endswith("see `migrator goto --help`\n"), direct.stderr


def test_make_forms_of_suggested_commands(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from migrator.commands import exit_line, make_forms

    text = "run `migrator status`, then `migrator force V --expect 3` or `migrator recover --resume`"
    monkeypatch.delenv("MIGRATOR_VIA_MAKE", raising=False)
    assert make_forms(text) == text and exit_line("status", 3) is None
    monkeypatch.setenv("MIGRATOR_VIA_MAKE", "1")
    cases = {
        "`migrator status`": "`make migrate-status`",
        "`migrator status --check`": '`make migrate-status ARGS="--check"`',
        "`migrator up 2`": "`make migrate-up N=2`",
        "`migrator goto 7`": "`make migrate-goto V=7`",
        "`migrator force 12 --expect 13`": '`make migrate-force V=12 ARGS="--expect 13"`',
        "`migrator force V --expect 3`": '`make migrate-force V=... ARGS="--expect 3"`',
        "`migrator recover --resume`": "`.venv/bin/migrator recover --resume`",
        "`migrator embedded psql`": "`.venv/bin/migrator embedded psql`",
        "no command here": "no command here",
    }
    for given, expected in cases.items():
        assert make_forms(given) == expected, given
    assert exit_line("status", 1) is None and exit_line("up", 3) is None
    assert "exited 4: migrations are pending" in (exit_line("status", 4) or "")
    assert "exited 3: the live schema differs" in (exit_line("drift", 3) or "")


def test_create_without_justification_says_validate_will_refuse(tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    env = {"MIGRATIONS_PATH": str(d)}
    r = migrator("create", "add_rooms", env=env)
    assert r.returncode == 0 and "is TODO: `migrator validate` fails (MIG202)" in r.stderr
    assert migrator("validate", env=env).returncode == 1
    m = make("migrate-create", "NAME=add_beds", env=env)
    assert m.returncode == 0 and "`make migrate-validate` fails (MIG202)" in m.stderr
    assert "ARGS='--justification" in m.stderr
    ok = migrator("create", "add_wards", "--justification", "TICKET-9 wards", env=env)
    assert ok.returncode == 0 and "TODO" not in ok.stderr


def test_backups_list_into_a_pipe_is_plain(tmp_path: Path, db_url: str, migrations_dir: Path) -> None:
    _two(migrations_dir)
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir), "BACKUP_URL": f"file://{tmp_path}/b"}
    assert migrator("up", env=env).returncode == 0
    assert migrator("backup", env=env).returncode == 0, "backup"
    listed = migrator("backups", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert not any(c in listed.stdout for c in "┃│━┏┡└…"), listed.stdout
    rows = listed.stdout.splitlines()
    assert rows[1].split()[0] == "key" and rows[2].split()[0].endswith("_v2.dump")
