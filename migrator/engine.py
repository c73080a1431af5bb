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
from typing import TYPE_CHECKING, Any

from migrator import db, files
from migrator.config import Connection, Settings, parse_interval_ms, state_table_name
from migrator.errors import (
    DirtyDatabaseError,
    ForceRefusedError,
    MigrationFailedError,
    MigrationFileError,
    MigratorError,
)
from migrator.redact import redact
from migrator.state import (
    NO_VERSION,
    HistoryEntry,
    StateTable,
    acquire_lock,
    ensure_tables,
    history_statement,
    last_applied_ups,
    read_history,
    read_state,
    release_lock,
    resolve_table,
    state_statements,
    write_history,
    write_state,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class Step:
    """One migration applied or reverted by a run."""

    version: int
    name: str
    direction: str
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
    state: str  # applied | pending | missing-file
    has_down: bool
    applied_at: str | None = None
    checksum: str | None = None

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
        }


@dataclass
class Plan:
    """Migrations a command would run, in order, from the current state."""

    database: str
    version: int
    dirty: bool
    target: int
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Session:
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
    ) -> None:
        self.settings = settings
        self.run_id = run_id or settings.run_id
        self.approved_by = approved_by
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
    def _session(self, *, lock: bool) -> Iterator[_Session]:
        conn = db.connect(self.conn_info)
        try:
            st = resolve_table(conn, state_table_name(self.settings, self.conn_info.table))
            self.database = st.database
            if lock:
                acquire_lock(conn, st, self.settings.lock_wait_seconds)
                try:
                    ensure_tables(conn, st)
                    yield _Session(conn, st, self.conn_info)
                finally:
                    _end_open_transaction(conn)
                    release_lock(conn, st.lock_ids)
            else:
                yield _Session(conn, st, self.conn_info)
        finally:
            conn.close()

    # -- read-only ------------------------------------------------------------------------

    def status(self) -> Status:
        """Version, dirty flag, applied and pending migrations; creates nothing, takes no lock."""
        migrations = self.load_files()
        with self._session(lock=False) as s:
            version, dirty = read_state(s.conn, s.st)
            applied_at = _last_applied(s.conn, s.st)
            return _status(s.st, migrations, version, dirty, applied_at)

    def history(self, limit: int | None = 50) -> list[dict[str, Any]]:
        with self._session(lock=False) as s:
            return read_history(s.conn, s.st, limit)

    def plan(self, *, direction: str = "up", target: int | None = None, steps: int | None = None) -> Plan:
        """What ``up`` (or ``goto target``, or ``down steps``) would do now; changes nothing."""
        migrations = self.load_files()
        migrations.raise_if_errors()
        with self._session(lock=False) as s:
            version, dirty = read_state(s.conn, s.st)
        if direction == "down":
            planned = _plan_down(migrations, version, steps or 1) if target is None else _plan_down(
                migrations, version, None, stop_at=target
            )
        elif target is not None:
            planned = _plan_goto(migrations, version, target)
        else:
            planned = _plan_up(migrations, version, steps)
        from migrator.lint.transactional import non_transactional_reason

        items = []
        for m, d, to in planned:
            mf = m.up if d == "up" else m.down
            reason = non_transactional_reason(mf.sql) if mf else None
            items.append(
                {"version": m.version, "name": m.name, "direction": d, "to_version": to,
                 "transactional": reason is None, "why_not_transactional": reason,
                 "file": str(mf.path) if mf else None, "checksum": mf.sha256 if mf else None}
            )
        return Plan(self.database or "", version, dirty, planned[-1][2] if planned else version, items)

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
        with self._session(lock=True) as s:
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
                        name=None,
                        direction="force",
                        checksum=None,
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

    def _run(
        self,
        command: str,
        plan_fn: Callable[[files.MigrationSet, int], list[tuple[files.Migration, str, int]]],
    ) -> RunResult:
        migrations = self.load_files()
        migrations.raise_if_errors()
        with self._session(lock=True) as s:
            version, dirty = read_state(s.conn, s.st)
            if dirty:
                raise DirtyDatabaseError(version)
            plan = plan_fn(migrations, version)
            result = RunResult(command, s.st.database, version, version, run_id=self.run_id)
            for migration, direction, target in plan:
                step = self._apply(s, migration, direction, target, result)
                result.steps.append(step)
                result.version_after = target
                self.progress(step.describe())
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

    def _apply(
        self, s: _Session, migration: files.Migration, direction: str, target: int, result: RunResult
    ) -> Step:
        from migrator.lint.transactional import non_transactional_reason, split_statements

        mf = migration.up if direction == "up" else migration.down
        if mf is None:  # guarded by raise_if_errors; kept for API callers with odd folders
            raise MigrationFileError(f"migration {migration.label} has no {direction} file")
        reason = non_transactional_reason(mf.sql)
        statements = split_statements(mf.sql) or [(0, len(mf.sql), mf.sql)]
        lock_timeout, statement_timeout = self._timeouts()
        before = result.version_after
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        conn = s.conn

        def entry(success: bool, error: str | None = None) -> HistoryEntry:
            return HistoryEntry(
                version=migration.version,
                name=migration.name,
                direction=direction,
                checksum=mf.sha256,
                success=success,
                from_version=before,
                to_version=target,
                started_at=started,
                finished_at=datetime.now(UTC),
                duration_ms=int((time.perf_counter() - t0) * 1000),
                run_id=self.run_id,
                environment=self.settings.environment,
                error=error,
                approved_by=self.approved_by,
            )

        current_stmt: tuple[int, int, str] | None = None
        import psycopg

        from migrator.batch import BatchError, run_batch

        _refuse_copy_stdin(mf, statements)
        try:
            if reason is None:
                # One round trip: BEGIN, timeouts, the file's statements, the version, the audit row, COMMIT.
                prologue = ["BEGIN", f"SET LOCAL lock_timeout = '{lock_timeout}'",
                            f"SET LOCAL statement_timeout = '{statement_timeout}'"]
                epilogue = [
                    *state_statements(s.st, target, False),
                    history_statement(conn, s.st, entry(True)),
                    "COMMIT",
                ]
                try:
                    run_batch(conn, prologue + [text for _, _, text in statements] + epilogue)
                except BatchError as be:
                    k = (be.index or 0) - len(prologue)
                    if 0 <= k < len(statements):
                        start, end, text = statements[k]
                        current_stmt = (start, end, text)
                        if be.position_in_statement is not None:
                            raise _Positioned(be.error, start + be.position_in_statement) from None
                    raise be.error from None
            else:
                log.info("%s runs without a wrapping transaction: %s", mf.filename, reason)
                write_state(conn, s.st, target, True)
                conn.execute(
                    f"SET lock_timeout = '{lock_timeout}'; SET statement_timeout = '{statement_timeout}'".encode()
                )
                for current_stmt in statements:
                    conn.execute(current_stmt[2].encode())
                current_stmt = None
                if conn.info.transaction_status != 0:  # the file began a transaction it never ended
                    raise MigratorError(
                        f"{mf.path}: the file opens a transaction (BEGIN) that it never commits; add COMMIT"
                    )
                conn.execute(b"RESET lock_timeout; RESET statement_timeout")
                with conn.transaction():
                    write_state(conn, s.st, target, False)
                    write_history(conn, s.st, entry(True))
        except (psycopg.Error, MigratorError, _Positioned) as exc:
            dirty = reason is not None
            _end_open_transaction(conn)
            with contextlib.suppress(psycopg.Error):
                conn.execute(b"RESET lock_timeout; RESET statement_timeout")
            failure = _failure(exc, mf, migration, direction, current_stmt, dirty, target if dirty else before, before)
            with contextlib.suppress(psycopg.Error):
                write_history(conn, s.st, entry(False, failure.pg_message))
            raise failure from None
        return Step(
            migration.version, migration.name, direction, int((time.perf_counter() - t0) * 1000), reason is None,
            mf.sha256,
        )


class _Positioned(Exception):
    """A batch syntax error with its character offset already mapped into the file."""

    def __init__(self, error: Exception, position: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.position = position


_COPY_STDIN = re.compile(r"^\s*COPY\b.*\b(FROM\s+STDIN|TO\s+STDOUT)\b", re.IGNORECASE | re.DOTALL)


def _refuse_copy_stdin(mf: files.MigrationFile, statements: list[tuple[int, int, str]]) -> None:
    from migrator.lint.transactional import line_col

    for start, _end, text in statements:
        if _COPY_STDIN.match(text):
            line, _ = line_col(mf.sql, start)
            raise MigrationFileError(
                f"{mf.path}:{line}: COPY ... FROM STDIN/TO STDOUT needs a client data stream, which migration "
                "files cannot carry; load the data with INSERT or COPY from a server-side file"
            )


# -- planning helpers -----------------------------------------------------------------------


def _plan_up(ms: files.MigrationSet, cur: int, steps: int | None) -> list[tuple[files.Migration, str, int]]:
    if cur != NO_VERSION and ms.get(cur) is None:
        raise MigratorError(
            f"the database is at version {cur}, which has no migration file in {ms.directory}; "
            "restore that file (or run `migrator force` with a version that exists) before migrating"
        )
    todo = [m for m in ms if m.version > cur]
    if steps is not None:
        todo = todo[:steps]
    return [(m, "up", m.version) for m in todo]


def _plan_goto(ms: files.MigrationSet, cur: int, version: int) -> list[tuple[files.Migration, str, int]]:
    if version != NO_VERSION and ms.get(version) is None:
        raise MigratorError(
            f"no migration with version {version} in {ms.directory}; run `migrator list` for the available versions"
        )
    if version >= cur:
        return [p for p in _plan_up(ms, cur, None) if p[0].version <= version]
    return _plan_down(ms, cur, None, stop_at=version)


def _plan_down(
    ms: files.MigrationSet, cur: int, steps: int | None, stop_at: int = NO_VERSION
) -> list[tuple[files.Migration, str, int]]:
    plan: list[tuple[files.Migration, str, int]] = []
    while cur != NO_VERSION and cur > stop_at and (steps is None or len(plan) < steps):
        m = ms.get(cur)
        if m is None:
            raise MigratorError(
                f"the database is at version {cur}, which has no migration file in {ms.directory}; "
                "restore that file to revert it"
            )
        prev = ms.previous(cur)
        plan.append((m, "down", prev))
        cur = prev
    return plan


def _end_open_transaction(conn: psycopg.Connection) -> None:
    """Roll back a transaction a failed file left open (autocommit sessions)."""
    import psycopg

    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")


def _failure(
    exc: Exception,
    mf: files.MigrationFile,
    migration: files.Migration,
    direction: str,
    stmt: tuple[int, int, str] | None,
    dirty: bool,
    state_version: int,
    before: int,
) -> MigrationFailedError:
    """Build the one-line error: file:line:col, PostgreSQL's message, the statement, the state."""
    from migrator.lint.transactional import line_col

    absolute_pos = None
    if isinstance(exc, _Positioned):
        absolute_pos, exc = exc.position, exc.error
    pg_message = redact(getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)).strip()
    detail = getattr(getattr(exc, "diag", None), "message_detail", None)
    line = col = None
    statement = None
    if stmt is not None:
        start, _end, text = stmt
        statement = " ".join(text.split())
        pos = getattr(getattr(exc, "diag", None), "statement_position", None)
        if absolute_pos is not None:
            offset = absolute_pos
        else:
            offset = start + (int(pos) - 1 if pos else len(text) - len(text.lstrip()))
        line, col = line_col(mf.sql, offset)
    where = f"{mf.path}:{line}:{col}" if line else str(mf.path)
    short_stmt = (statement[:160] + "...") if statement and len(statement) > 160 else statement
    if dirty:
        state = (
            f"database is now DIRTY at version {state_version}: statements before the failing one stay applied; "
            f"finish the change by hand then `migrator force {state_version}`, or undo it by hand then "
            f"`migrator force {before}`"
        )
    else:
        state = f"rolled back; the database stays at version {state_version}, clean"
    msg = f"migration {migration.version} ({direction}) failed at {where}: {pg_message}"
    if detail:
        msg += f" ({redact(detail)})"
    if short_stmt:
        msg += f" in statement: {short_stmt}"
    msg += f"; {state}"
    return MigrationFailedError(
        redact(msg),
        version=migration.version,
        name=migration.name,
        direction=direction,
        file=str(mf.path),
        line=line,
        column=col,
        statement=redact(statement) if statement else None,
        pg_message=pg_message,
        dirty=dirty,
        state_version=state_version,
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
