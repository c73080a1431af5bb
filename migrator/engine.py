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
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg

from migrator import db, files
from migrator.config import Connection, Settings, state_table_name
from migrator.errors import (
    DirtyDatabaseError,
    ForceRefusedError,
    MigrationCancelledError,
    MigrationFailedError,
    MigrationFileError,
    MigratorError,
)
from migrator.execute.cancel import CancelScope, cancel_scope
from migrator.execute.executor import (
    Audit,
    Executor,
    Failure,
    Job,
    Timeouts,
    end_open_transaction,
    error_location,
    invalid_indexes,
    preflight,
    set_parameter,
)
from migrator.execute.state import (
    NO_VERSION,
    STARTED_ERROR,
    Attempt,
    AttemptProgress,
    HistoryEntry,
    LockWaitStopped,
    StateTable,
    acquire_lock,
    ensure_tables,
    last_applied_ups,
    last_attempt,
    progress_of,
    read_history,
    read_state,
    release_lock,
    resolve_table,
    statement_matches,
    write_history,
    write_state,
)
from migrator.redact import redact
from migrator.sql import non_transactional_reason, split_statements
from migrator.status_model import (  # noqa: F401  (re-exported: callers import them from here)
    DirtyFailure,
    MigrationInfo,
    MigrationState,
    StatementOutcome,
    StatementState,
    Status,
    build_status,
)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
Direction = Literal["up", "down"]

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
    label: str = ""  # as the files spell it (000010_add_x), for summaries that name the file

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
                        conn.execute(set_parameter("client_connection_check_interval", CLIENT_CHECK_INTERVAL))
                    ensure_tables(conn, st)
                    yield Session(conn, st, self.conn_info)
                finally:
                    end_open_transaction(conn)
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
            status.invalid_indexes = invalid_indexes(s.conn)
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
        """Run a plan under the lock; SIGTERM/SIGINT cancel it (see ``migrator.execute.cancel``)."""
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
        version, dirty = read_state(s.conn, s.st)
        if dirty:
            raise DirtyDatabaseError(version)
        plan = plan_fn(migrations, version)
        for planned in plan:  # a file that cannot run as written is refused before anything runs
            if planned.file is not None:
                preflight(planned.file)
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

    def timeouts(self) -> Timeouts:
        """lock_timeout and statement_timeout for migration statements, from every source."""
        return Timeouts.of(self.settings, self.conn_info.statement_timeout_ms)

    def _apply(self, s: Session, planned: PlannedStep, before: int, scope: CancelScope) -> Step:
        """Run one file through the executor: in one transaction when it allows it, else by
        golang-migrate's dirty protocol."""
        mf = planned.file
        if mf is None:  # guarded by raise_if_errors; kept for API callers with odd folders
            raise MigrationFileError(
                f"migration {planned.migration.label} has no {planned.direction} file"
            )
        m = planned.migration
        executor = Executor(s.conn, s.st, self.timeouts(), scope=scope, progress=self.progress)
        job = Job(mf, before, planned.to_version, dirty_version=planned.to_version)
        audit = Audit(planned.direction, m.version, m.name, self.run_id, self.settings.environment, self.approved_by,
                      comment=self.approval_comment)
        done = executor.run(job, audit, lambda f: _failure(f, mf, planned, before))
        return Step(m.version, m.name, planned.direction, done.duration_ms, done.transactional, mf.sha256, m.label)


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


def _failure(f: Failure, mf: files.MigrationFile, planned: PlannedStep, before: int) -> MigrationFailedError:
    """Build the one-line error: file:line:col, PostgreSQL's message, the statement, the state.

    A cancelled run is a MigrationCancelledError (the statement was cancelled, or with
    ``stopped_before`` the cancel came between statements and the statement named is the next one).
    """
    stmt, signal_name, stopped_before = f.statement, f.signal_name, f.stopped_before
    state_version = planned.to_version if f.dirty else before
    pg_message, detail, line, col = error_location(f.error, mf, stmt)
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
    msg += f"; {_state_sentence(f.dirty, state_version, stopped_before)}"
    kwargs: dict[str, Any] = dict(
        version=planned.migration.version,
        name=planned.migration.name,
        direction=planned.direction,
        file=str(mf.path),
        line=line,
        column=col,
        statement=redact(statement) if statement else None,
        pg_message=pg_message,
        dirty=f.dirty,
        state_version=state_version,
    )
    if signal_name:
        return MigrationCancelledError(redact(msg), signal_name=signal_name, **kwargs)
    return MigrationFailedError(redact(msg), **kwargs)


def _state_sentence(dirty: bool, state_version: int, stopped_before: bool) -> str:
    if not dirty:
        return f"rolled back; the database stays at version {state_version}, clean"
    return (
        f"database is now DIRTY at version {state_version}: statements before the "
        f"{'next' if stopped_before else 'failing'} one stay applied; "
        f"`migrator recover` shows which statements ran and the ways out (--resume after fixing the file, "
        f"--revert, or --mark-applied once you finished it by hand)"
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
    return describe_attempt(attempt, ms, progress_of(conn, st, attempt))


def describe_attempt(attempt: Attempt, ms: files.MigrationSet, progress: AttemptProgress | None = None) -> DirtyFailure:
    """An unsuccessful attempt against the file on disk: which statements ran, failed, or never ran
    (``progress``: moved on by the recovery rows after it, a partial revert included)."""
    m = ms.get(attempt.version)
    mf = (m.up if attempt.direction == "up" else m.down) if m else None
    statements = split_statements(mf.sql) if mf else []
    row = progress.row if progress is not None else attempt
    done = row.statements_done or 0
    finished = row.error != STARTED_ERROR
    # a killed attempt never recorded a failing statement: the one it was running did not complete
    failed = row.failed_statement or (done + 1 if not finished and done < len(statements) else None)
    states: list[StatementState] = []
    for i, stmt in enumerate(statements, start=1):
        outcome: StatementOutcome = "done" if i <= done else ("failed" if i == failed else "not run")
        states.append(StatementState(i, stmt.line, " ".join(stmt.text.split()), outcome))
    recorded = attempt.statement_hashes or []
    changed = bool(recorded) and (len(recorded) != len(statements) or not all(
        statement_matches(h, x.text) for h, x in zip(recorded, statements, strict=False)))
    failing = states[failed - 1] if failed and failed <= len(states) else None
    revert = progress.revert if progress is not None else None
    return DirtyFailure(
        version=attempt.version,
        name=attempt.name,
        direction=attempt.direction,
        file=str(mf.path) if mf else None,
        line=failing.line if failing else None,
        statement=failing.text if failing else None,
        pg_error=row.error,
        run_id=row.run_id,
        attempt_id=attempt.id,
        started_at=f"{attempt.started_at:%Y-%m-%d %H:%M:%S %Z}",
        finished=finished,
        file_changed=changed,
        statements=states,
        reverted=progress.reverted if progress is not None else None,
        revert_total=revert.statements_total if revert is not None else None,
        revert_file=(str(m.down.path) if m is not None and m.down is not None else None) if revert else None,
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
    return build_status(st.database, f"{st.schema}.{st.table}", ms, version, dirty, applied_at)
