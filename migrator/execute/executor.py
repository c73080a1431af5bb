"""The one place a migration file's SQL runs.

``up``, ``down``, ``goto``, ``reset``, ``recover --resume`` / ``--revert`` and the rehearsal all hand
a file to ``Executor.run``; nothing else in the tree sends migration text to the server
(``tests/test_structure.py`` checks that). A file runs on one of two paths:

- **in one transaction** (the file allows it): ``BEGIN``, ``SET LOCAL`` timeouts, the statements,
  the new version and the audit row, ``COMMIT``, in ONE round trip (or statement by statement when
  an observer watches each one, as the rehearsal's lock reads do). A failure rolls all of it back:
  the database keeps the state it had.
- **golang-migrate's dirty protocol** (the file cannot run in a transaction): record the version
  dirty and a "started" audit row, run each statement in autocommit with its progress on that row,
  refuse to record clean while an index the file builds is INVALID, then record the version clean
  and complete the row. A failure, a cancel or a kill leaves the database dirty and the row says
  which statements ran and which one failed.

Both paths honour the cancel scope (SIGTERM/SIGINT cancel the running statement on the server,
``migrator.execute.cancel``), the lock and statement timeouts from every source, and write the audit row of
every attempt. Before anything runs, a file with unbalanced ``BEGIN``/``COMMIT`` or a ``COPY FROM
STDIN`` is refused. Callers decide the words: a failure is handed to their ``describe`` function,
which builds the error they raise (the engine's one-line ``MigrationFailedError``, recovery's result).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import psycopg
from psycopg import errors, generators, pq, sql

from migrator import files
from migrator.config import Settings, parse_interval_ms
from migrator.errors import MigrationFileError
from migrator.execute.batch import BatchError, run_batch
from migrator.execute.cancel import CancelScope, signal_name_of
from migrator.execute.state import (
    STARTED_ERROR,
    HistoryEntry,
    StateTable,
    complete_history,
    history_statement,
    state_statements,
    statement_hash,
    update_progress,
    write_history,
    write_state,
)
from migrator.redact import redact
from migrator.sql import Statement, line_col, non_transactional_reason, split_statements, unbalanced_transactions
from migrator.status_model import INVALID_INDEXES_SQL as _INVALID_INDEXES

log = logging.getLogger(__name__)
Direction = Literal["up", "down"]


# -- what to run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """PostgreSQL ``lock_timeout`` and ``statement_timeout`` for a migration's statements, in ms."""

    lock_ms: int
    statement_ms: int

    @classmethod
    def of(cls, settings: Settings, url_statement_timeout_ms: int | None) -> Timeouts:
        """From the options/environment; the URL's ``x-statement-timeout`` counts when the option
        was left at its default (golang-migrate users set it there)."""
        lock_ms = parse_interval_ms(settings.lock_timeout, "lock_timeout")
        stmt = settings.statement_timeout
        if url_statement_timeout_ms is not None and stmt == Settings.statement_timeout:
            return cls(lock_ms, url_statement_timeout_ms)
        return cls(lock_ms, parse_interval_ms(stmt, "statement_timeout"))


@dataclass(frozen=True)
class Audit:
    """The parts of the audit row the caller decides: who, why, and which row it is.

    ``direction`` is the row's kind (``up``/``down`` for a migration, ``recover`` for a recovery
    action, with ``action``); ``version`` the version the row is about.
    """

    direction: str
    version: int
    name: str | None
    run_id: str | None
    environment: str | None
    approved_by: str | None = None
    action: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Job:
    """One migration file to run, and the states around it.

    ``from_version``: recorded before (the row's from_version). ``to_version``: recorded clean on
    success. ``dirty_version``: recorded dirty while a non-transactional file runs; None when the
    database is already dirty (a recovery) and stays as it is until the end. ``start``: statements
    already run (a resume skips them).
    """

    file: files.MigrationFile
    from_version: int
    to_version: int
    dirty_version: int | None
    start: int = 0


@dataclass
class Executed:
    """What one successful run did."""

    statements: list[Statement]
    ran: int  # statements this run executed (a resume skips the ones before ``start``)
    transactional: bool
    duration_ms: int
    audit_id: int | None
    notes: list[str] = field(default_factory=list)  # e.g. an INVALID index dropped before its rebuild


@dataclass
class Failure:
    """Where a run stopped, for the caller's error message."""

    error: Exception
    statements: list[Statement]
    statement: Statement | None  # the failing one; with ``stopped_before`` the next one
    done: int  # statements of the file that completed (the skipped ones included)
    dirty: bool  # the database is dirty because of this run (non-transactional path)
    transactional: bool
    signal_name: str | None = None
    stopped_before: bool = False
    audit_id: int | None = None

    @property
    def index(self) -> int | None:
        """1-based index of ``statement`` in the file."""
        return self.statements.index(self.statement) + 1 if self.statement is not None else None


class Observer(Protocol):
    """Watches each statement (the rehearsal reads locks and relfilenodes around them)."""

    def before(self, index: int, stmt: Statement) -> None: ...

    def after(self, index: int, stmt: Statement) -> None: ...

    def failed(self, index: int, stmt: Statement, exc: Exception) -> None: ...


Describe = Callable[[Failure], Exception]


class ExecutionFailed(Exception):
    """The default ``describe``: the failure itself."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure.error))
        self.failure = failure


# -- preflight -------------------------------------------------------------------------------

_COPY_STDIN = re.compile(r"^\s*COPY\b.*\b(FROM\s+STDIN|TO\s+STDOUT)\b", re.IGNORECASE | re.DOTALL)


def statements_of(mf: files.MigrationFile) -> list[Statement]:
    """The file's statements as the executor runs them (a file that does not split is one statement)."""
    return split_statements(mf.sql) or [Statement(0, len(mf.sql), mf.sql, 1)]


_PREFLIGHTED: set[str] = set()  # sha256 of file texts that passed (the engine checks a plan up front)


def preflight(mf: files.MigrationFile) -> None:
    """Refuse, before anything runs, a file that cannot run as written (names file:line)."""
    if mf.sha256 in _PREFLIGHTED:
        return
    for stmt in statements_of(mf):
        if _COPY_STDIN.match(stmt.text):
            raise MigrationFileError(
                f"{mf.path}:{stmt.line}: COPY ... FROM STDIN/TO STDOUT needs a client data stream, which migration "
                "files cannot carry; load the data with INSERT or COPY from a server-side file"
            )
    problem = unbalanced_transactions(mf.sql)
    if problem is not None:
        line, message = problem
        raise MigrationFileError(
            f"{mf.path}:{line}: {message}; nothing was run (fix the file: every BEGIN needs its COMMIT, "
            "see `migrator validate`)"
        )
    _PREFLIGHTED.add(mf.sha256)


# -- INVALID indexes --------------------------------------------------------------------------

_CREATE_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\b", re.IGNORECASE)


@dataclass(frozen=True)
class IndexTarget:
    """The index a CREATE INDEX statement builds."""

    schema: str | None
    name: str
    concurrently: bool


def index_target(stmt: Statement) -> IndexTarget | None:
    """The named index ``stmt`` creates, or None (not a CREATE INDEX, or an unnamed one)."""
    if not _CREATE_INDEX.match(stmt.text):
        return None
    # lazy: `migrator status` loads this module; pglast.ast would add 17 modules
    from pglast import ast, parse_sql

    try:
        node = parse_sql(stmt.text)[0].stmt
    except Exception:  # the server will report it
        return None
    if not isinstance(node, ast.IndexStmt) or not node.idxname:
        return None
    schema = node.relation.schemaname if node.relation is not None else None
    return IndexTarget(schema or None, node.idxname, bool(node.concurrent))




def invalid_indexes(conn: psycopg.Connection) -> list[str]:
    """Every INVALID index not being built right now, as ``schema.index (on table)``.

    A failed or killed ``CREATE INDEX CONCURRENTLY`` (or ``REINDEX CONCURRENTLY``) leaves one: it
    enforces nothing (a UNIQUE one lets duplicates in) and the planner ignores it, yet writes keep
    maintaining it. ``status``, ``verify`` and the monitors report each one as a problem.
    """
    rows = conn.execute(_INVALID_INDEXES.replace("%%", "%")).fetchall()  # no parameters: no placeholders
    return [f"{s}.{i} (on {t})" for s, i, t in rows]


def _invalid_index(conn: psycopg.Connection, target: IndexTarget) -> str | None:
    """``schema.name`` of an INVALID index that ``target`` names, or None."""
    q = _INVALID_INDEXES + " AND c.relname = %s AND " + (
        "n.nspname = %s" if target.schema else "n.nspname = ANY(current_schemas(false))"
    )
    params: tuple[str, ...] = (target.name, target.schema) if target.schema else (target.name,)
    row = conn.execute(q, params).fetchone()
    return f"{row[0]}.{row[1]}" if row else None


class InvalidIndexLeft(Exception):
    """The file ran to its end but an index it builds is INVALID: the version is not recorded clean."""


# -- the executor ----------------------------------------------------------------------------


class _StoppedBefore(Exception):
    """A cancel request was seen between two statements of a non-transactional file."""


class _Positioned(Exception):
    """A batch syntax error with its character offset already mapped into the file."""

    def __init__(self, error: Exception, position: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.position = position


def error_location(exc: Exception, mf: files.MigrationFile, stmt: Statement | None
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


class Executor:
    """Runs migration files on one connection (autocommit, under the caller's migration lock)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        st: StateTable,
        timeouts: Timeouts,
        *,
        scope: CancelScope | None = None,
        observer: Observer | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self.st = st
        self.timeouts = timeouts
        self.scope = scope or CancelScope()
        self.observer = observer
        self.progress = progress or (lambda msg: log.info("%s", msg))

    def run(self, job: Job, audit: Audit, describe: Describe | None = None) -> Executed:
        """Run ``job``'s file; on failure raise ``describe(failure)`` (after the rollback and the audit row)."""
        preflight(job.file)
        return _Run(self, job, audit, describe or ExecutionFailed).execute()


class _Run:
    """One run of one file: its statements, its audit row, and how it ends."""

    def __init__(self, ex: Executor, job: Job, audit: Audit, describe: Describe) -> None:
        self.ex = ex
        self.conn = ex.conn
        self.job = job
        self.audit = audit
        self.describe = describe
        self.mf = job.file
        self.statements = statements_of(job.file)
        self.reason = non_transactional_reason(job.file.sql)
        self.transactional = self.reason is None and job.start == 0
        self.started = datetime.now(UTC)
        self.t0 = time.perf_counter()
        self.notes: list[str] = []
        self.hashes = [statement_hash(s.text) for s in self.statements]

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.t0) * 1000)

    def entry(self, success: bool, error: str | None = None, *, done: int | None = None,
              failed: int | None = None) -> HistoryEntry:
        a = self.audit
        return HistoryEntry(
            version=a.version, name=a.name, direction=a.direction, checksum=self.mf.sha256, success=success,
            from_version=self.job.from_version, to_version=self.job.to_version, started_at=self.started,
            finished_at=datetime.now(UTC), duration_ms=self.elapsed_ms(), run_id=a.run_id,
            environment=a.environment, error=error, approved_by=a.approved_by,
            statements_total=len(self.statements),
            statements_done=len(self.statements) if success and done is None else done,
            failed_statement=failed, statement_hashes=self.hashes, action=a.action, comment=a.comment,
            transactional=self.transactional,
        )

    def execute(self) -> Executed:
        if self.transactional:
            audit_id = self._in_one_round_trip() if self.ex.observer is None else self._in_transaction_observed()
        else:
            if self.reason is not None:
                log.info("%s runs without a wrapping transaction: %s", self.mf.filename, self.reason)
            audit_id = self._outside_transaction()
        ran = len(self.statements) - self.job.start
        return Executed(self.statements, ran, self.transactional, self.elapsed_ms(), audit_id, self.notes)

    # -- the transactional path ---------------------------------------------------------------

    def _prologue(self) -> list[str]:
        t = self.ex.timeouts
        return ["BEGIN", _set("lock_timeout", f"{t.lock_ms}ms", local=True).as_string(self.conn),
                _set("statement_timeout", f"{t.statement_ms}ms", local=True).as_string(self.conn)]

    def _epilogue(self) -> list[str]:
        return [*(q.as_string(self.conn) for q in state_statements(self.ex.st, self.job.to_version, False)),
                history_statement(self.conn, self.ex.st, self.entry(True)), "COMMIT"]

    def _in_one_round_trip(self) -> int | None:
        """BEGIN, timeouts, the file's statements, the version, the audit row, COMMIT: one batch."""
        prologue = self._prologue()
        try:
            run_batch(self.conn, prologue + [x.text for x in self.statements] + self._epilogue())
        except BatchError as be:
            k = (be.index or 0) - len(prologue)
            stmt = self.statements[k] if 0 <= k < len(self.statements) else None
            done = min(max(k, 0), len(self.statements))
            exc: Exception = be.error
            if stmt is not None and be.position_in_statement is not None:
                exc = _Positioned(be.error, stmt.start + be.position_in_statement)
            raise self.fail(exc, stmt, done=done) from None
        except Exception as exc:  # connection lost mid-batch and the like
            raise self.fail(exc, None, done=0) from None
        except BaseException as exc:  # a host's signal handler raised inside the batch
            raise exc from self.interrupted(exc, done=None)
        return None  # the row was written inside the batch

    def _in_transaction_observed(self) -> int | None:
        """The same transaction, one statement per round trip so the observer sees each one."""
        assert self.ex.observer is not None
        obs, conn = self.ex.observer, self.conn
        current: Statement | None = None
        done = 0
        try:
            for q in self._prologue():
                conn.execute(q.encode())
            for i, current in enumerate(self.statements, start=1):
                obs.before(i, current)
                try:
                    conn.execute(current.text.encode())
                except Exception as exc:
                    obs.failed(i, current, exc)
                    raise
                obs.after(i, current)
                done = i
            current = None
            for q in self._epilogue():
                conn.execute(q.encode())
        except Exception as exc:
            raise self.fail(exc, current, done=done) from None
        except BaseException as exc:
            raise exc from self.interrupted(exc, done=None, stmt=current)
        return None

    # -- the dirty protocol --------------------------------------------------------------------

    def _outside_transaction(self) -> int:
        """golang-migrate's protocol, audited: (version, dirty) and a "started" row, the statements
        one by one with progress on that row, then (version, clean) and the row completed."""
        conn, st, job = self.conn, self.ex.st, self.job
        with conn.transaction():
            if job.dirty_version is not None:
                write_state(conn, st, job.dirty_version, True)
            row_id = write_history(conn, st, self.entry(False, STARTED_ERROR, done=job.start))
        done = job.start
        current: Statement | None = None
        obs = self.ex.observer
        try:
            t = self.ex.timeouts
            conn.execute(_set("lock_timeout", f"{t.lock_ms}ms") + sql.SQL("; ")
                         + _set("statement_timeout", f"{t.statement_ms}ms"))
            for i in range(job.start + 1, len(self.statements) + 1):
                current = self.statements[i - 1]
                if self.ex.scope.requested:
                    raise _StoppedBefore()
                self._drop_invalid_before_rebuild(current)
                if obs is not None:
                    obs.before(i, current)
                try:
                    conn.execute(current.text.encode())
                except Exception as exc:
                    if obs is not None:
                        obs.failed(i, current, exc)
                    raise
                done = i
                update_progress(conn, st, row_id, done)
                if obs is not None:
                    obs.after(i, current)
            current = None
            if conn.info.transaction_status != 0:  # preflight makes this unreachable; kept as the last guard
                raise MigrationFileError(
                    f"{self.mf.path}: the file opens a transaction (BEGIN) that it never commits; add COMMIT"
                )
            self._refuse_invalid_indexes()
            conn.execute(b"RESET lock_timeout; RESET statement_timeout")
            with conn.transaction():
                write_state(conn, st, job.to_version, False)
                complete_history(conn, st, row_id, self.entry(True))
        except Exception as exc:
            # the statement that was running, if the exception came from it (not from the progress
            # UPDATE after it, nor from the checks before or after it)
            ran = current is not None and done < self.statements.index(current) + 1
            failed_stmt = current if ran and not isinstance(exc, _StoppedBefore) else None
            upcoming = self.statements[done] if failed_stmt is None and done < len(self.statements) else None
            raise self.fail(exc, failed_stmt, done=done, row_id=row_id, next_stmt=upcoming) from None
        except BaseException as exc:  # a host's signal handler raised inside a statement
            running = current if current is not None and done < self.statements.index(current) + 1 else None
            raise exc from self.interrupted(exc, done=done, row_id=row_id, stmt=running)
        return row_id

    def _drop_invalid_before_rebuild(self, stmt: Statement) -> None:
        """An INVALID index of the name this CREATE INDEX CONCURRENTLY builds was left by a failed or
        killed attempt: drop it so the statement builds it again (``IF NOT EXISTS`` would skip it)."""
        target = index_target(stmt)
        if target is None or not target.concurrently:
            return
        found = _invalid_index(self.conn, target)
        if found is None:
            return
        schema, name = found.split(".", 1)
        self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
        note = f"dropped the INVALID index {found} (left by an earlier attempt) before building it again"
        self.notes.append(note)
        self.ex.progress(note)

    def _refuse_invalid_indexes(self) -> None:
        for stmt in self.statements:
            target = index_target(stmt)
            found = _invalid_index(self.conn, target) if target is not None else None
            if found is not None:
                raise InvalidIndexLeft(
                    f"index {found} built at line {stmt.line} is INVALID, so version {self.job.to_version} is not "
                    f"recorded clean; drop it (DROP INDEX CONCURRENTLY IF EXISTS {found}) and run "
                    "`migrator recover --resume`"
                )

    # -- ending -----------------------------------------------------------------------------------

    def interrupted(self, exc: BaseException, *, done: int | None, row_id: int | None = None,
                    stmt: Statement | None = None) -> Exception:
        """A host's handler (Prefect's TerminationSignal, KeyboardInterrupt) raised mid-statement:
        cancel that statement on the server and drain the connection, then finish like a cancel."""
        server_error = cancel_and_drain(self.conn)
        failure = self.fail(server_error or Exception(f"interrupted ({type(exc).__name__})"), stmt, done=done,
                            row_id=row_id, signal_name=signal_name_of(exc))
        self.ex.progress(str(failure))  # the one line (version, clean/dirty) in the host's log
        return failure

    def fail(self, exc: Exception, stmt: Statement | None, *, done: int | None, row_id: int | None = None,
             next_stmt: Statement | None = None, signal_name: str | None = None) -> Exception:
        """Roll back what is open, write (or complete) the audit row, and build the caller's error."""
        conn, st = self.conn, self.ex.st
        end_open_transaction(conn)
        with contextlib.suppress(psycopg.Error):
            conn.execute(b"RESET lock_timeout; RESET statement_timeout")
        if signal_name is None and self.ex.scope.requested:
            signal_name = self.ex.scope.signal_name
        dirty = not self.transactional
        failure = Failure(exc, self.statements, stmt or next_stmt, done or 0, dirty, self.transactional,
                          signal_name, stopped_before=stmt is None and next_stmt is not None, audit_id=row_id)
        pg_message = error_location(exc, self.mf, stmt)[0]
        if signal_name:
            pg_message = f"cancelled by {signal_name}" + ("" if failure.stopped_before else f" ({pg_message})")
        failed = failure.index if stmt is not None else None
        entry = self.entry(False, pg_message, done=done, failed=failed)
        try:
            with conn.transaction():
                if row_id is None:
                    failure.audit_id = write_history(conn, st, entry)
                else:
                    complete_history(conn, st, row_id, entry)
        except psycopg.Error as audit_exc:
            # the connection is gone (server crash): the error line says the state; a non-transactional
            # file keeps its "started" row, a transactional one was rolled back with its row
            log.info("could not write the audit row for %s: %s", self.mf.filename, redact(str(audit_exc)))
        return self.describe(failure)


def _set(setting: str, value: str, *, local: bool = False) -> sql.Composed:
    return sql.SQL("SET {}{} = {}").format(
        sql.SQL("LOCAL " if local else ""), sql.Identifier(setting), sql.Literal(value)
    )


def set_parameter(setting: str, value: str) -> sql.Composed:
    """``SET setting = value`` for a session parameter (identifier and literal quoted)."""
    return _set(setting, value)


def cancel_and_drain(conn: psycopg.Connection) -> Exception | None:
    """Cancel the query an exception interrupted and read its remaining results, so the connection
    can roll back; returns the server's error for it (QueryCanceled, normally).

    psycopg does this itself for KeyboardInterrupt and SystemExit only; another exception raised by
    a signal handler (Prefect's TerminationSignal) would leave the query running on the server.
    """
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


def end_open_transaction(conn: psycopg.Connection) -> None:
    """Roll back a transaction a failed file left open (autocommit sessions)."""
    cancel_and_drain(conn)  # a statement an exception interrupted
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")
