"""Issue 11.1: ``status`` on a really dirty database says what failed, what ran, and both ways out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from conftest import write_migration

HEADER = "-- Business justification: T-11 dirty-state triage test.\n"


def migrator(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrator", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def _dirty_project(tmp_path: Path, db_url: str) -> dict[str, str]:
    """A misspelled column in a CREATE INDEX CONCURRENTLY, after an ADD COLUMN that succeeds."""
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id int PRIMARY KEY);",
                    "DROP TABLE IF EXISTS patients;")
    write_migration(
        d, 2, "add_patient_email",
        HEADER + "ALTER TABLE patients ADD COLUMN email text;\n\n"
        "CREATE INDEX CONCURRENTLY idx_patients_email ON patients (emial);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email;\nALTER TABLE patients DROP COLUMN IF EXISTS email;\n",
    )
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": "migrations"}
    up = migrator("up", cwd=tmp_path, env=env)
    assert up.returncode == 1 and "DIRTY at version 2" in up.stderr
    return env


def test_status_on_a_dirty_database_shows_the_failure_the_statements_and_both_ways_out(
    tmp_path: Path, db_url: str
) -> None:
    env = _dirty_project(tmp_path, db_url)
    r = migrator("status", cwd=tmp_path, env=env)
    assert r.returncode == 3
    out = r.stdout.splitlines()
    assert out[0].endswith("version 2, DIRTY; 1 applied, 1 partly applied, 0 pending; latest file 2")
    row = next(ln for ln in out if ln.startswith("2 "))
    assert row.split()[:4] == ["2", "add_patient_email", "DIRTY:", "partly"]
    i = out.index("DIRTY: migration 2 add_patient_email (up) failed at migrations/000002_add_patient_email.up.sql:4")
    assert out[i + 1] == '  error: column "emial" does not exist'
    assert out[i + 2] == "  statement: CREATE INDEX CONCURRENTLY idx_patients_email ON patients (emial)"
    assert out[i + 3] == "  statements (1 of 2 ran and stay applied):"
    assert out[i + 4].split() == ["1", "line", "2", "done", "ALTER", "TABLE", "patients", "ADD", "COLUMN", "email",
                                  "text"]
    assert out[i + 5].split()[:4] == ["2", "line", "4", "FAILED"]
    text = r.stdout
    assert "finish by hand: run the failed statement (fixed) and the ones after it, then " \
           "`migrator force 2 --expect 2` (records 2 as applied)" in text
    assert "undo by hand:   revert the statements that ran, then `migrator force 1 --expect 2` " \
           "(records 1: migration 2 stays pending" in text
    assert "INVALID index" in text
    assert "`migrator recover` shows what each action would do now; `migrator recover --resume` runs" in text

    st = json.loads(migrator("status", "--json", cwd=tmp_path, env=env).stdout)
    assert st["dirty"] is True and st["failure"]["version"] == 2
    assert [s["state"] for s in st["failure"]["statements"]] == ["done", "failed"]

    hist = migrator("history", cwd=tmp_path, env=env)
    assert hist.returncode == 0
    header = hist.stdout.splitlines()[1].split()
    assert header[-1] == "error"
    failed_row = next(ln for ln in hist.stdout.splitlines()[2:] if " NO " in ln)
    assert failed_row.rstrip().endswith('column "emial" does not exist')

    # the first way out, as printed: finish by hand, then force 2 --expect 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email")
        conn.execute("CREATE INDEX CONCURRENTLY idx_patients_email ON patients (email)")
    forced = migrator("force", "2", "--expect", "2", cwd=tmp_path, env=env)
    assert forced.returncode == 0, forced.stderr
    clean = migrator("status", cwd=tmp_path, env=env)
    assert clean.returncode == 0 and "version 2, clean; 2 applied, 0 pending" in clean.stdout


def test_status_on_a_database_dirtied_by_another_tool_says_no_audit_row_and_both_ways_out(
    tmp_path: Path, db_url: str
) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id int);", "DROP TABLE IF EXISTS patients;")
    write_migration(d, 2, "add_email", HEADER + "ALTER TABLE patients ADD COLUMN email text;",
                    "ALTER TABLE patients DROP COLUMN IF EXISTS email;")
    with psycopg.connect(db_url) as conn:  # what golang-migrate leaves after a failed version 2
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (2, true)")
    r = migrator("status", cwd=tmp_path, env={"DATABASE_URL": db_url, "MIGRATIONS_PATH": "migrations"})
    assert r.returncode == 3
    assert "DIRTY: migration 2 did not finish; no audit row says which statements ran" in r.stdout
    assert "`migrator force 2 --expect 2`" in r.stdout and "`migrator force 1 --expect 2`" in r.stdout


def test_a_failed_down_offers_to_finish_the_revert_or_restore_what_it_removed(tmp_path: Path, db_url: str) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id int PRIMARY KEY, email text);",
                    "DROP TABLE IF EXISTS patients;")
    write_migration(
        d, 2, "add_patient_email_index",
        HEADER + "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_patients_email ON patients (email);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email;\nALTER TABLE patients DROP COLUMN emial;\n",
    )
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": "migrations"}
    assert migrator("up", cwd=tmp_path, env=env).returncode == 0
    down = migrator("down", cwd=tmp_path, env=env)
    assert down.returncode == 1
    r = migrator("status", cwd=tmp_path, env=env)
    assert r.returncode == 3
    assert "version 1, DIRTY; 1 applied, 1 partly reverted, 0 pending" in r.stdout
    assert "DIRTY: migration 2 add_patient_email_index (down) failed at " \
           "migrations/000002_add_patient_email_index.down.sql:2" in r.stdout
    assert "finish by hand: run the rest of the down, then `migrator force 1 --expect 1` (records 1 as applied)" \
        in r.stdout
    assert "undo by hand:   restore what the down removed, then `migrator force 2 --expect 1` " \
           "(records 2: migration 2 stays applied)" in r.stdout


def test_force_on_a_dirty_database_says_which_statements_ran_and_what_it_claims(
    tmp_path: Path, db_url: str
) -> None:
    """Issue 21: force on a dirty database said nothing about the statements that stay applied."""
    env = _dirty_project(tmp_path, db_url)
    back = migrator("force", "1", "--expect", "2", cwd=tmp_path, env=env)
    assert back.returncode == 0, back.stderr
    assert ("warning: migration 2 add_patient_email (up) stopped part-way: statement(s) 1 (line 2) of 2 ran and "
            "stay applied. force runs and undoes no SQL: recording 1 says that you reverted what ran by hand "
            "(else the next up runs those statements again)") in back.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:  # the same failure again, then the other way out
        conn.execute("ALTER TABLE patients DROP COLUMN email")
    assert migrator("up", cwd=tmp_path, env=env).returncode == 1
    ahead = migrator("force", "2", cwd=tmp_path, env=env)
    assert ahead.returncode == 0, ahead.stderr
    assert "recording 2 says that you ran the rest of the file by hand" in ahead.stderr
    clean = migrator("force", "1", "--yes", cwd=tmp_path, env=env)  # clean now: no statement warning
    assert "stopped part-way" not in clean.stderr


def test_cli_recover_speaks_of_the_folder_and_flags_not_the_prefect_form(tmp_path: Path, db_url: str) -> None:
    """Issue 21: the CLI's recover showed the form's words (the worker, submit, choose mark_applied)."""
    env = _dirty_project(tmp_path, db_url)
    r = migrator("recover", cwd=tmp_path, env=env)
    assert r.returncode == 3, r.stderr
    assert "as it is in the migrations folder when you run it" in r.stdout, r.stdout
    for form_word in ("worker", "submit", "choose ", "force flow"):
        assert form_word not in r.stdout + r.stderr, form_word
    from migrator.commands.recover import cli_words

    assert cli_words("finish by hand and choose mark_applied, or revert") == "finish by hand and use --mark-applied, or --revert"
    assert cli_words("migration 3 has no down file on the worker; undo the change by hand, then use the force flow "
                     "to record the previous version") == ("migration 3 has no down file in the migrations folder; "
                                                          "undo the change by hand, then `migrator force` the previous "
                                                          "version")
