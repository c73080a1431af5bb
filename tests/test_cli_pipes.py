"""Issue 11: what a developer types, through real pipes and terminals.

Every command runs as a subprocess, so stdout is a real pipe (as in ``| grep``, CI logs or
``make``); the force prompt gets a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, reap, write_migration

HEADER = "-- Business justification: T-11 test migration.\n"
LONG_NAME = "add_patient_emergency_contact_relationship_and_preferred_language_columns"


def migrator(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrator", *args], cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, stdin=stdin, timeout=120)


def two_migrations(d: Path) -> None:
    write_migration(d, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);", "DROP TABLE IF EXISTS rooms;")
    write_migration(d, 2, LONG_NAME, HEADER + "ALTER TABLE rooms ADD COLUMN lang text;",
                    "ALTER TABLE rooms DROP COLUMN IF EXISTS lang;")


# --- 11.4 argument errors: one line + where to look, exit 2 ---------------------------------------

@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["goto", "abc"], "error: argument V: 'abc' is not a whole number; see `migrator goto --help`"),
        (["force"], "error: the following arguments are required: V; see `migrator force --help`"),
        (["statsu"], "error: unknown command 'statsu' (did you mean 'status'?); see `migrator --help`"),
        (["status", "--limit", "3"], "error: unrecognized arguments: --limit 3; see `migrator status --help`"),
        (["--json"], "error: the following arguments are required: COMMAND; see `migrator --help`"),  # bare: issue 21
        (["embedded", "start"], "error: unknown command 'start' (did you mean 'status'?); see `migrator embedded --help`"),
    ],
)
def test_argument_errors_are_one_line_naming_the_help(argv: list[str], expected: str) -> None:
    r = migrator(*argv)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [expected]


# --- 11.3 output that fits pipes --------------------------------------------------------------------

def test_validate_into_a_pipe_prints_one_line_per_finding_and_hides_notes(migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    write_migration(migrations_dir, 2, "index_rooms", HEADER + "CREATE INDEX idx_rooms ON rooms (id);",
                    "DROP INDEX IF EXISTS idx_rooms;")
    write_migration(migrations_dir, 3, "index_rooms_concurrently",
                    HEADER + "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_rooms_2 ON rooms (id);",
                    "DROP INDEX CONCURRENTLY IF EXISTS idx_rooms_2;")
    r = migrator("validate", "--path", str(migrations_dir))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert not any(c in r.stdout for c in "┃│━┏"), "no rich boxes into a pipe"
    assert re.fullmatch(r"\S*000002_index_rooms\.up\.sql:2:1: warning: .+ \[MIG003 require-concurrent-index-creation\]",
                        lines[0]), lines
    assert not any(": info: " in ln for ln in lines), "notes are hidden without -v"
    assert lines[-1].endswith("1 warning(s), 2 note(s) (not shown; -v shows them)")
    assert len(lines) == 2
    verbose = migrator("validate", "--path", str(migrations_dir), "-v").stdout.splitlines()
    assert sum(": info: " in ln for ln in verbose) == 2 and "[MIG113 non-transactional]" in verbose[1]


def test_clean_make_migrate_validate_is_quiet() -> None:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    env = {**os.environ, "MIGRATOR": f"{sys.executable} -m migrator"}
    env.pop("MIGRATIONS_PATH", None)
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "migrate-validate"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [r.stdout.strip()] and "0 error(s), 0 warning(s)" in r.stdout


def test_list_and_status_into_a_pipe_are_plain_and_never_cut_names(db_url: str, migrations_dir: Path) -> None:
    two_migrations(migrations_dir)
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    assert migrator("up", "1", env=env).returncode == 0
    listed = migrator("list", env=env)
    assert listed.returncode == 0
    row = next(ln for ln in listed.stdout.splitlines() if ln.startswith("2 "))
    assert row.split() == ["2", LONG_NAME, f"000002_{LONG_NAME}.up.sql", f"000002_{LONG_NAME}.down.sql", "pending"]
    assert not any(c in listed.stdout for c in "┃│━┏…")
    st = migrator("status", env=env)
    assert st.returncode == 0 and LONG_NAME in st.stdout and "…" not in st.stdout
    assert migrator("status", "--json", env=env).stdout.startswith("{")


def test_a_closed_pipe_is_not_an_internal_error(db_url: str, migrations_dir: Path) -> None:
    two_migrations(migrations_dir)
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    r = subprocess.run(f"'{sys.executable}' -m migrator list | head -c 1", shell=True, env=env, capture_output=True,
                       text=True, cwd=ROOT)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


# --- 11.2 force --------------------------------------------------------------------------------------

def _version(db_url: str) -> tuple[int, bool] | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT version, dirty FROM schema_migrations").fetchone()
    return (row[0], row[1]) if row else None


def test_forcing_a_clean_database_to_an_unapplied_version_needs_yes_without_a_terminal(
    db_url: str, migrations_dir: Path
) -> None:
    two_migrations(migrations_dir)
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    assert migrator("up", "1", env=env).returncode == 0
    r = migrator("force", "2", env=env)
    assert r.returncode == 1
    assert f"warning: the database is clean at version 1; forcing 2 marks 1 migration(s) that never ran as applied " \
           f"(2 {LONG_NAME})" in r.stderr
    assert r.stderr.splitlines()[-1] == "error: Force version 2 anyway: refusing without confirmation; add --yes to proceed"
    assert _version(db_url) == (1, False)
    r = migrator("force", "2", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert _version(db_url) == (2, False)


def _force_at_a_terminal(env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Run ``migrator force 2`` with a pseudo-terminal as stdin and answer each prompt in turn."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "migrator", "force", "2"], cwd=ROOT, env={**os.environ, **env},
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        for answer in answers:  # the terminal buffers what is typed until the prompt reads it
            os.write(master, (answer + "\n").encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        reap(proc)
    return proc.returncode, out + err


def test_forcing_a_clean_database_to_an_unapplied_version_asks_again_at_a_terminal(
    db_url: str, migrations_dir: Path
) -> None:
    two_migrations(migrations_dir)
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    assert migrator("up", "1", env=env).returncode == 0
    code, text = _force_at_a_terminal(env, ["n"])
    assert code == 1 and "marks 1 migration(s) that never ran as applied" in text
    assert "Force version 2 anyway? [y/N]" in text and "aborted: nothing was changed" in text
    assert _version(db_url) == (1, False)
    code, text = _force_at_a_terminal(env, ["y"])
    assert code == 0, text
    assert _version(db_url) == (2, False)


def test_make_migrate_force_passes_args(db_url: str, migrations_dir: Path) -> None:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    two_migrations(migrations_dir)
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir),
           "MIGRATOR": f"{sys.executable} -m migrator"}
    assert migrator("up", env={"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}).returncode == 0
    with psycopg.connect(db_url) as conn:  # as a failed non-transactional migration leaves it
        conn.execute("UPDATE schema_migrations SET dirty = true")

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "-C", str(ROOT), "migrate-force", *args], env=env, capture_output=True,
                              text=True)

    r = make("V=1", "ARGS=--expect 1")
    assert r.returncode == 2 or r.returncode == 1
    assert "refusing to force: the database records version 2 (dirty), not the expected 1" in r.stderr
    r = make("V=2", "ARGS=--expect 2")
    assert r.returncode == 0, r.stderr
    assert _version(db_url) == (2, False)
    r = make("V=-1", "ARGS=--yes --expect 2")  # a negative version still reaches force as V, not as an option
    assert r.returncode == 0, r.stderr
    assert _version(db_url) is None  # golang-migrate's "no version": no row


# --- 11.6 migrator embedded -------------------------------------------------------------------------

@pytest.mark.db  # starts the embedded PostgreSQL
def test_embedded_url_psql_status_stop() -> None:
    import tempfile

    # outside pytest's basetemp (0700 folders the server's own user cannot enter when tests run as root)
    tmp_path = Path(tempfile.mkdtemp(prefix="migrator-embedded-cli-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MIGRATOR_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    try:
        _embedded_commands(tmp_path, env)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _embedded_commands(tmp_path: Path, env: dict[str, str]) -> None:

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "migrator", "embedded", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    st = run("status")
    assert st.returncode == 3 and st.stdout.startswith("not created: no data in ")
    try:
        url = run("url")
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip().startswith("postgresql://") and str(tmp_path / "pgdata") in url.stdout
        with psycopg.connect(url.stdout.strip()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("askfrank",)
        q = run("psql", "--", "-Atc", "SELECT 6 * 7")
        assert q.returncode == 0 and q.stdout.strip() == "42", q.stderr
        st = run("status", "--json")
        data = json.loads(st.stdout)
        assert st.returncode == 0 and data["running"] is True and data["version"] == "18" and data["pid"] > 0
    finally:
        stop = run("stop")
    assert stop.returncode == 0 and stop.stderr.startswith("stopped the embedded PostgreSQL in ")
    st = run("status")
    assert st.returncode == 3 and st.stdout.startswith("stopped: PostgreSQL 18")
    assert run("stop").stderr.strip().endswith("was not running")


# --- 11.5 what the README tells people to type prints only the command's own output -----------------

def test_uv_run_and_make_print_only_the_commands_output(db_url: str, migrations_dir: Path) -> None:
    """uv's compile-bytecode setting made every `uv run` recompile the venv and say so (uv#12202)."""
    uv = shutil.which("uv")
    if not uv:
        pytest.skip("uv not installed")
    r = subprocess.run([uv, "run", "--frozen", "migrator", "--version"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("migrator ")
    assert r.stderr == "", r.stderr
    if not shutil.which("make"):
        return
    two_migrations(migrations_dir)
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    env.pop("MIGRATOR", None)
    m = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "migrate-up"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert m.returncode == 0, m.stderr
    assert m.stdout == ""  # no echoed command line
    assert m.stderr.splitlines()[0].startswith("1/u create_rooms (")
