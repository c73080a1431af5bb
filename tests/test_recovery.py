"""Recovery of a really dirty database (a CREATE INDEX CONCURRENTLY that fails after an ADD COLUMN
ran), against the machine's PostgreSQL: each action, its refusals, the audit rows, the CLI, and
one page per incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import write_migration
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import MigrationFailedError
from migrator.recover.actions import inspect, recover
from migrator.recover.incident import claim, claim_page
from webhook_receiver import WebhookReceiver

UP_BROKEN = """-- Business justification: contact e-mail for reminders.
ALTER TABLE contacts ADD COLUMN email text;

CREATE INDEX CONCURRENTLY idx_contacts_email ON contacts (emial);

CREATE INDEX CONCURRENTLY idx_contacts_email_lower ON contacts (lower(email));
"""
UP_FIXED = UP_BROKEN.replace("(emial)", "(email)")
DOWN_SAFE = """DROP INDEX CONCURRENTLY IF EXISTS idx_contacts_email_lower;
DROP INDEX CONCURRENTLY IF EXISTS idx_contacts_email;
ALTER TABLE contacts DROP COLUMN IF EXISTS email;
"""
DOWN_UNSAFE = """DROP INDEX CONCURRENTLY idx_contacts_email_lower;
DROP INDEX CONCURRENTLY idx_contacts_email;
ALTER TABLE contacts DROP COLUMN email;
"""


def settings(url: str, path: Path) -> Settings:
    return Settings(database_url=url, migrations_path=path, environment="test")  # type: ignore[arg-type]


@pytest.fixture
def dirty(db_url: str, migrations_dir: Path) -> Settings:
    """Version 2 dirty: statement 1 (ADD COLUMN) ran, statement 2 (the CIC) failed, 3 did not run."""
    write_migration(migrations_dir, 1, "create_contacts", "CREATE TABLE contacts (id int primary key);",
                    "DROP TABLE IF EXISTS contacts;")
    write_migration(migrations_dir, 2, "add_contact_email", UP_BROKEN, DOWN_SAFE)
    s = settings(db_url, migrations_dir)
    with pytest.raises(MigrationFailedError) as failed:
        Migrator(s, run_id="run-1").up()
    assert failed.value.dirty and state(db_url) == [(2, True)] and columns(db_url) == {"id", "email"}
    return s


def state(url: str) -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute("SELECT version, dirty FROM schema_migrations")]


def columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'contacts'")
        return {r[0] for r in rows}


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'contacts'")}


def recover_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return list(cur.execute(
            "SELECT version, direction, action, success, approved_by, comment, error, statements_done, "
            "statements_total, from_version, to_version FROM schema_migrations_history "
            "WHERE direction = 'recover' ORDER BY id"))


def up_file(s: Settings) -> Path:
    return next(Path(s.migrations_path).glob("000002_*.up.sql"))


def down_file(s: Settings) -> Path:
    return next(Path(s.migrations_path).glob("000002_*.down.sql"))


def test_incident_names_each_statement_and_each_choice(dirty: Settings) -> None:
    inc = inspect(dirty)
    assert inc.dirty and inc.version == 2 and inc.previous_version == 1 and inc.migration == "000002_add_contact_email"
    assert [(r.index, r.state) for r in inc.statements] == [(1, "done"), (2, "failed"), (3, "not run")]
    assert inc.statements[1].line == 4 and 'column "emial" does not exist' in (inc.statements[1].error or "")
    assert inc.where and inc.where.endswith("000002_add_contact_email.up.sql:4")
    assert inc.run_id == "run-1"
    assert {o.action: o.available for o in inc.options} == {
        "revert": True, "resume": True, "mark_applied": True, "leave_dirty": True}
    assert "DIRTY at version 2" in inc.headline() and "emial" in inc.headline()


def test_resume_runs_only_the_rest_of_the_fixed_file(dirty: Settings, db_url: str) -> None:
    up_file(dirty).write_text(UP_FIXED)
    result = recover(dirty, "resume", "alice@askfrank.example", "INC-7", run_id="run-2")
    assert result.outcome == "completed" and result.statements_run == 2, result.message
    assert state(db_url) == [(2, False)]
    assert {"idx_contacts_email", "idx_contacts_email_lower"} <= indexes(db_url)
    (row,) = recover_rows(db_url)
    assert row["action"] == "resume" and row["success"] and row["approved_by"] == "alice@askfrank.example"
    assert row["comment"] == "INC-7" and row["statements_done"] == 3 and row["statements_total"] == 3
    assert "version 2, dirty: no" in result.message


def test_resume_refused_when_a_statement_that_ran_changed(dirty: Settings, db_url: str) -> None:
    up_file(dirty).write_text(UP_FIXED.replace("ADD COLUMN email text", "ADD COLUMN email varchar(200)"))
    assert not inspect(dirty).option("resume").available
    result = recover(dirty, "resume", "bob", run_id="run-2")
    assert result.outcome == "refused" and "statement 1" in result.message and "changed" in result.message
    assert state(db_url) == [(2, True)] and "idx_contacts_email" not in indexes(db_url)
    (row,) = recover_rows(db_url)
    assert row["action"] == "resume" and not row["success"] and row["error"].startswith("refused:")


def test_a_failed_resume_moves_the_progress_on(dirty: Settings, db_url: str) -> None:
    """Resume runs statement 2 (fixed) and fails at 3 (now broken); the second resume skips 1 and 2."""
    up_file(dirty).write_text(UP_FIXED.replace("lower(email)", "lower(emale)"))
    first = recover(dirty, "resume", "carol")
    assert first.outcome == "failed" and 'column "emale" does not exist' in (first.error or "")
    assert first.line == 6 and state(db_url) == [(2, True)] and "idx_contacts_email" in indexes(db_url)
    inc = inspect(dirty)
    assert [r.state for r in inc.statements] == ["done", "done", "failed"]
    up_file(dirty).write_text(UP_FIXED)
    second = recover(dirty, "resume", "carol")
    assert second.outcome == "completed" and second.statements_run == 1, second.message
    assert state(db_url) == [(2, False)] and "idx_contacts_email_lower" in indexes(db_url)


def test_revert_runs_the_down_file_and_records_the_previous_version(dirty: Settings, db_url: str) -> None:
    result = recover(dirty, "revert", "dave", "undo")
    assert result.outcome == "completed" and result.version_after == 1 and not result.dirty_after
    assert state(db_url) == [(1, False)] and columns(db_url) == {"id"}  # the partial column is gone
    (row,) = recover_rows(db_url)
    assert row["action"] == "revert" and row["success"] and row["to_version"] == 1


def test_revert_refused_when_the_down_file_is_not_idempotent(dirty: Settings, db_url: str) -> None:
    down_file(dirty).write_text(DOWN_UNSAFE)
    option = inspect(dirty).option("revert")
    assert not option.available and "IF EXISTS" in (option.why_not or "")
    result = recover(dirty, "revert", "erin")
    assert result.outcome == "refused" and "not safe on a partial state" in result.message
    assert state(db_url) == [(2, True)] and columns(db_url) == {"id", "email"}  # nothing ran


def test_mark_applied_and_leave_dirty(dirty: Settings, db_url: str) -> None:
    left = recover(dirty, "leave_dirty", "frank", "looking at it")
    assert left.outcome == "left_dirty" and left.ok and state(db_url) == [(2, True)]
    with psycopg.connect(db_url, autocommit=True) as conn:  # finished by hand
        conn.execute("CREATE INDEX CONCURRENTLY idx_contacts_email ON contacts (email)")
    marked = recover(dirty, "mark_applied", "frank")
    assert marked.outcome == "completed" and state(db_url) == [(2, False)]
    assert [(r["action"], r["success"]) for r in recover_rows(db_url)] == [("leave_dirty", True),
                                                                          ("mark_applied", True)]
    again = recover(dirty, "mark_applied", "frank")
    assert again.outcome == "refused" and "clean" in again.message


def test_no_audit_row_means_no_resume(db_url: str, migrations_dir: Path) -> None:
    """Dirty left by the golang-migrate CLI: revert and mark_applied remain, resume is refused."""
    write_migration(migrations_dir, 1, "create_contacts", "CREATE TABLE contacts (id int);",
                    "DROP TABLE IF EXISTS contacts;")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, true)")
    inc = inspect(settings(db_url, migrations_dir))
    assert inc.dirty and inc.attempt_id is None and "no audit row" in inc.headline()
    assert not inc.option("resume").available and inc.option("revert").available
    result = recover(settings(db_url, migrations_dir), "revert", "gina")
    assert result.outcome == "completed" and state(db_url) == [] and result.version_after == -1
    assert "version none" in result.message


def test_one_page_per_incident(dirty: Settings) -> None:
    inc = inspect(dirty)
    assert claim(dirty, inc, remind_after_minutes=60).kind == "first"
    assert claim(dirty, inc, remind_after_minutes=60).kind == "duplicate"
    assert claim(dirty, inc, remind_after_minutes=0).kind == "reminder"
    m = Migrator(dirty)
    with m.session(lock=False) as s:
        assert claim_page(s.conn, s.st, "another|incident", "database.dirty", None).kind == "first"
        assert claim_page(s.conn, s.st, "another|incident", "database.dirty", None).kind == "duplicate"


def test_cli_recover(cli, dirty: Settings, db_url: str) -> None:  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(dirty.migrations_path)}
    r = cli("recover", env=env)
    assert r.code == 3 and "DIRTY at version 2" in r.out and "emial" in r.out and "--resume" in r.out
    up_file(dirty).write_text(UP_FIXED.replace("ADD COLUMN email text", "ADD COLUMN email varchar"))
    r = cli("recover", "--resume", "--engineer", "hank", env=env)
    assert r.code == 1 and "resume refused" in r.err and "statement 1" in r.err
    up_file(dirty).write_text(UP_FIXED)
    r = cli("recover", "--resume", "--engineer", "hank", "--json", env=env)
    assert r.code == 0 and '"outcome": "completed"' in r.out
    assert state(db_url) == [(2, False)]
    r = cli("recover", env=env)
    assert r.code == 0 and "clean" in r.out


def test_status_alert_pages_once(cli, dirty: Settings, db_url: str) -> None:  # type: ignore[no-untyped-def]
    with WebhookReceiver() as rx:
        env = {"DATABASE_URL": db_url, "MIGRATIONS_PATH": str(dirty.migrations_path), "WEBHOOK_URL": rx.url,
               "WEBHOOK_BACKOFF_BASE": "0.01"}
        assert cli("status", "--alert", env=env).code == 3
        (req,) = rx.wait_for(1)
        ev = req.json()
        assert ev["event"] == "database.dirty" and ev["failing_version"] == 2 and "emial" in ev["message"]
        assert "migrator recover" in ev["message"]
        r = cli("status", "--alert", env=env)
        assert r.code == 3 and "not sent again" in r.err and len(rx.requests) == 1


def test_a_rollback_left_dirty_is_resumed_not_reverted(db_url: str, migrations_dir: Path) -> None:
    """A down file that fails half-way (after its DROP INDEX ran) leaves the version below dirty:
    revert is refused (it would re-run the up file), resume finishes the rollback."""
    write_migration(migrations_dir, 1, "create_contacts", "CREATE TABLE contacts (id int primary key);",
                    "DROP TABLE IF EXISTS contacts;")
    write_migration(migrations_dir, 2, "add_contact_email", UP_FIXED, DOWN_SAFE.replace(
        "DROP COLUMN IF EXISTS email", "DROP COLUMN emale"))
    s = settings(db_url, migrations_dir)
    Migrator(s).up()
    with pytest.raises(MigrationFailedError):
        Migrator(s).down()
    assert state(db_url) == [(1, True)] and "email" in columns(db_url)
    inc = inspect(s)
    assert inc.direction == "down" and inc.file_version == 2 and inc.version == 1
    assert [r.state for r in inc.statements] == ["done", "done", "failed"]
    assert not inc.option("revert").available and inc.option("resume").available
    down_file(s).write_text(DOWN_SAFE)
    result = recover(s, "resume", "ivy")
    assert result.outcome == "completed" and result.statements_run == 1, result.message
    assert state(db_url) == [(1, False)] and columns(db_url) == {"id"}
