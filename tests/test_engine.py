"""The engine against real PostgreSQL: the machine's server and the embedded one (another major)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from conftest import write_migration
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import DirtyDatabaseError, MigrationFailedError, MigratorError


def make(url: str, path: Path, **kw: object) -> Migrator:
    return Migrator(Settings(database_url=url, migrations_path=path, **kw))  # type: ignore[arg-type]


def state(url: str, table: str = "schema_migrations") -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute(f"SELECT version, dirty FROM {table}").fetchall()]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname='public'").fetchall()}


@pytest.fixture
def three(migrations_dir: Path) -> Path:
    write_migration(migrations_dir, 1, "create_a", "CREATE TABLE a (id int);", "DROP TABLE IF EXISTS a;")
    write_migration(migrations_dir, 2, "create_b", "CREATE TABLE b (id int);", "DROP TABLE IF EXISTS b;")
    write_migration(migrations_dir, 3, "create_c", "CREATE TABLE c (id int);", "DROP TABLE IF EXISTS c;")
    return migrations_dir


# -- the core suite, on both servers ------------------------------------------------------


def test_up_down_goto_force_cycle(any_db_url: str, three: Path) -> None:
    m = make(any_db_url, three)
    assert m.status().version == -1
    r = m.up(1)
    assert [s.version for s in r.steps] == [1] and state(any_db_url) == [(1, False)]
    r = m.up()
    assert [s.version for s in r.steps] == [2, 3] and r.version_after == 3
    assert {"a", "b", "c"} <= tables(any_db_url)
    assert m.up().steps == []  # "no change"
    r = m.down()
    assert [(s.version, s.direction) for s in r.steps] == [(3, "down")] and state(any_db_url) == [(2, False)]
    r = m.goto(3)
    assert r.version_after == 3
    r = m.goto(1)
    assert [s.version for s in r.steps] == [3, 2] and state(any_db_url) == [(1, False)]
    r = m.down_all()
    assert r.version_after == -1 and state(any_db_url) == []  # golang-migrate: empty table = no version
    assert not {"a", "b", "c"} & tables(any_db_url)
    m.force(2)
    assert state(any_db_url) == [(2, False)]
    m.force(-1)
    assert state(any_db_url) == []
    r = m.reset()
    assert r.version_after == 3


def test_failing_statement_mid_file_rolls_back_and_stays_clean(any_db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "base", "CREATE TABLE base (id int);", "DROP TABLE IF EXISTS base;")
    write_migration(
        migrations_dir,
        2,
        "broken",
        "CREATE TABLE t1 (id int);\nINSERT INTO t1 VALUES (1);\n\nSELECT 1/0;\nCREATE TABLE t2 (id int);\n",
        "DROP TABLE IF EXISTS t2; DROP TABLE IF EXISTS t1;",
    )
    m = make(any_db_url, migrations_dir)
    with pytest.raises(MigrationFailedError) as err:
        m.up()
    e = err.value
    assert e.version == 2 and e.line == 4 and not e.dirty and e.state_version == 1
    assert "division by zero" in str(e) and "000002_broken.up.sql:4" in str(e)
    assert "stays at version 1, clean" in str(e)
    assert state(any_db_url) == [(1, False)]
    assert "t1" not in tables(any_db_url)  # nothing half-applied
    hist = m.history()
    assert hist[0]["version"] == 2 and hist[0]["success"] is False and "division by zero" in hist[0]["error"]


def test_syntax_error_reports_line_and_column(any_db_url: str, migrations_dir: Path) -> None:
    write_migration(
        migrations_dir, 1, "typo", "-- header\nCREATE TABLE ok (id int);\nCREATE TABEL bad (id int);\n", "SELECT 1;"
    )
    with pytest.raises(MigrationFailedError) as err:
        make(any_db_url, migrations_dir).up()
    assert (err.value.line, err.value.column) == (3, 8)
    assert "syntax error" in err.value.pg_message
    assert err.value.statement == "CREATE TABEL bad (id int)"


def test_seed_begin_commit_example_runs_with_dirty_protocol(any_db_url: str, migrations_dir: Path) -> None:
    seed_up = """BEGIN;

-- Multiple related changes
ALTER TABLE tbl_user ADD COLUMN phone VARCHAR(20);
CREATE INDEX idx_user_phone ON tbl_user(phone);
UPDATE tbl_user SET phone = '' WHERE phone IS NULL;
ALTER TABLE tbl_user ALTER COLUMN phone SET NOT NULL;

COMMIT;
"""
    write_migration(migrations_dir, 1, "users", "CREATE TABLE tbl_user (id int);", "DROP TABLE IF EXISTS tbl_user;")
    write_migration(
        migrations_dir, 2, "phone", seed_up, "DROP INDEX IF EXISTS idx_user_phone; ALTER TABLE tbl_user DROP phone;"
    )
    m = make(any_db_url, migrations_dir)
    r = m.up()
    assert [s.transactional for s in r.steps] == [True, False]
    assert state(any_db_url) == [(2, False)] and "idx_user_phone" in indexes(any_db_url)
    m.down()
    assert state(any_db_url) == [(1, False)]


def test_failure_in_non_transactional_file_leaves_dirty(any_db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (id int);", "DROP TABLE IF EXISTS t;")
    write_migration(
        migrations_dir,
        2,
        "concurrently",
        "CREATE INDEX CONCURRENTLY idx_t_id ON t(id);\nCREATE INDEX CONCURRENTLY idx_bad ON nope(id);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_t_id;",
    )
    m = make(any_db_url, migrations_dir)
    with pytest.raises(MigrationFailedError) as err:
        m.up()
    assert err.value.dirty and err.value.state_version == 2 and err.value.line == 2
    assert "DIRTY at version 2" in str(err.value) and "nope" in str(err.value)
    assert state(any_db_url) == [(2, True)]
    assert "idx_t_id" in indexes(any_db_url)  # the first statement stays applied: that is why it is dirty
    with pytest.raises(DirtyDatabaseError, match="Dirty database version 2"):
        m.up()
    st = m.status()
    assert st.dirty and st.version == 2
    m.force(1)
    assert state(any_db_url) == [(1, False)]


def test_failed_down_of_first_migration_leaves_minus_one_dirty(any_db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (id int);", "VACUUM t; DROP TABLE missing_table;")
    m = make(any_db_url, migrations_dir)
    m.up()
    with pytest.raises(MigrationFailedError):
        m.down()
    assert state(any_db_url) == [(-1, True)]  # golang-migrate's "-1 | t" row
    assert m.status().dirty


def test_dollar_quotes_and_comments_with_semicolons(any_db_url: str, migrations_dir: Path) -> None:
    up = """-- a comment; with a semicolon
/* block comment; /* nested; */ still comment; */
CREATE TABLE notes (id serial PRIMARY KEY, body text DEFAULT 'a;b');
CREATE FUNCTION notes_count() RETURNS bigint AS $body$
DECLARE n bigint;
BEGIN
    SELECT count(*) INTO n FROM notes; -- ; inside
    RETURN n;
END;
$body$ LANGUAGE plpgsql;
DO $$ BEGIN INSERT INTO notes (body) VALUES ('x;y'); END $$;
INSERT INTO notes (body) VALUES ($q$it's; "quoted"$q$), (E'semi\\;colon');
"""
    write_migration(migrations_dir, 1, "notes", up, "DROP FUNCTION IF EXISTS notes_count(); DROP TABLE IF EXISTS notes;")
    m = make(any_db_url, migrations_dir)
    r = m.up()
    assert r.steps[0].transactional  # BEGIN inside a function body is not transaction control
    with psycopg.connect(any_db_url) as conn:
        assert conn.execute("SELECT notes_count()").fetchone() == (3,)
    m.down()
    assert "notes" not in tables(any_db_url)


def test_audit_history_rows(any_db_url: str, three: Path) -> None:
    m = Migrator(Settings(database_url=any_db_url, migrations_path=three, environment="staging"), run_id="run-42")
    m.up()
    m.down()
    m.force(1)
    rows = m.history()
    assert [(r["version"], r["direction"]) for r in rows] == [(1, "force"), (3, "down"), (3, "up"), (2, "up"), (1, "up")]
    up3 = rows[2]
    assert up3["run_id"] == "run-42" and up3["environment"] == "staging" and up3["success"]
    assert up3["checksum"] == m.load_files().get(3).up.sha256  # type: ignore[union-attr]
    assert up3["db_user"] == "postgres" and up3["client_host"] and up3["tool_version"]
    assert up3["duration_ms"] >= 0 and up3["finished_at"] >= up3["started_at"]
    assert rows[0]["from_version"] == 2 and rows[0]["to_version"] == 1


def test_lock_timeout_setting_applies(any_db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "t", "CREATE TABLE t (id int);", "DROP TABLE IF EXISTS t;")
    write_migration(migrations_dir, 2, "alter", "ALTER TABLE t ADD COLUMN x int;", "ALTER TABLE t DROP COLUMN x;")
    m = make(any_db_url, migrations_dir, lock_timeout="200ms")
    m.up(1)
    with psycopg.connect(any_db_url) as blocker:
        blocker.execute("LOCK TABLE t IN ACCESS SHARE MODE")  # held until the block ends
        with pytest.raises(MigrationFailedError) as err:
            m.up()
    assert "lock timeout" in err.value.pg_message and not err.value.dirty
    assert state(any_db_url) == [(1, False)]


# -- system server only ---------------------------------------------------------------------


def test_missing_file_for_current_version(db_url: str, three: Path) -> None:
    m = make(db_url, three)
    m.up()
    for f in three.glob("000003_*"):
        f.unlink()
    with pytest.raises(MigratorError, match="version 3, which has no migration file"):
        m.down()
    st = m.status()
    assert not st.version_has_file


def test_goto_unknown_version(db_url: str, three: Path) -> None:
    with pytest.raises(MigratorError, match="no migration with version 7"):
        make(db_url, three).goto(7)


def test_refuses_folder_with_file_errors(db_url: str, three: Path) -> None:
    (three / "000004_only_up.up.sql").write_text("CREATE TABLE d (id int);")
    with pytest.raises(MigratorError, match="000004_only_up.up.sql: has no matching"):
        make(db_url, three).up()
    assert tables(db_url) == set()  # nothing applied, not even the state table


def test_force_with_expected_version(db_url: str, three: Path) -> None:
    m = make(db_url, three)
    m.up(2)
    with pytest.raises(MigratorError, match="records version 2, not the expected 1"):
        m.force(1, expected_current=1)
    m.force(1, expected_current=2)
    assert state(db_url) == [(1, False)]


def test_custom_table_and_schema(db_url: str, three: Path) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ops")
    m = make(db_url, three, table="ops.migrations_state")
    m.up()
    assert state(db_url, "ops.migrations_state") == [(3, False)]
    assert "schema_migrations" not in tables(db_url)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ops.migrations_state_history").fetchone() == (3,)


def test_golang_migrate_url_options(db_url: str, three: Path) -> None:
    url = db_url + "?x-migrations-table=gm_versions&x-multi-statement=true&search_path=public"
    make(url, three).up()
    assert state(db_url, "gm_versions") == [(3, False)]
