"""The recorded state is the real state (issue 19), against the machine's PostgreSQL: each of the
hostile reproductions gives a refusal with the next step or a clean state whose schema is what the
recorded version's files produce, and kill -9 at each statement of a non-transactional file,
followed by resume or revert, never ends "clean" with another schema or an INVALID index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import SERVER_URL, create_database, drop_database, url_for, write_migration
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import MigrationFailedError, MigrationFileError
from migrator.execute.state import statement_hash, statement_matches
from migrator.lint.roundtrip import choose_pg_dump, normalize_dump
from migrator.recover.actions import inspect, recover

ROOT = Path(__file__).resolve().parent.parent


def settings(url: str, path: Path) -> Settings:
    return Settings(database_url=url, migrations_path=path, environment="test")  # type: ignore[arg-type]


def state(url: str) -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute("SELECT version, dirty FROM schema_migrations")]


def query(url: str, q: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(q).fetchall())  # type: ignore[arg-type]


def invalid(url: str) -> list[str]:
    return [str(r[0]) for r in query(url, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                          "WHERE NOT i.indisvalid")]


def schema(url: str) -> list[str]:
    """The schema as pg_dump prints it (comments, SETs and \\restrict keys dropped), audit tables left out."""
    pg_dump = choose_pg_dump(15 if "5432" in url else 18)[0]
    out = subprocess.run([pg_dump, "--schema-only", "--no-owner", "--no-privileges",
                          "--exclude-table=public.schema_migrations_history",
                          "--exclude-table=public.schema_migrations_alerts", f"--dbname={url}"],
                         capture_output=True, text=True, check=True).stdout
    return normalize_dump(out)


@pytest.fixture
def fresh_url(pg_server: str) -> Iterator[str]:
    """A second database: the same files applied cleanly, to compare schemas with."""
    name = create_database(SERVER_URL)
    try:
        yield url_for(SERVER_URL, name)
    finally:
        drop_database(SERVER_URL, name)


def expected_schema(fresh_url: str, path: Path, version: int) -> list[str]:
    Migrator(settings(fresh_url, path)).goto(version)
    return schema(fresh_url)


# -- 1. a half-done revert is part of the state --------------------------------------------------

HBIG = "CREATE TABLE hbig (id int primary key, val int, val2 int); INSERT INTO hbig SELECT g, g, g FROM generate_series(1, 100) g;"
UP_1 = """CREATE INDEX CONCURRENTLY h_i1 ON hbig (val);
CREATE INDEX CONCURRENTLY h_i2 ON h_missing (val2);
ALTER TABLE hbig RENAME COLUMN val2 TO val2_new;
"""
DOWN_RENAME = """DROP INDEX CONCURRENTLY IF EXISTS h_i1;
ALTER TABLE hbig RENAME COLUMN val2_new TO val2;
"""


def _dirty_hbig(db_url: str, migrations_dir: Path, down: str) -> Settings:
    write_migration(migrations_dir, 1, "create_hbig", HBIG, "DROP TABLE IF EXISTS hbig;")
    write_migration(migrations_dir, 2, "index_hbig", UP_1, down)
    s = settings(db_url, migrations_dir)
    with pytest.raises(MigrationFailedError):
        Migrator(s).up()
    assert state(db_url) == [(2, True)]
    return s


def test_revert_of_a_partial_up_refuses_a_down_that_assumes_the_whole_up_ran(
        db_url: str, migrations_dir: Path, fresh_url: str) -> None:
    s = _dirty_hbig(db_url, migrations_dir, DOWN_RENAME)
    result = recover(s, "revert", "ana")
    assert result.outcome == "refused" and "statement 2 of 000002_index_hbig.down.sql (line 2" in result.message
    assert "resume" in result.message and "mark_applied" in result.message
    assert state(db_url) == [(2, True)] and ("h_i1",) in query(db_url, "SELECT indexname FROM pg_indexes")
    (migrations_dir / "000002_index_hbig.up.sql").write_text(UP_1.replace("h_missing", "hbig"))
    done = recover(s, "resume", "ana")
    assert done.outcome == "completed" and state(db_url) == [(2, False)], done.message
    assert schema(db_url) == expected_schema(fresh_url, migrations_dir, 2)  # h_i1 is there: the real state


def test_a_partial_revert_blocks_resume_and_the_next_revert_continues(
        db_url: str, migrations_dir: Path, fresh_url: str) -> None:
    """The down drops h_i1, then fails: the state is "partly reverted". Resume would record 2 clean
    without h_i1; it is refused, and revert goes on from statement 2 of the down file."""
    down = "DROP INDEX CONCURRENTLY IF EXISTS h_i1;\nALTER TABLE h_gone DROP COLUMN IF EXISTS val2_new;\n"
    s = _dirty_hbig(db_url, migrations_dir, down)
    first = recover(s, "revert", "ben")
    assert first.outcome == "failed" and state(db_url) == [(2, True)], first.message
    assert ("h_i1",) not in query(db_url, "SELECT indexname FROM pg_indexes")
    inc = inspect(s)
    assert inc.partly_reverted and inc.reverted == 1 and [r.state for r in inc.revert_statements] == ["done", "failed"]
    assert "a revert ran 1 of 2 statement(s)" in inc.headline()
    from migrator.commands.engine import dirty_lines

    lines = "\n".join(dirty_lines(Migrator(s).status()))  # status tells the same, not "stay applied"
    assert "then a revert ran 1 of 2 statement(s) of" in lines and "stay applied" not in lines
    (migrations_dir / "000002_index_hbig.up.sql").write_text(UP_1.replace("h_missing", "hbig"))
    resumed = recover(s, "resume", "ben")
    assert resumed.outcome == "refused" and "partly undone" in resumed.message and state(db_url) == [(2, True)]
    (migrations_dir / "000002_index_hbig.down.sql").write_text(down.replace("h_gone", "IF EXISTS h_gone"))
    assert "skip the 1 statement(s) the earlier revert ran" in inspect(s).option("revert").does
    second = recover(s, "revert", "ben")
    assert second.outcome == "completed" and second.statements_run == 1 and state(db_url) == [(1, False)]
    assert schema(db_url) == expected_schema(fresh_url, migrations_dir, 1)


# -- 2. INVALID indexes ----------------------------------------------------------------------------

def test_resume_rebuilds_the_invalid_unique_index_a_failed_build_left(db_url: str, migrations_dir: Path, cli) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_acct",
                    "CREATE TABLE acct (id int primary key, email text); "
                    "INSERT INTO acct VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x');", "DROP TABLE IF EXISTS acct;")
    write_migration(migrations_dir, 2, "acct_email_uq",
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS acct_email_uq ON acct (email);",
                    "DROP INDEX CONCURRENTLY IF EXISTS acct_email_uq;")
    s = settings(db_url, migrations_dir)
    with pytest.raises(MigrationFailedError):
        Migrator(s).up()
    assert invalid(db_url) == ["acct_email_uq"] and state(db_url) == [(2, True)]
    st = Migrator(s).status()
    assert st.invalid_indexes == ["public.acct_email_uq (on acct)"]
    query_exec(db_url, "DELETE FROM acct WHERE id = 2")
    result = recover(s, "resume", "cy")
    assert result.outcome == "completed" and state(db_url) == [(2, False)], result.message
    assert "dropped the INVALID index public.acct_email_uq" in result.message
    assert invalid(db_url) == [] and ("acct_email_uq",) in query(db_url, "SELECT indexname FROM pg_indexes")
    with pytest.raises(psycopg.errors.UniqueViolation):  # it enforces now
        query_exec(db_url, "INSERT INTO acct VALUES (9, 'a@x')")


def test_status_and_verify_report_an_invalid_index_on_a_clean_database(db_url: str, migrations_dir: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from migrator.verify import VerifyError, verify

    write_migration(migrations_dir, 1, "create_acct", "CREATE TABLE acct (id int, email text); "
                    "INSERT INTO acct VALUES (1, 'a'), (2, 'a');", "DROP TABLE acct;")
    s = settings(db_url, migrations_dir)
    Migrator(s).up()
    with pytest.raises(psycopg.errors.UniqueViolation):  # by hand, outside any migration
        query_exec(db_url, "CREATE UNIQUE INDEX CONCURRENTLY acct_uq ON acct (email)")
    r = cli("status", "--database-url", db_url, "--path", str(migrations_dir))
    assert r.code == 5 and "INVALID index public.acct_uq (on acct)" in r.out
    assert "DROP INDEX CONCURRENTLY IF EXISTS public.acct_uq" in r.out
    with pytest.raises(VerifyError, match="INVALID index public.acct_uq"):
        verify(s, 1, check_drift=False)


def test_a_file_is_never_recorded_clean_while_its_index_is_invalid(db_url: str, migrations_dir: Path) -> None:
    """An INVALID index of the name already there (made by hand): IF NOT EXISTS would skip it; the
    executor drops it and builds it, so the version is clean with a valid index."""
    write_migration(migrations_dir, 1, "create_acct", "CREATE TABLE acct (id int, email text); "
                    "INSERT INTO acct VALUES (1, 'a'), (2, 'a');", "DROP TABLE acct;")
    write_migration(migrations_dir, 2, "acct_email", "CREATE INDEX CONCURRENTLY IF NOT EXISTS acct_e ON acct (email);",
                    "DROP INDEX CONCURRENTLY IF EXISTS acct_e;")
    s = settings(db_url, migrations_dir)
    Migrator(s).goto(1)
    with pytest.raises(psycopg.errors.UniqueViolation):
        query_exec(db_url, "CREATE UNIQUE INDEX CONCURRENTLY acct_e ON acct (email)")
    assert invalid(db_url) == ["acct_e"]
    Migrator(s).up()
    assert state(db_url) == [(2, False)] and invalid(db_url) == []


# -- 3. revert never undoes a data change that never ran -------------------------------------------

def test_revert_refuses_a_data_change_the_partial_up_never_made(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "create_h_acct", "CREATE TABLE h_acct (id int primary key, bal bigint); "
                    "INSERT INTO h_acct SELECT g, 1000 FROM generate_series(1, 1000) g;", "DROP TABLE h_acct;")
    write_migration(migrations_dir, 2, "cents",
                    "CREATE INDEX CONCURRENTLY h_i1 ON h_acct (bal);\nCREATE INDEX CONCURRENTLY h_i2 ON h_nope (x);\n"
                    "UPDATE h_acct SET bal = bal * 100;\n",
                    "UPDATE h_acct SET bal = bal / 100;\nDROP INDEX CONCURRENTLY IF EXISTS h_i1;\n")
    s = settings(db_url, migrations_dir)
    with pytest.raises(MigrationFailedError):
        Migrator(s).up()
    assert query(db_url, "SELECT sum(bal) FROM h_acct") == [(1_000_000,)]
    option = inspect(s).option("revert")
    assert not option.available and "UPDATE h_acct SET bal = bal / 100" in (option.why_not or "")
    result = recover(s, "revert", "dee")
    assert result.outcome == "refused" and "statement 1 of 000002_cents.down.sql (line 1" in result.message
    assert query(db_url, "SELECT sum(bal) FROM h_acct") == [(1_000_000,)] and state(db_url) == [(2, True)]


# -- 5. unbalanced explicit transactions are refused before anything runs -------------------------

def test_begin_without_commit_is_refused_before_anything_runs(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "ok", "CREATE TABLE first_one (id int);", "DROP TABLE first_one;")
    write_migration(migrations_dir, 2, "open_tx", "BEGIN;\nCREATE TABLE never (id int);\n", "DROP TABLE never;")
    with pytest.raises(MigrationFileError) as refused:
        Migrator(settings(db_url, migrations_dir)).up()
    message = str(refused.value)
    assert "000002_open_tx.up.sql:1: BEGIN at line 1 is never committed" in message and "nothing was run" in message
    assert state(db_url) == [] and query(db_url, "SELECT to_regclass('first_one')") == [(None,)]


# -- resume compares the statements that ran exactly -----------------------------------------------

def test_statement_hash_sees_inside_string_literals_only() -> None:
    assert statement_hash("SELECT 'a  b'") != statement_hash("SELECT 'a b'")
    assert statement_hash("SELECT  1 ,\n 2 -- why") == statement_hash("SELECT 1, 2")
    assert statement_hash("UPDATE t SET s = $$x  y$$") != statement_hash("UPDATE t SET s = $$x y$$")
    legacy = "0dfb1ac5ffe2dcdd9b4d0c9de5d6e33bbe1b8a5ebd64cdd0a0cab1b0d3b4d3a8"  # not this text's: no match
    assert statement_matches(statement_hash("SELECT 1"), "SELECT   1") and not statement_matches(legacy, "SELECT 1")
    import hashlib

    old = hashlib.sha256(b"SELECT 1").hexdigest()  # what older migrators wrote (whitespace-normalised)
    assert statement_matches(old, "SELECT    1")


def query_exec(url: str, q: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q)  # type: ignore[arg-type]


# -- kill -9 at each statement, then resume or revert ---------------------------------------------

# gate(x, k) waits while the test holds advisory lock k: statement k of the file then waits inside the
# server (a CIC after it made its INVALID index; the ALTER while evaluating its default), where the kill lands
GATE = """CREATE FUNCTION gate(x int, k int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM pg_advisory_lock_shared(7700 + k); PERFORM pg_advisory_unlock_shared(7700 + k); RETURN x; END $$;
CREATE TABLE kt (id int primary key, a int); INSERT INTO kt SELECT g, g FROM generate_series(1, 1000) g;"""
KILL_UP = """CREATE INDEX CONCURRENTLY k_i1 ON kt (gate(a, 1));
ALTER TABLE kt ADD COLUMN c int DEFAULT gate(0, 2);
CREATE INDEX CONCURRENTLY k_i3 ON kt (gate(c, 3));
"""
KILL_DOWN = """DROP INDEX CONCURRENTLY IF EXISTS k_i3;
ALTER TABLE kt DROP COLUMN IF EXISTS c;
DROP INDEX CONCURRENTLY IF EXISTS k_i1;
"""


def prepare_kill_folder(path: Path) -> None:
    write_migration(path, 1, "create_kt", GATE, "DROP TABLE IF EXISTS kt; DROP FUNCTION IF EXISTS gate;")
    write_migration(path, 2, "index_kt", KILL_UP, KILL_DOWN)


def kill_at_statement(url: str, path: Path, k: int) -> None:
    """Run `migrator up` in a subprocess and SIGKILL it while statement ``k`` of KILL_UP runs, then end
    its orphaned backend as the server itself would (client_connection_check_interval). The backend is
    looked for on this test's database only: pg_stat_activity lists every database of the server, and the
    same statement of the other action's trial may wait on the other xdist worker (a CI run killed the
    wrong process: its migrator, not yet at statement 3, was SIGKILLed)."""
    marker = KILL_UP.splitlines()[k - 1].rstrip(";")
    with psycopg.connect(url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (7700 + k,))
        env = {**os.environ, "DATABASE_URL": url, "MIGRATIONS_PATH": str(path), "MIGRATOR_ENV": "test"}
        proc = subprocess.Popen([sys.executable, "-m", "migrator", "up"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (row := gate.execute("SELECT pid FROM pg_stat_activity WHERE query = %s AND wait_event_type = "
                                   "'Lock' AND datname = current_database()", (marker,)).fetchone()) is None:
            assert proc.poll() is None, f"migrator ended before statement {k}"
            assert time.monotonic() < deadline, f"statement {k} never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        gate.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        while gate.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[0],)).fetchone():
            assert time.monotonic() < deadline, "the killed migrator's backend never ended"
            time.sleep(0.02)
        gate.execute("SELECT pg_advisory_unlock(%s)", (7700 + k,))


def kill_trial(url: str, fresh: str, path: Path, k: int, action: str) -> tuple[list[tuple[int, bool]], list[str], bool]:
    """(recorded state, INVALID indexes, whether the schema equals a fresh migration to the recorded
    version) after a kill at statement ``k`` and ``recover --<action>``."""
    kill_at_statement(url, path, k)
    assert state(url) == [(2, True)]
    assert invalid(url) == ([f"k_i{k}"] if k != 2 else [])  # a killed CIC leaves its INVALID index
    assert query(url, "SELECT statements_done FROM schema_migrations_history ORDER BY id DESC LIMIT 1") == [(k - 1,)]
    result = recover(settings(url, path), action, "kim")
    assert result.outcome == "completed", result.message
    ((version, _dirty),) = state(url)
    return state(url), invalid(url), schema(url) == expected_schema(fresh, path, version)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("action", ["resume", "revert"])
def test_kill_9_at_each_statement_then_recover_leaves_the_real_state(
        db_url: str, fresh_url: str, migrations_dir: Path, k: int, action: str) -> None:
    prepare_kill_folder(migrations_dir)
    Migrator(settings(db_url, migrations_dir)).goto(1)
    recorded, left_invalid, same = kill_trial(db_url, fresh_url, migrations_dir, k, action)
    assert recorded == [(2 if action == "resume" else 1, False)]
    assert left_invalid == [] and same
