"""Hostile input (issue 10 items 5, 6, 8, 9, 10, 12) against the real PostgreSQL on 127.0.0.1:5432.

Credentials are checked in a fresh ``migrator`` process per command, so that no secret registered
by an earlier test can mask a leak; the rest runs the CLI in-process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import dbname_of, url_for, write_migration
from migrator import files
from migrator.errors import MigrationFileError

# Every reserved character a password may hold unencoded; each piece is distinctive so that a
# leak of any fragment (e.g. the part before '#', which the old parser took as a port) is seen.
PIECES = ("Zq7Lk", "Wv3Mx", "Rt9Pz", "Hb4Ny")
PASSWORD = f"{PIECES[0]}#{PIECES[1]}?{PIECES[2]}@{PIECES[3]}"


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def _migrator(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATOR_ENV")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "migrator", *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _assert_no_piece(text: str, pieces: tuple[str, ...] = PIECES) -> None:
    for piece in pieces:
        assert piece not in text, f"password fragment {piece!r} leaked in: {text}"


def _has_state_table(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone() == (True,)


def _version(url: str) -> tuple[int, bool] | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version, dirty FROM schema_migrations").fetchone()
        return (int(row[0]), bool(row[1])) if row else None


@pytest.fixture
def two(migrations_dir: Path) -> Path:
    write_migration(migrations_dir, 1, "create_a", "-- Business justification: t\nCREATE TABLE a (id int);",
                    "-- Business justification: t\nDROP TABLE IF EXISTS a;")
    write_migration(migrations_dir, 2, "create_b", "-- Business justification: t\nCREATE TABLE b (id int);",
                    "-- Business justification: t\nDROP TABLE IF EXISTS b;")
    return migrations_dir


COMMANDS = (
    ["up"], ["up", "--json"], ["-v", "up"], ["status"], ["status", "--json"], ["-v", "status"],
    ["history"], ["history", "--json"], ["validate"], ["validate", "--format", "json"], ["-v", "validate"],
)


# -- item 5: passwords with # ? / @ never leak --------------------------------------------------

def test_password_with_reserved_characters_never_leaks_unreachable(two: Path, tmp_path: Path) -> None:
    """Port 1: every command fails to connect, names the host, and shows no piece of the password."""
    url = f"postgres://postgres:{PASSWORD}@127.0.0.1:1/db"
    for args in (*COMMANDS, ["backup", "--to", f"file://{tmp_path}/b"], ["-v", "backup", "--to", f"file://{tmp_path}/b"]):
        r = _migrator(*args, "--path", str(two), env={"DATABASE_URL": url}, cwd=tmp_path)
        _assert_no_piece(r.stdout + r.stderr)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (args, r.stderr)
        if args[-1] != "validate" and "json" not in args:
            assert "127.0.0.1" in r.stderr and "port 1" in r.stderr, (args, r.stderr)
    # the same URL given with --database-url
    r = _migrator("status", "--database-url", url, "--path", str(two), env={}, cwd=tmp_path)
    assert r.returncode == 2 and "postgresql://postgres:****@127.0.0.1:1/db" in r.stderr
    _assert_no_piece(r.stderr)


def test_password_with_reserved_characters_connects_and_never_leaks(db_url: str, two: Path, tmp_path: Path) -> None:
    """127.0.0.1:5432 with trust auth: the password is split as meant (the host is not 'x@127...'),
    the migrations apply, and no output or audit row holds any piece of it."""
    url = _with_password(db_url, PASSWORD)
    outputs = []
    for args in (*COMMANDS, ["backup", "--to", f"file://{tmp_path}/b"], ["-v", "backup", "--to", f"file://{tmp_path}/b"],
                 ["backups", "list", "--from", f"file://{tmp_path}/b", "--json"]):
        r = _migrator(*args, "--path", str(two), env={"DATABASE_URL": url}, cwd=tmp_path)
        assert "Traceback" not in r.stderr and "cannot connect" not in r.stderr, (args, r.stderr)
        outputs.append(r.stdout + r.stderr)
    for text in outputs:
        _assert_no_piece(text)
    assert _version(db_url) == (2, False)
    with psycopg.connect(db_url) as conn:
        _assert_no_piece(repr(conn.execute("SELECT * FROM schema_migrations_history").fetchall()))
    assert any(p.name.endswith(".dump") or p.is_file() for p in (tmp_path / "b").rglob("*"))


@pytest.mark.parametrize("password", ["Zq7Lk/Wv3Mx", "Zq7Lk/Wv3Mx@Rt9Pz#Hb4Ny", "Zq7Lk:Wv3Mx/Rt9Pz"])
def test_url_that_cannot_be_split_is_wholly_secret(password: str, db_url: str, two: Path, tmp_path: Path) -> None:
    """A '/' in the password cannot be told from the path: refused before connecting, nothing shown."""
    url = _with_password(db_url, password)
    pieces = tuple(p for p in PIECES if p in password)
    for args in (["status"], ["up", "--json"], ["-v", "history"], ["validate"]):
        r = _migrator(*args, "--path", str(two), env={"DATABASE_URL": url}, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "cannot be read as a PostgreSQL URL" in r.stderr and "%2F" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        _assert_no_piece(r.stdout + r.stderr, pieces)
    assert not _has_state_table(db_url)


def test_password_in_query_and_key_value_forms_never_leaks(db_url: str, two: Path, tmp_path: Path) -> None:
    for url in (f"{db_url}?password={PIECES[0]}%23{PIECES[1]}&sslmode=disable",
                f"host=127.0.0.1 port=1 user=postgres password='{PIECES[0]}#{PIECES[1]} x'",
                f"postgres:postgres:{PIECES[0]}@127.0.0.1/db"):
        for args in (["status"], ["-v", "up", "--json"]):
            r = _migrator(*args, "--path", str(two), env={"DATABASE_URL": url}, cwd=tmp_path)
            _assert_no_piece(r.stdout + r.stderr)
            assert "Traceback" not in r.stderr


# -- item 6: fail closed (CLI side; the flows are in test_fail_closed.py) ---------------------------

def test_non_local_env_without_database_url_stops_before_connecting(cli, two: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    embedded = tmp_path / "pgdata"
    for args in (["up", "--env", "prod"], ["status", "--env", "dev"], ["history", "--env", "staging"]):
        r = cli(*args, "--path", str(two), env={"MIGRATOR_EMBEDDED_DIR": str(embedded)})
        assert r.code == 2 and "has no database URL" in r.err and "embedded" in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    r = cli("up", "--path", str(two), env={"MIGRATOR_ENV": "prod", "MIGRATOR_EMBEDDED_DIR": str(embedded)})
    assert r.code == 2 and "environment 'prod' has no database URL" in r.err
    assert not embedded.exists()  # the embedded server was never started


def test_empty_database_url_is_an_error_not_embedded(cli, two: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    embedded = tmp_path / "pgdata"
    r = cli("up", "--path", str(two), env={"DATABASE_URL": "", "MIGRATOR_EMBEDDED_DIR": str(embedded)})
    assert r.code == 2 and "DATABASE_URL / --database-url is set but empty" in r.err
    r = cli("status", "--database-url", "  ", "--path", str(two), env={"MIGRATOR_EMBEDDED_DIR": str(embedded)})
    assert r.code == 2 and "set but empty" in r.err
    assert not embedded.exists()


# -- item 8: Unix-socket URLs work as for psql ------------------------------------------------------

def test_unix_socket_urls(cli, db_url: str, two: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    sockets = next((d for d in ("/var/run/postgresql", "/run/postgresql", "/tmp")
                    if os.path.exists(f"{d}/.s.PGSQL.5432")), None)
    assert sockets is not None, "no PostgreSQL socket on this machine"
    name = dbname_of(db_url)
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.setenv("PGUSER", "postgres")  # postgres:/// takes the user from PGUSER or the OS, as psql
    r = cli("up", "1", "--path", str(two), "--database-url", f"postgresql:///{name}?host={sockets}&user=postgres")
    assert r.code == 0, r.err
    r = cli("up", "--path", str(two), "--database-url", f"postgres:///{name}")
    assert r.code == 0, r.err
    r = cli("status", "--json", "--path", str(two), "--database-url", f"postgres://%2F{sockets.strip('/').replace('/', '%2F')}/{name}")
    assert r.code == 0 and '"version": 2' in r.out, r.err
    r = cli("history", "--path", str(two), "--database-url", f"dbname={name} user=postgres")
    assert r.code == 0, r.err
    r = cli("backup", "--to", f"file://{two.parent}/backups", "--path", str(two), "--database-url", f"postgres:///{name}")
    assert r.code == 0, r.err  # pg_dump gets the socket folder too
    assert _version(db_url) == (2, False)
    from migrator.config import prepare_url, socket_dir

    assert socket_dir() == sockets
    conn_info = prepare_url(f"postgres:///{name}")
    assert f"host={sockets.replace('/', '%2F')}" in conn_info.conninfo
    assert conn_info.display.startswith(f"postgresql:///{name}")


# -- item 9: wrong kinds of files -------------------------------------------------------------------

def test_directory_named_like_a_migration_is_an_error_not_skipped(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    (two / "000003_dir.up.sql").mkdir()
    (two / "000003_dir.down.sql").mkdir()
    write_migration(two, 4, "create_d", "CREATE TABLE d (id int);", "DROP TABLE d;")
    r = cli("up", "--path", str(two), "--database-url", db_url)
    assert r.code == 1 and "000003_dir.down.sql: is a directory, not a regular file" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert _version(db_url) is None or _version(db_url) == (-1, False)
    r = cli("validate", "--path", str(two), "--format", "text")
    assert r.code == 1 and "000003_dir.up.sql" in r.out and "000003_dir.down.sql" in r.out


def test_socket_fifo_and_broken_link_named_like_migrations(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(two / "000003_sock.up.sql"))
    try:
        (two / "000003_sock.down.sql").write_text("SELECT 1;")
        os.mkfifo(two / "000004_fifo.up.sql")  # opening it would block forever
        (two / "000004_fifo.down.sql").write_text("SELECT 1;")
        (two / "000005_link.up.sql").symlink_to(two / "missing.sql")
        (two / "000005_link.down.sql").symlink_to(two / "000001_create_a.down.sql")  # a link to a file is fine
        ms = files.load(two)
        found = {Path(p.file).name: p.message for p in ms.errors}
        assert "is a socket" in found["000003_sock.up.sql"]
        assert "is a named pipe" in found["000004_fifo.up.sql"]
        assert "broken symbolic link" in found["000005_link.up.sql"]
        assert "000005_link.down.sql" not in found  # a link to a regular file is fine
        assert len(ms.errors) == 3  # each unusable entry once, its partner not also called "missing"
        r = cli("up", "--path", str(two), "--database-url", db_url)
        assert r.code == 1 and "000003_sock.up.sql: is a socket" in r.err and "and 2 more" in r.err
        assert _version(db_url) in (None, (-1, False))
    finally:
        sock.close()


# -- item 10: create --------------------------------------------------------------------------------

@pytest.mark.parametrize("justification", ["ticket 1\nDROP TABLE patients;", "a\rb", "tab\there", "x\u2028y", "\x1b[31m"])
def test_create_justification_must_be_one_line(cli, tmp_path: Path, justification: str) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "m"
    r = cli("create", "add_x", "--path", str(d), "--justification", justification)
    assert r.code == 2 and "--justification must be one line" in r.err and len(r.err.strip().splitlines()) == 1
    assert not d.exists() or list(d.iterdir()) == []


def test_create_refuses_to_go_past_the_largest_version(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "m"
    d.mkdir()
    write_migration(d, 2**63 - 1, "last", "SELECT 1;", "SELECT 1;")
    r = cli("create", "one_more", "--path", str(d))
    assert r.code == 1 and "largest version schema_migrations can hold" in r.err and "nothing was written" in r.err
    assert sorted(p.name for p in d.iterdir()) == ["9223372036854775807_last.down.sql", "9223372036854775807_last.up.sql"]
    assert files.load(d).errors == []
    with pytest.raises(MigrationFileError, match="largest version"):
        files.create(d, "again")


def test_create_name_too_long_for_the_filesystem(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "m"
    r = cli("create", "a" * 260, "--path", str(d))
    assert r.code == 2 and "exceed this filesystem's 255-byte limit; use at most 239 characters" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not (d.exists() and list(d.iterdir()))
    r = cli("create", "a" * 239, "--path", str(d))
    assert r.code == 0 and len(list(d.iterdir())) == 2
    assert {p.code for p in files.load(d).errors} == {"empty"}  # loadable: only the SQL is still to write
    r = cli("create", "add\nnewline", "--path", str(d))
    assert r.code == 2 and "snake_case" in r.err


# -- item 12: no exit 70 for user input -------------------------------------------------------------

BAD_ARGS = [
    (["up", "--lock-wait", "nan"], "--lock-wait"),
    (["up", "--lock-wait", "inf"], "--lock-wait"),
    (["up", "--lock-wait", "1e12"], "--lock-wait"),
    (["up", "--lock-wait", "-1"], "--lock-wait"),
    (["force", "9223372036854775808"], "9223372036854775808"),
    (["force", "-2"], "-2"),
    (["force", "1", "--expect", "99999999999999999999"], "--expect"),
    (["goto", "9223372036854775808"], "9223372036854775808"),
    (["history", "--limit", "-5"], "--limit"),
    (["history", "--limit", "0"], "--limit"),
    (["up", "0"], "0"),
    (["down", "-3"], "-3"),
    (["up", "--lock-timeout", "99999999999h"], "--lock-timeout"),
    (["up", "--lock-timeout", "25d"], "--lock-timeout"),
    (["up", "--statement-timeout", "99999999999h"], "--statement-timeout"),
    (["up", "--lock-timeout", "soon"], "--lock-timeout"),
]


@pytest.mark.parametrize(("args", "named"), BAD_ARGS)
def test_bad_arguments_exit_2_at_parse_time(cli, db_url: str, two: Path, args: list[str], named: str) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args, "--path", str(two), "--database-url", db_url)
    assert r.code == 2, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: ") and named in r.err, r.err
    assert not _has_state_table(db_url)  # parse-time: nothing touched the database


BAD_SETTINGS = [
    ({"MIGRATOR_LOCK_WAIT": "nan"}, "MIGRATOR_LOCK_WAIT"),
    ({"MIGRATOR_LOCK_WAIT": "1e12"}, "MIGRATOR_LOCK_WAIT"),
    ({"MIGRATOR_LOCK_TIMEOUT": "99999999999h"}, "longer than PostgreSQL allows"),
    ({"MIGRATOR_STATEMENT_TIMEOUT": "2147483648ms"}, "longer than PostgreSQL allows"),
]


@pytest.mark.parametrize(("env", "expected"), BAD_SETTINGS)
def test_bad_settings_exit_2_one_line(cli, db_url: str, two: Path, env: dict[str, str], expected: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("up", "--path", str(two), env={"DATABASE_URL": db_url, **env})
    assert r.code == 2 and expected in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not _has_state_table(db_url)


@pytest.mark.parametrize(("query", "expected"), [
    ("x-migrations-table=", "x-migrations-table in DATABASE_URL / --database-url is empty"),
    ("x-migrations-table=%20", "is empty"),
    ("x-statement-timeout=-5", "x-statement-timeout='-5'"),
    ("x-statement-timeout=99999999999", "x-statement-timeout='99999999999'"),
])
def test_bad_url_options_exit_2_one_line(cli, db_url: str, two: Path, query: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    for args in (["up"], ["status"]):
        r = cli(*args, "--path", str(two), "--database-url", f"{db_url}?{query}")
        assert r.code == 2 and expected in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not _has_state_table(db_url)


def test_largest_values_still_accepted(cli, db_url: str, two: Path) -> None:  # type: ignore[no-untyped-def]
    g = ["--path", str(two), "--database-url", db_url]
    r = cli("up", "--lock-wait", "0", "--lock-timeout", "2147483647ms", "--statement-timeout", "24d", *g)
    assert r.code == 0, r.err
    r = cli("history", "--limit", str(2**63 - 1), *g)
    assert r.code == 0, r.err
    r = cli("force", "9223372036854775807", "--expect", "2", "--yes", *g)
    assert r.code == 0, r.err
    assert _version(db_url) == (2**63 - 1, False)
    r = cli("status", *g, "--database-url", url_for(db_url, dbname_of(db_url)) + "?x-statement-timeout=2147483647")
    assert r.code == 0 and "9223372036854775807" in r.out, r.err


@pytest.mark.parametrize("args", [["migrate", "--target", "9223372036854775808"], ["migrate", "--target", "-7"],
                                  ["rollback", "--steps", "0"], ["rollback", "--steps", "-1"]])
def test_python_m_flows_bad_numbers_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from flows.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and args[-1] in capsys.readouterr().err


@pytest.mark.filterwarnings("error")  # an unclosed pipe or a BrokenPipeError at garbage collection fails it
def test_backup_of_an_unreachable_database_names_it_even_when_psql_is_gone_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """psql can exit (connection refused) before the snapshot query is written to it: the write then
    breaks the pipe. Forced here by waiting for the real psql to exit; the error must still be psql's
    own (host, port), not "cannot run psql: Broken pipe", and nothing may be printed later."""
    import gc
    from urllib.parse import quote

    from migrator.backup import pgtools
    from migrator.errors import ConfigError

    class ExitedFirst(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            self.wait(timeout=30)

    monkeypatch.setattr(pgtools.subprocess, "Popen", ExitedFirst)
    dsn, env = pgtools.child_connection(f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:1/db")

    def message() -> str:  # returns only the text, so that the failed psql's objects can be collected
        try:
            pgtools.SnapshotHolder.open(dsn, env, "postgresql://postgres:****@127.0.0.1:1/db")
        except ConfigError as exc:
            return str(exc)
        raise AssertionError("an unreachable database opened a snapshot")

    text = message()
    gc.collect()
    assert "cannot connect to" in text and "port 1" in text, text
    _assert_no_piece(text)
