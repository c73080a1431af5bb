"""Stopping means stopping (issue 10.2): SIGTERM/SIGINT cancel the running statement on the server,
roll back, audit the attempt, print one line with the version and clean/dirty state, exit 143/130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_lock_wait import wait_for_query

from conftest import ROOT, query, reap, wait_for_no_other_sessions, write_migration
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import MigrationCancelledError


def run_and_signal(db_url: str, migrations_dir: Path, sig: int, fragment: str) -> tuple[int, str, float]:
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "up"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_query(db_url, fragment)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        return proc.returncode, err, time.monotonic() - t0
    finally:
        reap(proc)


def test_sigterm_mid_transaction_cancels_rolls_back_and_audits(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, 2, "slow", "CREATE TABLE b (id int);\nSELECT pg_sleep(5);\nCREATE TABLE c (id int);",
                    "DROP TABLE b, c;")
    Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).up(1)
    code, err, took = run_and_signal(db_url, migrations_dir, signal.SIGTERM, "pg_sleep(5)")
    assert code == 143, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: migration 2 (up) cancelled by SIGTERM"), err
    assert "the database stays at version 1, clean" in lines[0]
    assert took < 5  # the sleep was cancelled, not waited out
    wait_for_no_other_sessions(db_url)  # the batch's session is gone: it committed or rolled back for good
    assert query(db_url, "SELECT version, dirty FROM schema_migrations") == [(1, False)]
    assert query(db_url, "SELECT to_regclass('b'), to_regclass('c')") == [(None, None)]
    hist = query(db_url, "SELECT version, success, error, statements_done, failed_statement FROM "
                        "schema_migrations_history ORDER BY id DESC LIMIT 1")
    assert hist == [(2, False, "cancelled by SIGTERM (canceling statement due to user request)", 1, 2)]


def test_sigint_mid_transaction_exits_130(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "slow", "CREATE TABLE b (id int);\nSELECT pg_sleep(30);", "DROP TABLE b;")
    code, err, _took = run_and_signal(db_url, migrations_dir, signal.SIGINT, "pg_sleep(30)")
    assert code == 130, err
    assert "cancelled by SIGINT" in err and "stays at version -1, clean" in err
    assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert query(db_url, "SELECT to_regclass('b')") == [(None,)]
    assert query(db_url, "SELECT success, error FROM schema_migrations_history") == [
        (False, "cancelled by SIGINT (canceling statement due to user request)")
    ]


def test_sigterm_mid_non_transactional_file_ends_dirty_and_audited(db_url: str, migrations_dir: Path) -> None:
    write_migration(
        migrations_dir, 1, "cic",
        "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nSELECT pg_sleep(30);\nCREATE TABLE never (id int);",
        "DROP TABLE IF EXISTS t, never;",
    )
    code, err, _took = run_and_signal(db_url, migrations_dir, signal.SIGTERM, "pg_sleep(30)")
    assert code == 143, err
    assert "cancelled by SIGTERM" in err and "DIRTY at version 1" in err and "migrator recover" in err
    assert query(db_url, "SELECT version, dirty FROM schema_migrations") == [(1, True)]
    assert query(db_url, "SELECT to_regclass('never')") == [(None,)]
    hist = query(db_url, "SELECT success, error, statements_done, failed_statement FROM schema_migrations_history")
    assert hist == [(False, "cancelled by SIGTERM (canceling statement due to user request)", 2, 3)]
    st = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).status()
    assert st.failure is not None and [x.state for x in st.failure.statements] == ["done", "done", "failed", "not run"]


@pytest.mark.parametrize("dirty", [False, True])
def test_a_host_handler_raising_mid_statement_is_cancelled_cleaned_up_and_re_raised(
    db_url: str, migrations_dir: Path, dirty: bool
) -> None:
    """A host that owns SIGTERM (Prefect's handler raises TerminationSignal, a BaseException, inside
    whatever runs) keeps its handler; the engine cancels the interrupted statement on the server,
    rolls back, audits, and re-raises the host's exception with the MigrationCancelledError as cause."""
    cic = "CREATE INDEX CONCURRENTLY t_x ON t (x);\n" if dirty else ""
    write_migration(migrations_dir, 1, "slow", f"CREATE TABLE t (x int);\n{cic}SELECT pg_sleep(30);", "DROP TABLE t;")

    class HostTermination(BaseException):
        signal = signal.SIGTERM

    def host_handler(signum: int, frame: object) -> None:
        raise HostTermination(signum)

    previous = signal.signal(signal.SIGTERM, host_handler)
    try:
        def later() -> None:
            wait_for_query(db_url, "pg_sleep(30)")
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=later, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(HostTermination) as exc:
            Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).up()
        assert time.monotonic() - t0 < 20
        assert signal.getsignal(signal.SIGTERM) is host_handler  # never replaced
    finally:
        signal.signal(signal.SIGTERM, previous)
    cause = exc.value.__cause__
    assert isinstance(cause, MigrationCancelledError) and cause.signal_name == "SIGTERM" and cause.dirty is dirty
    from migrator.alerts.notify import failure_fields  # what a flow's alert reads from the host's exception

    assert failure_fields(exc.value)["dirty"] is dirty and failure_fields(exc.value)["failing_version"] == 1
    assert query(db_url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%' "
                        "AND state = 'active' AND datname = current_database()") == [(0,)]
    assert query(db_url, "SELECT success, error FROM schema_migrations_history") == [
        (False, "cancelled by SIGTERM (canceling statement due to user request)")
    ]
    if dirty:
        assert query(db_url, "SELECT version, dirty FROM schema_migrations") == [(1, True)]
    else:
        assert query(db_url, "SELECT to_regclass('t')") == [(None,)]
        assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]


def test_cancel_while_waiting_for_the_lock_changes_nothing(db_url: str, migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    m = Migrator(Settings(database_url=db_url, migrations_path=migrations_dir, lock_wait_seconds=60))
    with m.session(lock=True):  # hold the lock in this process's other connection
        polling = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
                  "AND query LIKE '%%pg_try_advisory_lock%%' AND pid <> pg_backend_pid()"
        before = query(db_url, polling)[0][0]

        def interrupt_once_waiting() -> None:  # not on a timer: under load up() took longer than one to start
            deadline = time.monotonic() + 60
            while query(db_url, polling)[0][0] <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_once_waiting, daemon=True).start()
        with pytest.raises(MigrationCancelledError) as err:
            Migrator(Settings(database_url=db_url, migrations_path=migrations_dir, lock_wait_seconds=60)).up()
    assert err.value.exit_code == 130 and "nothing was changed" in str(err.value)
    assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]


def test_kill_9_mid_transaction_commits_nothing(db_url: str, migrations_dir: Path) -> None:
    """The batch (BEGIN ... COMMIT) was already sent when the client dies; the server must not run
    it on to its COMMIT (client_connection_check_interval aborts it)."""
    write_migration(migrations_dir, 1, "slow", "CREATE TABLE b (id int);\nSELECT pg_sleep(4);", "DROP TABLE b;")
    code, _err, _took = run_and_signal(db_url, migrations_dir, signal.SIGKILL, "pg_sleep(4)")
    assert code == -9
    wait_for_no_other_sessions(db_url)  # a batch left running would have committed before its session ended
    assert query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert query(db_url, "SELECT to_regclass('b')") == [(None,)]


def test_cancelled_non_transactional_file_is_alerted_as_dirty(db_url: str, migrations_dir: Path) -> None:
    from webhook_receiver import WebhookReceiver

    write_migration(
        migrations_dir, 1, "cic",
        "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nSELECT pg_sleep(30);",
        "DROP TABLE IF EXISTS t;",
    )
    with WebhookReceiver() as rx:
        env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(migrations_dir), "WEBHOOK_URL": rx.url,
               "WEBHOOK_SECRET": "s3cret", "WEBHOOK_BACKOFF_BASE": "0.01", "WEBHOOK_MAX_ATTEMPTS": "2"}
        proc = subprocess.Popen([sys.executable, "-m", "migrator", "up"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_query(db_url, "pg_sleep(30)")
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            reap(proc)
        (req,) = rx.wait_for(1)
    assert proc.returncode == 143, err
    body = req.json()
    assert body["event"] == "migration.failed" and body["dirty"] is True and body["failing_version"] == 1
    assert "cancelled by SIGTERM" in body["error"]
