"""Issue 19: the audit trail survives its own id sequence (set behind ``max(id)`` as a crash, a
restore of the rows without the sequence or a template clone leave it), and an audit row the table
refuses for another reason (a CHECK) is one line that says the step was not made, never exit 70.
Against the machine's PostgreSQL, through the CLI as an engineer would run it."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from conftest import db_state, execute, write_migration

SET_BEHIND = "SELECT setval(pg_get_serial_sequence('schema_migrations_history', 'id'), 1)"
REPAIRED = "id sequence public.schema_migrations_history_id_seq"


def audit(url: str) -> list[tuple[int, int, str, str | None, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(i), int(v), d, a, bool(s)) for i, v, d, a, s in conn.execute(
            "SELECT id, version, direction, action, success FROM schema_migrations_history ORDER BY id")]


@pytest.fixture
def folder(migrations_dir: Path) -> Path:
    """Three transactional migrations and a fourth that cannot run in a transaction and fails
    after its first statement (so it leaves the database dirty)."""
    for v in (1, 2, 3):
        write_migration(migrations_dir, v, f"t{v}", f"CREATE TABLE t{v} (id int);", f"DROP TABLE t{v};")
    write_migration(migrations_dir, 4, "idx", "CREATE INDEX CONCURRENTLY t1_idx ON t1 (id);\nSELECT 1/0;",
                    "DROP INDEX CONCURRENTLY IF EXISTS t1_idx;")
    return migrations_dir


def test_up_force_and_recover_work_with_the_id_sequence_behind(
    cli, db_url: str, folder: Path, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(folder), "MIGRATOR_ENGINEER": "hank"}
    assert cli("goto", "2", env=env).code == 0
    execute(db_url, SET_BEHIND)  # the next id would be 2, which exists

    with caplog.at_level(logging.WARNING, logger="migrator.execute.state"):
        r = cli("goto", "3", env=env)
    assert r.code == 0, r.err
    assert db_state(db_url) == [(3, False)]
    assert audit(db_url)[-1] == (3, 3, "up", None, True)
    repairs = [rec.getMessage() for rec in caplog.records if REPAIRED in rec.getMessage()]
    assert len(repairs) == 1 and "next id 2, highest id 2" in repairs[0] and "moved it on to 3" in repairs[0]

    execute(db_url, "DROP TABLE t3")  # undone by hand, then recorded with force
    execute(db_url, SET_BEHIND)
    r = cli("force", "2", "--yes", env=env)
    assert r.code == 0, r.err
    assert db_state(db_url) == [(2, False)] and audit(db_url)[-1] == (4, 2, "force", None, True)

    assert cli("goto", "3", env=env).code == 0
    assert cli("up", env=env).code == 1  # migration 4 fails after its CREATE INDEX CONCURRENTLY: dirty
    assert db_state(db_url) == [(4, True)]
    execute(db_url, SET_BEHIND)
    r = cli("recover", "--mark-applied", env=env)
    assert r.code == 0, r.err
    assert db_state(db_url) == [(4, False)]
    rows = audit(db_url)
    assert rows[-1][1:] == (4, "recover", "mark_applied", True)
    assert [i for i, *_ in rows] == list(range(1, len(rows) + 1))  # no id reused, none skipped

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="migrator.execute.state"):
        assert cli("force", "3", "--yes", env=env).code == 0  # a sequence ahead: nothing to repair
    assert not [rec for rec in caplog.records if REPAIRED in rec.getMessage()]


def test_an_audit_row_the_table_refuses_is_one_line_and_changes_nothing(cli, db_url: str, folder: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(folder), "MIGRATOR_ENGINEER": "hank"}
    assert cli("goto", "3", env=env).code == 0
    execute(db_url, "ALTER TABLE schema_migrations_history ADD CONSTRAINT no_force CHECK (direction <> 'force') NOT VALID")
    before = audit(db_url)

    r = cli("force", "2", "--yes", env=env)
    assert r.code == 1, r.err
    lines = [x for x in r.err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "internal error" not in r.err
    assert "could not write the audit row for the force of version 2 to public.schema_migrations_history" in lines[0]
    assert 'check constraint "no_force"' in lines[0] and "Failing row" not in lines[0]
    assert "was not made" in lines[0] and "migrator status" in lines[0]
    assert db_state(db_url) == [(3, False)] and audit(db_url) == before

    # the "started" row of a file that cannot run in a transaction is written with the dirty flag:
    # refused, the database stays clean at 3 (not dirty at 4 with no row to recover from)
    execute(db_url, "ALTER TABLE schema_migrations_history ADD CONSTRAINT no_up CHECK (direction <> 'up') NOT VALID")
    r = cli("up", env=env)
    assert r.code == 1 and "internal error" not in r.err
    assert "could not write the audit row for the up of version 4" in r.err
    assert db_state(db_url) == [(3, False)] and audit(db_url) == before
    with psycopg.connect(db_url) as conn:  # its first statement never ran
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 't1_idx'").fetchone() == (0,)

    # a recovery's row refused: the recovery is not made, the database stays dirty and recoverable
    execute(db_url, "ALTER TABLE schema_migrations_history DROP CONSTRAINT no_up")
    assert cli("up", env=env).code == 1 and db_state(db_url) == [(4, True)]
    execute(db_url, "ALTER TABLE schema_migrations_history ADD CONSTRAINT no_recover "
                    "CHECK (direction <> 'recover') NOT VALID")
    r = cli("recover", "--mark-applied", env=env)
    assert r.code == 1 and "internal error" not in r.err
    assert "could not write the audit row for the recover of version 4 (mark_applied)" in r.err
    assert db_state(db_url) == [(4, True)]
    execute(db_url, "ALTER TABLE schema_migrations_history DROP CONSTRAINT no_recover")
    assert cli("recover", "--mark-applied", env=env).code == 0 and db_state(db_url) == [(4, False)]
