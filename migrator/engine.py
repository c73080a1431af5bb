"""Plan and apply migrations: the Python API behind the CLI and the Prefect tasks.

Each migration runs statement by statement (split by PostgreSQL's own parser, so dollar quotes
and comments are never misread) so that a failure names its line. Where the file allows it, the
statements, the ``schema_migrations`` update and the audit row share ONE transaction: a failure
leaves the database at the previous version, clean. A file that cannot run in a transaction
(its own BEGIN/COMMIT, CREATE INDEX CONCURRENTLY, VACUUM, ...) follows golang-migrate's protocol:
mark (target, dirty), run, mark (target, clean); a failure leaves it dirty, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from psycopg import sql

from migrator import db, files
from migrator.cancel import CancelScope, cancel_scope, signal_name_of
from migrator.config import Connection, Settings, parse_interval_ms, state_table_name
from migrator.errors import (
    DirtyDatabaseError,
    ForceRefusedError,
    MigrationCancelledError,
    MigrationFailedError,
    MigrationFileError,
    MigratorError,
)
from migrator.redact import redact
from migrator.sql import Statement, line_col, non_transactional_reason, split_statements
from migrator.state import (
    NO_VERSION,
    STARTED_ERROR,
    Attempt,
    HistoryEntry,
    LockWaitStopped,
    StateTable,
    acquire_lock,
    complete_history,
    ensure_tables,
    history_statement,
    last_applied_ups,
    last_attempt,
    read_history,
    read_state,
    release_lock,
    resolve_table,
    state_statements,
    statement_hash,
    update_progress,
    write_history,
    write_state,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
Direction = Literal["up", "down"]
MigrationState = Literal["applied", "pending", "missing-file"]
StatementOutcome = Literal["done", "failed", "not run"]

# Server-side guard for a client that dies (kill -9, OOM): PostgreSQL checks the socket this often
# during a long statement and aborts it, so a killed migrator's transaction rolls back instead of
# running on to its COMMIT (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL = "2s"


@dataclass
class Step:
    """One migration applied or reverted by a run."""

    version: int
    name: str
    direction: Direction
    duration_ms: int
    transactional: bool
    checksum: str

    def describe(self) -> str:
        """golang-migrate's log line: ``N/u name (12ms)``."""
        return f"{self.version}/{self.direction[0]} {self.name} ({self.duration_ms}ms)"


@dataclass
class RunResult:
    """What a command changed: versions before/after and each step with its duration."""

    command: str
    database: str
    version_before: int
    version_after: int
    dirty_after: bool = False
    steps: list[Step] = field(default_factory=list)
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.steps) or self.version_before != self.version_after

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["changed"] = self.changed
        return d


@dataclass
class MigrationInfo:
    version: int
    name: str
    state: MigrationState
    has_down: bool
    applied_at: str | None = None
    checksum: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatementState:
    """One statement of the file a dirty attempt ran, and how far the attempt got with it."""

    index: int  # 1-based
    line: int
    text: str
    state: StatementOutcome


@dataclass
class DirtyFailure:
    """What the attempt that left the database dirty did, from its audit row and the file on disk."""

    version: int
    name: str | None
    direction: str
    file: str | None
    line: int | None
    statement: str | None
    pg_error: str | None
    run_id: str | None
    attempt_id: int
    started_at: str
    finished: bool  # False: the "started" row was never completed (kill -9, server crash)
    file_changed: bool  # the file's statements differ from those the attempt ran
    statements: list[StatementState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Status:
    """The database's position against the migrations folder."""

    database: str
    table: str
    version: int
    dirty: bool
    latest: int
    applied: list[MigrationInfo]
    pending: list[MigrationInfo]
    version_has_file: bool
    problems: list[dict[str, str]] = field(default_factory=list)
    failure: DirtyFailure | None = None  # when dirty and the audit trail has the attempt

    @property
    def is_current(self) -> bool:
        return not self.dirty and not self.pending

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "table": self.table,
            "version": self.version,
            "dirty": self.dirty,
            "latest": self.latest,
            "current": self.is_current,
            "version_has_file": self.version_has_file,
            "applied": [m.to_dict() for m in self.applied],
            "pending": [m.to_dict() for m in self.pending],
            "problems": self.problems,
            "failure": self.failure.to_dict() if self.failure else None,
        }


@dataclass(frozen=True)
class PlannedStep:
    """One migration a command will run: which file, which way, and the version it leads to."""

    migration: files.Migration
    direction: Direction
    to_version: int

    @property
    def file(self) -> files.MigrationFile | None:
        return self.migration.up if self.direction == "up" else self.migration.down


@dataclass
class PlanItem:
    """A planned step as shown to people (the plan artifact, ``--json``)."""

    version: int
    name: str
    direction: Direction
    to_version: int
    transactional: bool
    why_not_transactional: str | None
    file: str | None
    checksum: str | None


@dataclass
class Plan:
    """Migrations a command would run, in order, from the current state."""

    database: str
    version: int
    dirty: bool
    target: int
    steps: list[PlanItem]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Session:
    """An open connection to the database with its resolved state table (and the lock, if taken)."""

    conn: psycopg.Connection
    st: StateTable
    conn_info: Connection


class Migrator:
    """Apply, revert, force and inspect migrations of one database.

    ``settings.database_url`` None means the embedded PostgreSQL. ``run_id`` (e.g. the Prefect
    flow run id) is written to every audit row. ``progress`` receives one line per migration.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        run_id: str | None = None,
        progress: Progress | None = None,
        approved_by: str | None = None,
        approval_comment: str | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id or settings.run_id
        self.approved_by = approved_by
        self.approval_comment = approval_comment or None  # the approval's comment (a change ticket), audited
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self._conn_info: Connection | None = None
        self.database: str | None = None  # name (never a URL) once a session has connected

    # -- connection and table -------------------------------------------------------------

    @property
    def conn_info(self) -> Connection:
        if self._conn_info is None:
            self._conn_info = db.resolve(self.settings)
        return self._conn_info

    def load_files(self) -> files.MigrationSet:
        return files.load(self.settings.migrations_path)

    @contextlib.contextmanager
    def session(self, lock: bool = True, *, stop: Callable[[], bool] | None = None) -> Iterator[Session]:
        """A connection to the database; with ``lock`` also the migration lock and the state tables.

        The lock is polled from this idle session (see ``state.acquire_lock``): a waiting process
        never holds a snapshot the running migration could wait for. ``stop`` ends the wait early.
        """
        conn = db.connect(self.conn_info)
        try:
            st = resolve_table(conn, state_table_name(self.settings, self.conn_info.table))
            self.database = st.database
            if lock:
                acquire_lock(conn, st, self.settings.lock_wait_seconds, stop)
                try:
                    if conn.info.server_version >= 140000:
                        conn.execute(_set("client_connection_check_interval", CLIENT_CHECK_INTERVAL))
                    ensure_tables(conn, st)
                    yield Session(conn, st, self.conn_info)
                finally:
                    _end_open_transaction(conn)
                    release_lock(conn, st.lock_ids)
            else:
                yield Session(conn, st, self.conn_info)
        finally:
            conn.close()

    # -- read-only ------------------------------------------------------------------------

    def status(self) -> Status:
        """Version, dirty flag, applied and pending migrations; creates nothing, takes no lock."""
        migrations = self.load_files()
        with self.session(lock=False) as s:
            version, dirty = read_state(s.conn, s.st)
            applied_at = _last_applied(s.conn, s.st)
            status = _status(s.st, migrations, version, dirty, applied_at)
            if dirty:
                status.failure = _dirty_failure(s.conn, s.st, migrations, version)
            return status

    def history(self, limit: int | None = 50) -> list[dict[str, Any]]:
        with self.session(lock=False) as s:
            return read_history(s.conn, s.st, limit)

    def plan(self, *, direction: str = "up", target: int | None = None, steps: int | None = None) -> Plan:
        """What ``up`` (or ``goto target``, or ``down steps``) would do now; changes nothing."""
        migrations = self.load_files()
        migrations.raise_if_errors()
        with self.session(lock=False) as s:
            version, dirty = read_state(s.conn, s.st)
        if direction == "down":
            planned = _plan_down(migrations, version, steps or 1) if target is None else _plan_down(
                migrations, version, None, stop_at=target
            )
        elif target is not None:
            planned = _plan_goto(migrations, version, target)
        else:
            planned = _plan_up(migrations, version, steps)
        items = []
        for p in planned:
            mf = p.file
            reason = non_transactional_reason(mf.sql) if mf else None
            items.append(
                PlanItem(p.migration.version, p.migration.name, p.direction, p.to_version, reason is None, reason,
                         str(mf.path) if mf else None, mf.sha256 if mf else None)
            )
        return Plan(self.database or "", version, dirty, planned[-1].to_version if planned else version, items)

    # -- changes --------------------------------------------------------------------------

    def up(self, steps: int | None = None) -> RunResult:
        """Apply pending migrations (all, or the next ``steps``)."""
        if steps is not None and steps < 1:
            raise MigratorError(f"up N needs N >= 1 (got {steps})")
        return self._run("up", lambda ms, cur: _plan_up(ms, cur, steps))

    def down(self, steps: int = 1) -> RunResult:
        """Revert the last ``steps`` applied migrations (default one, as the seed's migrate-down)."""
        if steps < 1:
            raise MigratorError(f"down N needs N >= 1 (got {steps}); use down-all to revert everything")
        return self._run("down", lambda ms, cur: _plan_down(ms, cur, steps))

    def down_all(self) -> RunResult:
        """Revert every applied migration."""
        return self._run("down-all", lambda ms, cur: _plan_down(ms, cur, None))

    def goto(self, version: int) -> RunResult:
        """Migrate up or down to exactly ``version`` (which must have a file)."""
        return self._run("goto", lambda ms, cur: _plan_goto(ms, cur, version))

    def reset(self) -> RunResult:
        """down-all, then up: the seed's ``migrate-reset`` for development databases."""
        first = self.down_all()
        second = self.up()
        return RunResult(
            command="reset",
            database=first.database,
            version_before=first.version_before,
            version_after=second.version_after,
            dirty_after=second.dirty_after,
            steps=first.steps + second.steps,
            run_id=self.run_id,
            warnings=first.warnings + second.warnings,
        )

    def force(self, version: int, *, expected_current: int | None = None) -> RunResult:
        """Set (version, clean) without running anything, as ``migrate force``; audited.

        ``expected_current`` (used by the Prefect force flow) refuses to force unless the
        recorded version is the one the operator believes it is.
        """
        if version < NO_VERSION:
            raise MigratorError(f"force V needs V >= -1 (got {version})")
        migrations = self.load_files()
        warnings: list[str] = []
        if version != NO_VERSION and migrations.get(version) is None:
            warnings.append(f"version {version} has no migration file in {migrations.directory}")
        forced = migrations.get(version)
        with self.session(lock=True) as s:
            before, dirty = read_state(s.conn, s.st)
            if expected_current is not None and expected_current != before:
                raise ForceRefusedError(
                    f"refusing to force: the database records version {before}{' (dirty)' if dirty else ''}, "
                    f"not the expected {expected_current}; re-check `migrator status` and retry"
                )
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            with s.conn.transaction():
                write_state(s.conn, s.st, version, False)
                write_history(
                    s.conn,
                    s.st,
                    HistoryEntry(
                        version=version,
                        name=forced.name if forced else None,
                        direction="force",
                        # the up file the forced version stands for: drift and resume can compare it
                        checksum=forced.up.sha256 if forced and forced.up else None,
                        success=True,
                        from_version=before,
                        to_version=version,
                        started_at=started,
                        finished_at=datetime.now(UTC),
                        duration_ms=int((time.perf_counter() - t0) * 1000),
                        run_id=self.run_id,
                        environment=self.settings.environment,
                        error=f"forced from {before}{' (dirty)' if dirty else ''}",
                        approved_by=self.approved_by,
                    ),
                )
        for w in warnings:
            log.warning("%s", w)
        return RunResult("force", s.st.database, before, version, False, [], self.run_id, warnings)

    # -- the apply loop -------------------------------------------------------------------

    def _run(self, command: str, plan_fn: Callable[[files.MigrationSet, int], list[PlannedStep]]) -> RunResult:
        """Run a plan under the lock; SIGTERM/SIGINT cancel it (see ``migrator.cancel``)."""
        migrations = self.load_files()
        migrations.raise_if_errors()
        with cancel_scope() as scope:
            return self._run_locked(command, plan_fn, migrations, scope)

    def _run_locked(
        self,
        command: str,
        plan_fn: Callable[[files.MigrationSet, int], list[PlannedStep]],
        migrations: files.MigrationSet,
        scope: CancelScope,
    ) -> RunResult:
        try:
            with self.session(lock=True, stop=lambda: scope.requested) as s:
                scope.add(s.conn)
                try:
                    return self._run_plan(s, command, plan_fn, migrations, scope)
                finally:
                    scope.remove(s.conn)  # the rollback and the unlock that follow must not be cancelled
        except LockWaitStopped:
            raise _cancelled_between(scope, command, None, None) from None

    def _run_plan(
        self,
        s: Session,
        command: str,
        plan_fn: Callable[[files.MigrationSet, int], list[PlannedStep]],
        migrations: files.MigrationSet,
        scope: CancelScope,
    ) -> RunResult:
        import psycopg

        version, dirty = read_state(s.conn, s.st)
        if dirty:
            raise DirtyDatabaseError(version)
        plan = plan_fn(migrations, version)
        result = RunResult(command, s.st.database, version, version, run_id=self.run_id)
        for planned in plan:
            if scope.requested:
                raise _cancelled_between(scope, command, s.st.database, result.version_after)
            try:
                step = self._apply(s, planned, result.version_after, scope)
            except psycopg.errors.QueryCanceled:
                # the cancel hit the engine's own bookkeeping before the file started (its transaction
                # rolled back): nothing of this migration ran
                if scope.requested:
                    raise _cancelled_between(scope, command, s.st.database, result.version_after) from None
                raise
            result.steps.append(step)
            result.version_after = planned.to_version
            self.progress(step.describe())
        if scope.requested:
            raise _cancelled_between(scope, command, s.st.database, result.version_after)
        if not plan:
            self.progress("no change")
        return result

    def _timeouts(self) -> tuple[str, str]:
        lock_ms = parse_interval_ms(self.settings.lock_timeout, "lock_timeout")
        stmt = self.settings.statement_timeout
        url_ms = self.conn_info.statement_timeout_ms
        stmt_ms = url_ms if url_ms is not None and stmt == Settings.statement_timeout else parse_interval_ms(
            stmt, "statement_timeout"
        )
        return f"{lock_ms}ms", f"{stmt_ms}ms"

    def _apply(self, s: Session, planned: PlannedStep, before: int, scope: CancelScope) -> Step:
        """Run one file: in one transaction when it allows it, else by golang-migrate's dirty protocol."""
        mf = planned.file
        if mf is None:  # guarded by raise_if_errors; kept for API callers with odd folders
            raise MigrationFileError(
                f"migration {planned.migration.label} has no {planned.direction} file"
            )
        reason = non_transactional_reason(mf.sql)
        statements = split_statements(mf.sql) or [Statement(0, len(mf.sql), mf.sql, 1)]
        _refuse_copy_stdin(mf, statements)
        attempt = _Attempt(self, s, planned, mf, statements, before, scope)
        if reason is None:
            attempt.run_transactional()
        else:
            log.info("%s runs without a wrapping transaction: %s", mf.filename, reason)
            attempt.run_non_transactional()
        m = planned.migration
        return Step(m.version, m.name, planned.direction, attempt.elapsed_ms(), reason is None, mf.sha256)


class _Attempt:
    """One run of one migration file, and its audit row.

    Both paths run the same statements with the same timeouts and end in one audit row; they
    differ in where the transaction is, as dbmate runs one ``execMigration`` inside
    ``doTransaction`` or directly.
    """

    def __init__(
        self,
        migrator: Migrator,
        s: Session,
        planned: PlannedStep,
        mf: files.MigrationFile,
        statements: list[Statement],
        before: int,
        scope: CancelScope,
    ) -> None:
        self.m = migrator
        self.s = s
        self.planned = planned
        self.mf = mf
        self.statements = statements
        self.before = before
        self.scope = scope
        self.started = datetime.now(UTC)
        self.t0 = time.perf_counter()
        self.lock_timeout, self.statement_timeout = migrator._timeouts()

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.t0) * 1000)

    def entry(self, success: bool, error: str | None = None, *, done: int | None = None,
              failed: int | None = None) -> HistoryEntry:
        m = self.planned.migration
        return HistoryEntry(
            version=m.version,
            name=m.name,
            direction=self.planned.direction,
            checksum=self.mf.sha256,
            success=success,
            from_version=self.before,
            to_version=self.planned.to_version,
            started_at=self.started,
            finished_at=datetime.now(UTC),
            duration_ms=self.elapsed_ms(),
            run_id=self.m.run_id,
            environment=self.m.settings.environment,
            error=error,
            approved_by=self.m.approved_by,
            comment=self.m.approval_comment,
            statements_total=len(self.statements),
            statements_done=len(self.statements) if success and done is None else done,
            failed_statement=failed,
            statement_hashes=[statement_hash(st.text) for st in self.statements],
        )

    def run_transactional(self) -> None:
        """One round trip: BEGIN, timeouts, the file's statements, the version, the audit row, COMMIT."""
        from migrator.batch import BatchError, run_batch

        conn, st = self.s.conn, self.s.st
        prologue = ["BEGIN", _set("lock_timeout", self.lock_timeout, local=True).as_string(conn),
                    _set("statement_timeout", self.statement_timeout, local=True).as_string(conn)]
        epilogue = [
            *(q.as_string(conn) for q in state_statements(st, self.planned.to_version, False)),
            history_statement(conn, st, self.entry(True)),
            "COMMIT",
        ]
        try:
            run_batch(conn, prologue + [x.text for x in self.statements] + epilogue)
        except BatchError as be:
            k = (be.index or 0) - len(prologue)
            stmt = self.statements[k] if 0 <= k < len(self.statements) else None
            done = min(max(k, 0), len(self.statements))
            exc: Exception = be.error
            if stmt is not None and be.position_in_statement is not None:
                exc = _Positioned(be.error, stmt.start + be.position_in_statement)
            raise self.fail(exc, stmt, dirty=False, done=done) from None
        except Exception as exc:  # connection lost mid-batch and the like
            raise self.fail(exc, None, dirty=False, done=0) from None
        except BaseException as exc:  # a host's signal handler raised inside the batch
            raise exc from self.interrupted(exc, dirty=False, done=None)

    def run_non_transactional(self) -> None:
        """golang-migrate's protocol, audited: (target, dirty) and a "started" row, the statements
        one by one with progress on that row, then (target, clean) and the row completed."""
        conn, st = self.s.conn, self.s.st
        with conn.transaction():
            write_state(conn, st, self.planned.to_version, True)
            row_id = write_history(conn, st, self.entry(False, STARTED_ERROR, done=0))
        done = 0
        current: Statement | None = None
        try:
            conn.execute(_set("lock_timeout", self.lock_timeout) + sql.SQL("; ")
                         + _set("statement_timeout", self.statement_timeout))
            for current in self.statements:
                if self.scope.requested:
                    raise _StoppedBefore()
                conn.execute(current.text.encode())
                done += 1
                update_progress(conn, st, row_id, done)
            current = None
            if conn.info.transaction_status != 0:  # the file began a transaction it never ended
                raise MigratorError(
                    f"{self.mf.path}: the file opens a transaction (BEGIN) that it never commits; add COMMIT"
                )
            conn.execute(b"RESET lock_timeout; RESET statement_timeout")
            with conn.transaction():
                write_state(conn, st, self.planned.to_version, False)
                complete_history(conn, st, row_id, self.entry(True))
        except Exception as exc:
            # the statement that was running, if the exception came from it (not from the progress
            # UPDATE after it, nor from the check before it)
            ran = current is not None and done < self.statements.index(current) + 1
            failed_stmt = current if ran and not isinstance(exc, _StoppedBefore) else None
            upcoming = self.statements[done] if failed_stmt is None and done < len(self.statements) else None
            raise self.fail(exc, failed_stmt, dirty=True, done=done, row_id=row_id, next_stmt=upcoming) from None
        except BaseException as exc:  # a host's signal handler raised inside a statement
            running = current if current is not None and done < self.statements.index(current) + 1 else None
            raise exc from self.interrupted(exc, dirty=True, done=done, row_id=row_id, stmt=running)

    def interrupted(self, exc: BaseException, *, dirty: bool, done: int | None, row_id: int | None = None,
                    stmt: Statement | None = None) -> MigrationFailedError:
        """A host's handler (Prefect's TerminationSignal, KeyboardInterrupt) raised mid-statement:
        cancel that statement on the server and drain the connection, then finish like a cancel."""
        server_error = _cancel_and_drain(self.s.conn)
        failure = self.fail(server_error or exc_as_error(exc), stmt, dirty=dirty, done=done, row_id=row_id,
                            signal_name=signal_name_of(exc))
        self.m.progress(str(failure))  # the one line (version, clean/dirty) in the host's log
        return failure

    def fail(self, exc: Exception, stmt: Statement | None, *, dirty: bool, done: int | None,
             row_id: int | None = None, next_stmt: Statement | None = None,
             signal_name: str | None = None) -> MigrationFailedError:
        """Roll back what is open, write (or complete) the audit row, and build the error to raise."""
        import psycopg

        conn, st = self.s.conn, self.s.st
        _end_open_transaction(conn)
        with contextlib.suppress(psycopg.Error):
            conn.execute(b"RESET lock_timeout; RESET statement_timeout")
        if signal_name is None and self.scope.requested:
            signal_name = self.scope.signal_name
        state_version = self.planned.to_version if dirty else self.before
        failure = _failure(
            exc, self.mf, self.planned, stmt or next_stmt, dirty, state_version, self.before, signal_name,
            stopped_before=stmt is None and next_stmt is not None,
        )
        failed = self.statements.index(stmt) + 1 if stmt is not None else None
        entry = self.entry(False, failure.pg_message, done=done, failed=failed)
        try:
            with conn.transaction():
                if row_id is None:
                    write_history(conn, st, entry)
                else:
                    complete_history(conn, st, row_id, entry)
        except psycopg.Error as audit_exc:
            # the connection is gone (server crash): the error line says the state; a non-transactional
            # file keeps its "started" row, a transactional one was rolled back with its row
            log.info("could not write the audit row for %s: %s", self.mf.filename, redact(str(audit_exc)))
        return failure


def _set(setting: str, value: str, *, local: bool = False) -> sql.Composed:
    return sql.SQL("SET {}{} = {}").format(
        sql.SQL("LOCAL " if local else ""), sql.Identifier(setting), sql.Literal(value)
    )


def _cancel_and_drain(conn: psycopg.Connection) -> Exception | None:
    """Cancel the query an exception interrupted and read its remaining results, so the connection
    can roll back; returns the server's error for it (QueryCanceled, normally).

    psycopg does this itself for KeyboardInterrupt and SystemExit only; another exception raised by
    a signal handler (Prefect's TerminationSignal) would leave the query running on the server.
    """
    from psycopg import errors, generators, pq

    if conn.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return None
    try:
        conn.cancel_safe(timeout=5.0)
        results = conn.wait(generators.fetch_many(conn.pgconn), timeout=30.0)
    except Exception as exc:
        return exc
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            return errors.error_from_result(res, encoding=conn.info.encoding)
    return None


def exc_as_error(exc: BaseException) -> Exception:
    return Exception(f"interrupted ({type(exc).__name__})")


class _StoppedBefore(Exception):
    """A cancel request was seen between two statements of a non-transactional file."""


class _Positioned(Exception):
    """A batch syntax error with its character offset already mapped into the file."""

    def __init__(self, error: Exception, position: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.position = position


_COPY_STDIN = re.compile(r"^\s*COPY\b.*\b(FROM\s+STDIN|TO\s+STDOUT)\b", re.IGNORECASE | re.DOTALL)


def _refuse_copy_stdin(mf: files.MigrationFile, statements: list[Statement]) -> None:
    for stmt in statements:
        if _COPY_STDIN.match(stmt.text):
            raise MigrationFileError(
                f"{mf.path}:{stmt.line}: COPY ... FROM STDIN/TO STDOUT needs a client data stream, which migration "
                "files cannot carry; load the data with INSERT or COPY from a server-side file"
            )


def _cancelled_between(
    scope: CancelScope, command: str, database: str | None, version: int | None
) -> MigrationCancelledError:
    """A cancel that arrived while no statement ran (waiting for the lock, between migrations)."""
    where = (
        f"the database stays at version {version}, clean" if version is not None
        else "nothing was changed (the migration lock was never taken)"
    )
    return MigrationCancelledError(
        f"{command} cancelled by {scope.signal_name}; {where}",
        signal_name=scope.signal_name,
        version=version if version is not None else NO_VERSION,
        name="",
        direction=command,
        file="",
        line=None,
        column=None,
        statement=None,
        pg_message=f"cancelled by {scope.signal_name}",
        dirty=False,
        state_version=version if version is not None else NO_VERSION,
    )


# -- planning helpers -----------------------------------------------------------------------


def _plan_up(ms: files.MigrationSet, cur: int, steps: int | None) -> list[PlannedStep]:
    if cur != NO_VERSION and ms.get(cur) is None:
        raise MigratorError(
            f"the database is at version {cur}, which has no migration file in {ms.directory}; "
            "restore that file (or run `migrator force` with a version that exists) before migrating"
        )
    todo = [m for m in ms if m.version > cur]
    if steps is not None:
        todo = todo[:steps]
    return [PlannedStep(m, "up", m.version) for m in todo]


def _plan_goto(ms: files.MigrationSet, cur: int, version: int) -> list[PlannedStep]:
    if version != NO_VERSION and ms.get(version) is None:
        raise MigratorError(
            f"no migration with version {version} in {ms.directory}; run `migrator list` for the available versions"
        )
    if version >= cur:
        return [p for p in _plan_up(ms, cur, None) if p.migration.version <= version]
    return _plan_down(ms, cur, None, stop_at=version)


def _plan_down(ms: files.MigrationSet, cur: int, steps: int | None, stop_at: int = NO_VERSION) -> list[PlannedStep]:
    plan: list[PlannedStep] = []
    while cur != NO_VERSION and cur > stop_at and (steps is None or len(plan) < steps):
        m = ms.get(cur)
        if m is None:
            raise MigratorError(
                f"the database is at version {cur}, which has no migration file in {ms.directory}; "
                "restore that file to revert it"
            )
        prev = ms.previous(cur)
        plan.append(PlannedStep(m, "down", prev))
        cur = prev
    return plan


def _end_open_transaction(conn: psycopg.Connection) -> None:
    """Roll back a transaction a failed file left open (autocommit sessions)."""
    import psycopg

    _cancel_and_drain(conn)  # a statement an exception interrupted
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")


def _failure(
    exc: Exception,
    mf: files.MigrationFile,
    planned: PlannedStep,
    stmt: Statement | None,
    dirty: bool,
    state_version: int,
    before: int,
    signal_name: str | None = None,
    *,
    stopped_before: bool = False,
) -> MigrationFailedError:
    """Build the one-line error: file:line:col, PostgreSQL's message, the statement, the state.

    With ``signal_name`` the error is a MigrationCancelledError (the statement was cancelled, or
    with ``stopped_before`` the cancel came between statements and ``stmt`` is the next one).
    """
    pg_message, detail, line, col = _locate(exc, mf, stmt)
    if signal_name:
        pg_message = f"cancelled by {signal_name}" + ("" if stopped_before else f" ({pg_message})")
    statement = " ".join(stmt.text.split()) if stmt is not None else None
    where = f"{mf.path}:{line}:{col}" if line else str(mf.path)
    short_stmt = (statement[:160] + "...") if statement and len(statement) > 160 else statement
    verb = f"cancelled by {signal_name}" if signal_name else "failed"
    msg = f"migration {planned.migration.version} ({planned.direction}) {verb} " + (
        f"before {where}" if stopped_before else f"at {where}" if signal_name else f"at {where}: {pg_message}"
    )
    if detail and not signal_name:
        msg += f" ({redact(detail)})"
    if short_stmt:
        msg += f" in statement: {short_stmt}"
    msg += f"; {_state_sentence(dirty, state_version, before, stopped_before)}"
    kwargs: dict[str, Any] = dict(
        version=planned.migration.version,
        name=planned.migration.name,
        direction=planned.direction,
        file=str(mf.path),
        line=line,
        column=col,
        statement=redact(statement) if statement else None,
        pg_message=pg_message,
        dirty=dirty,
        state_version=state_version,
    )
    if signal_name:
        return MigrationCancelledError(redact(msg), signal_name=signal_name, **kwargs)
    return MigrationFailedError(redact(msg), **kwargs)


def _locate(
    exc: Exception, mf: files.MigrationFile, stmt: Statement | None
) -> tuple[str, str | None, int | None, int | None]:
    """(PostgreSQL's message, its detail, line, column in the file) of a failure."""
    absolute_pos = None
    if isinstance(exc, _Positioned):
        absolute_pos, exc = exc.position, exc.error
    diag = getattr(exc, "diag", None)
    pg_message = redact(getattr(diag, "message_primary", None) or str(exc)).strip()
    detail = getattr(diag, "message_detail", None)
    if stmt is None:
        return pg_message, detail, None, None
    pos = getattr(diag, "statement_position", None)
    if absolute_pos is not None:
        offset = absolute_pos
    else:
        offset = stmt.start + (int(pos) - 1 if pos else len(stmt.text) - len(stmt.text.lstrip()))
    line, col = line_col(mf.sql, offset)
    return pg_message, detail, line, col


def _state_sentence(dirty: bool, state_version: int, before: int, stopped_before: bool) -> str:
    if not dirty:
        return f"rolled back; the database stays at version {state_version}, clean"
    return (
        f"database is now DIRTY at version {state_version}: statements before the "
        f"{'next' if stopped_before else 'failing'} one stay applied; "
        f"finish the change by hand then `migrator force {state_version}`, or undo it by hand then "
        f"`migrator force {before}`"
    )


def _dirty_failure(
    conn: psycopg.Connection, st: StateTable, ms: files.MigrationSet, version: int
) -> DirtyFailure | None:
    """The attempt that left the database dirty at ``version``, statement by statement; None when
    the audit trail does not have it (the database was dirtied by another tool)."""
    attempt = last_attempt(conn, st)
    if attempt is None or attempt.success or attempt.to_version not in (version, None):
        attempt = last_attempt(conn, st, version)
        if attempt is None or attempt.success:
            return None
    return describe_attempt(attempt, ms)


def describe_attempt(attempt: Attempt, ms: files.MigrationSet) -> DirtyFailure:
    """An unsuccessful attempt against the file on disk: which statements ran, failed, or never ran."""
    m = ms.get(attempt.version)
    mf = (m.up if attempt.direction == "up" else m.down) if m else None
    statements = split_statements(mf.sql) if mf else []
    done = attempt.statements_done or 0
    finished = attempt.error != STARTED_ERROR
    # a killed attempt never recorded a failing statement: the one it was running did not complete
    failed = attempt.failed_statement or (done + 1 if not finished and done < len(statements) else None)
    states: list[StatementState] = []
    for i, stmt in enumerate(statements, start=1):
        outcome: StatementOutcome = "done" if i <= done else ("failed" if i == failed else "not run")
        states.append(StatementState(i, stmt.line, " ".join(stmt.text.split()), outcome))
    hashes = [statement_hash(x.text) for x in statements]
    failing = states[failed - 1] if failed and failed <= len(states) else None
    return DirtyFailure(
        version=attempt.version,
        name=attempt.name,
        direction=attempt.direction,
        file=str(mf.path) if mf else None,
        line=failing.line if failing else None,
        statement=failing.text if failing else None,
        pg_error=attempt.error,
        run_id=attempt.run_id,
        attempt_id=attempt.id,
        started_at=f"{attempt.started_at:%Y-%m-%d %H:%M:%S %Z}",
        finished=finished,
        file_changed=bool(attempt.statement_hashes) and attempt.statement_hashes != hashes,
        statements=states,
    )


def _last_applied(conn: psycopg.Connection, st: StateTable) -> dict[int, tuple[str, str | None]]:
    return {v: (f"{t:%Y-%m-%d %H:%M:%S %Z}", c) for v, (t, c) in last_applied_ups(conn, st).items()}


def _status(
    st: StateTable,
    ms: files.MigrationSet,
    version: int,
    dirty: bool,
    applied_at: dict[int, tuple[str, str | None]],
) -> Status:
    applied: list[MigrationInfo] = []
    pending: list[MigrationInfo] = []
    for m in ms:
        at, checksum = applied_at.get(m.version, (None, None))
        info = MigrationInfo(m.version, m.name, "applied", m.down is not None, at, checksum)
        if m.version <= version:
            applied.append(info)
        else:
            info.state = "pending"
            info.applied_at = None
            pending.append(info)
    has_file = version == NO_VERSION or ms.get(version) is not None
    if not has_file:
        applied.append(MigrationInfo(version, "?", "missing-file", False))
    return Status(
        database=st.database,
        table=f"{st.schema}.{st.table}",
        version=version,
        dirty=dirty,
        latest=ms.latest,
        applied=applied,
        pending=pending,
        version_has_file=has_file,
        problems=[p.to_dict() for p in ms.problems],
    )
