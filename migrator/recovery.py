"""Recover a database that a migration left dirty: revert, resume, mark applied, or leave it dirty.

A non-transactional migration (``CREATE INDEX CONCURRENTLY``, its own ``BEGIN``/``COMMIT``) that
fails half-way leaves golang-migrate's ``(V, dirty)`` and the statements before the failing one
applied. golang-migrate's answer is ``force``: the engineer must work out by hand what ran. Here
the audit trail knows it (statements done, the failing one, a hash of each statement), so the four
ways out are decisions, each checked before it runs and each audited:

- ``revert``: run V's down file to undo the partial change, record the version before V, clean.
  Refused when the down file is not safe on a partial state (a ``DROP`` without ``IF EXISTS``,
  the validator's rule MIG011) or when the failed run was itself a rollback.
- ``resume``: run only the statements that did not run, from the (fixed) file on disk, then record
  V clean - as Atlas resumes a partly applied file. Refused when a statement that already ran
  changed in the file (its hash differs), or when no audit row says what ran.
- ``mark_applied``: the engineer finished the change by hand; record V clean.
- ``leave_dirty``: change nothing (audited, so the trail says who looked and decided to wait).

Every action, refused ones included, writes one history row (direction ``recover``, ``action``,
the engineer in ``approved_by``, the comment). Plain Python: the CLI and the Prefect flows share it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from psycopg import sql

from migrator import files
from migrator.config import Settings, parse_interval_ms
from migrator.errors import MigratorError
from migrator.redact import redact
from migrator.state import (
    NO_VERSION,
    Attempt,
    HistoryEntry,
    StateTable,
    complete_history,
    last_attempt,
    read_state,
    statement_hash,
    update_progress,
    write_history,
    write_state,
)

if TYPE_CHECKING:
    import psycopg

    from migrator.engine import Migrator

Action = Literal["revert", "resume", "mark_applied", "leave_dirty"]
ACTIONS: tuple[str, ...] = get_args(Action)
Outcome = Literal["completed", "refused", "failed", "left_dirty"]
StatementStateName = Literal["done", "failed", "not run", "unknown"]
Progress = Callable[[str], None]


class RecoveryError(MigratorError):
    """A recovery action was refused or failed; ``result`` says what the database looks like now."""

    def __init__(self, result: RecoveryResult) -> None:
        super().__init__(result.message)
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_error, (self.result.to_dict(),))


def _rebuild_error(d: dict[str, Any]) -> RecoveryError:
    return RecoveryError(RecoveryResult(**d))


def version_text(version: int | None) -> str:
    """A version as people read it: golang-migrate's -1 is "none"."""
    return "none" if version is None or version == NO_VERSION else str(version)


def yes_no(flag: bool | None) -> str:
    return "yes" if flag else "no"


# ------------------------------------------------------------------------------------------ the incident


@dataclass
class StatementRow:
    """One statement of the failed file and what happened to it."""

    index: int
    line: int
    text: str
    state: StatementStateName
    error: str | None = None


@dataclass
class Option:
    """One recovery action: what it would do now, and whether it is allowed (else why not)."""

    action: str
    available: bool
    does: str
    why_not: str | None = None


@dataclass
class Incident:
    """What a dirty database looks like, read from its state table, audit trail and the files."""

    environment: str | None
    database: str
    version: int
    dirty: bool
    previous_version: int = NO_VERSION
    file_version: int | None = None  # the migration whose file failed (a rollback's is above ``version``)
    migration: str | None = None  # "10_add_contact_email"
    direction: str | None = None
    file: str | None = None
    line: int | None = None
    statement: str | None = None
    pg_error: str | None = None
    run_id: str | None = None
    attempt_id: int | None = None
    failed_at: str | None = None
    file_changed: bool = False
    statements: list[StatementRow] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Environment + version + the failure: the same incident found again has the same one."""
        failure = f"attempt {self.attempt_id}" if self.attempt_id is not None else "no audit row"
        return f"{self.environment or '-'}|{self.database}|{self.version}|{failure}"

    @property
    def where(self) -> str | None:
        return f"{self.file}:{self.line}" if self.file and self.line else self.file

    def option(self, action: str) -> Option:
        for o in self.options:
            if o.action == action:
                return o
        raise MigratorError(f"unknown recovery action {action!r}; use one of {', '.join(ACTIONS)}")

    def headline(self) -> str:
        """One line: the real state and the failure, for state messages and alerts."""
        env = f"{self.environment} " if self.environment else ""
        if not self.dirty:
            return f"{env}database {self.database} is at version {version_text(self.version)}, clean (dirty: no)"
        text = f"{env}database {self.database} is DIRTY at version {version_text(self.version)} (dirty: yes)"
        if self.attempt_id is None:
            text += (f": no audit row says what ran of migration {self.migration or self.version} (left by another "
                     "tool, e.g. the golang-migrate CLI, or an older migrator)")
        elif self.migration:
            text += f": migration {self.migration} ({self.direction}) failed"
            if self.where:
                text += f" at {self.where}"
            if self.pg_error:
                text += f": {self.pg_error}"
            if self.statement:
                short = self.statement if len(self.statement) <= 160 else self.statement[:157] + "..."
                text += f" in statement: {short}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fingerprint"] = self.fingerprint
        d["headline"] = self.headline()
        return d


def inspect(settings: Settings, *, migrator: Migrator | None = None) -> Incident:
    """Read the incident (no lock taken, nothing written)."""
    from migrator.engine import Migrator

    m = migrator or Migrator(settings)
    migrations = m.load_files()
    with m.session(lock=False) as s:
        return _incident(s.conn, s.st, migrations, settings.environment)


def _incident(conn: psycopg.Connection, st: StateTable, ms: files.MigrationSet, environment: str | None) -> Incident:
    version, dirty = read_state(conn, st)
    inc = Incident(environment=environment, database=st.database, version=version, dirty=dirty)
    if not dirty:
        return inc
    attempt = _failed_attempt(conn, st, ms, version)
    done, hashes, error, failed_index, row = _progress(conn, st, attempt)
    direction = attempt.direction if attempt else "up"
    file_version = attempt.version if attempt else version
    mig = ms.get(file_version)
    inc.direction, inc.file_version = direction, file_version
    inc.previous_version = _previous(ms, file_version, attempt)
    if mig is not None:
        inc.migration = mig.label
    elif attempt is not None:
        inc.migration = f"{attempt.version}_{attempt.name or '?'}"
    mf = None if mig is None else (mig.up if direction == "up" else mig.down)
    if attempt is not None and row is not None:
        inc.attempt_id = attempt.id
        inc.run_id = row.run_id
        inc.failed_at = f"{row.started_at:%Y-%m-%d %H:%M:%S %Z}"
        inc.pg_error = redact(error) if error else None
    if mf is not None:
        inc.file = _shown(mf.path)
        inc.file_changed = attempt is not None and attempt.checksum not in (None, mf.sha256)
        inc.statements = _statement_rows(mf.sql, done if attempt else None, failed_index, inc.pg_error)
        failed = next((r for r in inc.statements if r.state == "failed"), None)
        if failed is not None:
            inc.line, inc.statement = failed.line, failed.text
    inc.options = _options(inc, ms, mig, attempt, done, hashes)
    return inc


def _failed_attempt(conn: psycopg.Connection, st: StateTable, ms: files.MigrationSet, version: int) -> Attempt | None:
    """The failed up/down row that left (version, dirty), or None when our trail does not explain it."""
    att = last_attempt(conn, st)
    if att is None or att.success:
        return None
    if att.direction == "up" and att.version == version:
        return att
    if att.direction == "down" and _previous(ms, att.version, att) == version:
        return att
    return None


def _previous(ms: files.MigrationSet, version: int, attempt: Attempt | None) -> int:
    if attempt is not None and attempt.direction == "up" and attempt.from_version is not None:
        return int(attempt.from_version)
    if ms.get(version) is not None:
        return int(ms.previous(version))
    earlier = [m.version for m in ms if m.version < version]
    return max(earlier) if earlier else NO_VERSION


@dataclass
class _Row:
    run_id: str | None
    started_at: datetime


def _progress(
    conn: psycopg.Connection, st: StateTable, attempt: Attempt | None
) -> tuple[int, list[str] | None, str | None, int | None, _Row | None]:
    """(statements done, their hashes, last error, failing statement, row) - a later failed
    ``resume`` of the same incident moves the progress on, so a second resume skips what it ran."""
    if attempt is None:
        return 0, None, None, None, None
    done = attempt.statements_done or 0
    hashes, error, failed = attempt.statement_hashes, attempt.error, attempt.failed_statement
    row = _Row(attempt.run_id, attempt.started_at)
    later = conn.execute(
        sql.SQL(
            """SELECT statements_done, statement_hashes, error, failed_statement, run_id, started_at FROM {}
               WHERE direction = 'recover' AND action = 'resume' AND version = %s AND id > %s
                 AND statements_done IS NOT NULL
               ORDER BY id DESC LIMIT 1"""
        ).format(st.history),
        (attempt.version, attempt.id),
    ).fetchone()
    if later is not None:
        done, hashes, error, failed = int(later[0]), later[1], later[2], later[3]
        row = _Row(later[4], later[5])
    return done, hashes, error, failed, row


def _statement_rows(text: str, done: int | None, failed_index: int | None, error: str | None) -> list[StatementRow]:
    from migrator.sql import split_statements

    rows = []
    for i, s in enumerate(split_statements(text), start=1):
        one_line = " ".join(s.text.split())
        if done is None:  # no audit row: nobody knows what ran
            state: StatementStateName = "unknown"
        elif i <= done:
            state = "done"
        elif i == (failed_index or done + 1):
            state = "failed"
        else:
            state = "not run"
        rows.append(StatementRow(i, s.line, one_line, state, error if state == "failed" else None))
    return rows


def _options(
    inc: Incident,
    ms: files.MigrationSet,
    mig: files.Migration | None,
    attempt: Attempt | None,
    done: int,
    hashes: list[str] | None,
) -> list[Option]:
    v, prev = version_text(inc.version), version_text(inc.previous_version)
    return [
        _revert_option(inc, mig, attempt, prev),
        _resume_option(inc, mig, attempt, done, hashes, v),
        Option(
            "mark_applied", True,
            f"change no schema; record version {v}, clean (you finished the "
            f"{'rollback' if inc.direction == 'down' else 'migration'} by hand)",
        ),
        Option("leave_dirty", True, f"change nothing: the database stays dirty at version {v}; decide later"),
    ]


def _revert_option(inc: Incident, mig: files.Migration | None, attempt: Attempt | None, prev: str) -> Option:
    if inc.direction == "down":
        return Option("revert", False, "undo the partial rollback", why_not=(
            "the failed run was a rollback; undoing it would re-run the up file, which is not checked for a "
            "partial state: choose resume to finish the rollback, or finish it by hand and choose mark_applied"
        ))
    if mig is None or mig.down is None:
        return Option("revert", False, "run the down file", why_not=(
            f"migration {inc.version} has no down file on the worker; undo the change by hand, then use the "
            "force flow to record the previous version"
        ))
    does = (f"run {mig.down.filename} ({len(_split(mig.down.sql))} statement(s)) to undo the partial change, "
            f"then record version {prev}, clean")
    problem = down_file_problem(mig)
    return Option("revert", problem is None, does, why_not=problem)


def down_file_problem(mig: files.Migration) -> str | None:
    """Why ``mig``'s down file is not safe to run on a partially applied up (None when it is).

    The validator's rules decide: MIG011 (a DROP without IF EXISTS fails on an object the up never
    created) and a down that does not parse. Allow comments do not count here: a justified DROP
    without IF EXISTS is still unsafe when the up stopped half-way.
    """
    from migrator.lint import rules
    from migrator.lint.parse import parse_file

    assert mig.down is not None
    down = parse_file(mig.down.filename, mig.down.sql)
    if down.error is not None:
        return f"{mig.down.filename} does not parse: {down.error.message}"
    up = parse_file(mig.up.filename, mig.up.sql) if mig.up is not None else None
    unsafe = [f for f in rules.lint_down(down, up) if f.rule == "MIG011"]
    if not unsafe:
        return None
    where = "; ".join(f"line {f.line}: {f.message}" for f in unsafe[:3])
    return (f"{mig.down.filename} is not safe on a partial state ({where}); add IF EXISTS to every DROP, or "
            "undo by hand and choose mark_applied")


def _resume_option(
    inc: Incident, mig: files.Migration | None, attempt: Attempt | None, done: int, hashes: list[str] | None, v: str
) -> Option:
    mf = None if mig is None else (mig.up if inc.direction == "up" else mig.down)
    if attempt is None or hashes is None:
        return Option("resume", False, "run the statements that did not run", why_not=(
            "no audit row says which statements ran (the database was left dirty by another tool or an older "
            "migrator): finish by hand and choose mark_applied, or revert"
        ))
    if mf is None:
        return Option("resume", False, "run the statements that did not run", why_not=(
            f"the {inc.direction} file of migration {attempt.version} is not on the worker"
        ))
    now = [statement_hash(s.text) for s in _split(mf.sql)]
    rest = f"statement {done + 1}" if done + 1 == len(now) else f"statements {done + 1}..{len(now)}"
    does = (f"skip the {done} statement(s) already run and run {rest} of {mf.filename} as it is on the "
            f"worker when you submit (fix it first; the statements already run must be unchanged), "
            f"then record version {v}, clean")
    if len(now) <= done and len(now) < len(hashes):
        return Option("resume", False, does, why_not=(
            f"{mf.filename} now has {len(now)} statement(s) but {done} already ran: the file was cut; restore it"
        ))
    for i, (old, new) in enumerate(zip(hashes[:done], now[:done], strict=False), start=1):
        if old != new:
            return Option("resume", False, does, why_not=(
                f"statement {i} of {mf.filename} already ran but has changed in the file since: resume would "
                "skip the new text. Put the file back as it ran and fix only statements after "
                f"{done}, or revert"
            ))
    if done > len(hashes):
        return Option("resume", False, does, why_not="the audit row is inconsistent (more statements done than hashed)")
    if done == len(now):
        does = f"run nothing (all {done} statement(s) of {mf.filename} ran), then record version {v}, clean"
    return Option("resume", True, does)


def _shown(path: Path) -> str:
    """A file as people look for it: relative to the working directory (the project) when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _split(text: str) -> list[Any]:
    from migrator.sql import split_statements

    return split_statements(text)


# -------------------------------------------------------------------------------------------- recovering


@dataclass
class RecoveryResult:
    """What a recovery action did and where it left the database."""

    action: str
    engineer: str
    outcome: str  # completed | refused | failed | left_dirty
    database: str
    environment: str | None
    version_before: int
    dirty_before: bool
    version_after: int
    dirty_after: bool
    message: str
    migration: str | None = None
    statements_run: int = 0
    error: str | None = None
    file: str | None = None
    line: int | None = None
    statement: str | None = None
    audit_id: int | None = None
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("completed", "left_dirty")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(
    settings: Settings,
    action: str,
    engineer: str,
    comment: str = "",
    run_id: str | None = None,
    *,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Run one recovery ``action`` under the migration lock; refused or failed actions are returned
    (outcome ``refused``/``failed``) with the reason, never half-recorded. Always audited."""
    from migrator.engine import Migrator

    if action not in ACTIONS:
        raise MigratorError(f"unknown recovery action {action!r}; use one of {', '.join(ACTIONS)}")
    engineer = (engineer or "").strip()
    if not engineer:
        raise MigratorError("a recovery needs the engineer's name (--engineer / the form's engineer field)")
    say = progress or (lambda _msg: None)
    m = Migrator(settings, run_id=run_id)
    migrations = m.load_files()
    with m.session(lock=True) as s:
        inc = _incident(s.conn, s.st, migrations, settings.environment)
        ctx = _Ctx(s.conn, s.st, settings, inc, action, engineer, comment, run_id or settings.run_id, say)
        if not inc.dirty:
            return ctx.refuse(f"the database is clean at version {version_text(inc.version)}: nothing to recover")
        option = inc.option(action)
        if not option.available:
            return ctx.refuse(f"{action} refused: {option.why_not}")
        mig = migrations.get(inc.file_version if inc.file_version is not None else inc.version)
        if action == "leave_dirty":
            return ctx.leave_dirty()
        if action == "mark_applied":
            return ctx.mark_applied(mig)
        assert mig is not None
        if action == "revert":
            return ctx.revert(mig)
        return ctx.resume(mig)


@dataclass
class _Ctx:
    conn: psycopg.Connection
    st: StateTable
    settings: Settings
    inc: Incident
    action: str
    engineer: str
    comment: str
    run_id: str | None
    say: Progress
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)

    # -- audit -------------------------------------------------------------------------------

    def entry(self, success: bool, to_version: int, *, error: str | None = None, mf: files.MigrationFile | None = None,
              total: int | None = None, done: int | None = None, failed: int | None = None,
              hashes: list[str] | None = None) -> HistoryEntry:
        name = self.inc.migration.split("_", 1)[1] if self.inc.migration and "_" in self.inc.migration else None
        return HistoryEntry(
            version=self.inc.version, name=name, direction="recover", checksum=mf.sha256 if mf else None,
            success=success, from_version=self.inc.version, to_version=to_version, started_at=self.started,
            finished_at=datetime.now(UTC), duration_ms=int((time.perf_counter() - self.t0) * 1000),
            run_id=self.run_id, environment=self.settings.environment, error=redact(error) if error else None,
            approved_by=self.engineer, statements_total=total, statements_done=done, failed_statement=failed,
            statement_hashes=hashes, action=self.action, comment=self.comment or None,
        )

    def result(self, outcome: str, message: str, version_after: int, dirty_after: bool, **kw: Any) -> RecoveryResult:
        return RecoveryResult(
            action=self.action, engineer=self.engineer, outcome=outcome, database=self.inc.database,
            environment=self.settings.environment, version_before=self.inc.version, dirty_before=self.inc.dirty,
            version_after=version_after, dirty_after=dirty_after, message=redact(message),
            migration=self.inc.migration, comment=self.comment, **kw,
        )

    def refuse(self, reason: str) -> RecoveryResult:
        audit_id = write_history(self.conn, self.st, self.entry(False, self.inc.version, error=f"refused: {reason}"))
        self.say(reason)
        return self.result("refused", f"{reason}; {self._state_now(self.inc.version, self.inc.dirty)}",
                           self.inc.version, self.inc.dirty, error=reason, audit_id=audit_id)

    def _state_now(self, version: int, dirty: bool) -> str:
        return f"database {self.inc.database} is at version {version_text(version)}, dirty: {yes_no(dirty)}"

    # -- actions -----------------------------------------------------------------------------

    def leave_dirty(self) -> RecoveryResult:
        audit_id = write_history(self.conn, self.st, self.entry(True, self.inc.version))
        msg = f"left dirty by {self.engineer}: nothing changed; {self._state_now(self.inc.version, True)}"
        return self.result("left_dirty", msg, self.inc.version, True, audit_id=audit_id)

    def mark_applied(self, mig: files.Migration | None) -> RecoveryResult:
        mf = None if mig is None else (mig.up if self.inc.direction == "up" else mig.down)
        with self.conn.transaction():
            write_state(self.conn, self.st, self.inc.version, False)
            audit_id = write_history(self.conn, self.st, self.entry(True, self.inc.version, mf=mf))
        msg = (f"marked applied by {self.engineer} (no SQL run); {self._state_now(self.inc.version, False)}")
        return self.result("completed", msg, self.inc.version, False, audit_id=audit_id)

    def revert(self, mig: files.Migration) -> RecoveryResult:
        from migrator.sql import non_transactional_reason

        assert mig.down is not None
        target = self.inc.previous_version
        stmts = _split(mig.down.sql)
        if non_transactional_reason(mig.down.sql) is None:
            return self._revert_in_transaction(mig.down, stmts, target)
        return self._run_statements(mig.down, stmts, 0, target)

    def _revert_in_transaction(self, mf: files.MigrationFile, stmts: list[Any], target: int) -> RecoveryResult:
        import psycopg

        index = 0
        try:
            with self.conn.transaction():
                self._set_timeouts(local=True)
                for index, st in enumerate(stmts, start=1):  # noqa: B007 - index names the failing one
                    self.conn.execute(st.text.encode())
                write_state(self.conn, self.st, target, False)
                audit_id = write_history(self.conn, self.st, self.entry(
                    True, target, mf=mf, total=len(stmts), done=len(stmts),
                    hashes=[statement_hash(s.text) for s in stmts]))
        except psycopg.Error as exc:
            return self._failed(mf, stmts, index, exc, skip=0, rolled_back=True)
        self.say(f"reverted: {mf.filename} ({len(stmts)} statement(s)) in one transaction")
        msg = f"reverted by {self.engineer}: ran {mf.filename}; {self._state_now(target, False)}"
        return self.result("completed", msg, target, False, statements_run=len(stmts), audit_id=audit_id)

    def resume(self, mig: files.Migration) -> RecoveryResult:
        mf = mig.up if self.inc.direction == "up" else mig.down
        assert mf is not None
        done = sum(1 for r in self.inc.statements if r.state == "done")
        return self._run_statements(mf, _split(mf.sql), done, self.inc.version)

    def _run_statements(self, mf: files.MigrationFile, stmts: list[Any], skip: int, target: int) -> RecoveryResult:
        """Run ``stmts[skip:]`` one by one outside a transaction (the file cannot run in one),
        recording progress on a started audit row so that a kill leaves the trail right."""
        import psycopg

        hashes = [statement_hash(s.text) for s in stmts]
        row_id = write_history(self.conn, self.st, self.entry(
            False, target, error="started: not finished (the process was killed or the server crashed)", mf=mf,
            total=len(stmts), done=skip, hashes=hashes))
        index = skip
        try:
            self._set_timeouts(local=False)
            for index in range(skip + 1, len(stmts) + 1):
                self.conn.execute(stmts[index - 1].text.encode())
                update_progress(self.conn, self.st, row_id, index)
            self._reset_timeouts()
            with self.conn.transaction():
                write_state(self.conn, self.st, target, False)
                complete_history(self.conn, self.st, row_id, self.entry(
                    True, target, mf=mf, total=len(stmts), done=len(stmts), hashes=hashes))
        except psycopg.Error as exc:
            _rollback_open(self.conn)
            self._reset_timeouts()
            return self._failed(mf, stmts, index, exc, skip=skip, rolled_back=False, row_id=row_id)
        ran = len(stmts) - skip
        self.say(f"{self.action}: ran statement(s) {skip + 1}..{len(stmts)} of {mf.filename}")
        verb = "resumed" if self.action == "resume" else "reverted"
        msg = (f"{verb} by {self.engineer}: ran {ran} statement(s) of {mf.filename}"
               f"{f' (skipped the {skip} already run)' if skip else ''}; {self._state_now(target, False)}")
        return self.result("completed", msg, target, False, statements_run=ran, audit_id=row_id)

    def _failed(self, mf: files.MigrationFile, stmts: list[Any], index: int, exc: Exception, *, skip: int,
                rolled_back: bool, row_id: int | None = None) -> RecoveryResult:
        import psycopg

        pg = redact(getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)).strip()
        st = stmts[index - 1] if 0 < index <= len(stmts) else None
        done = 0 if rolled_back else max(index - 1, 0)
        entry = self.entry(False, self.inc.version, error=pg, mf=mf, total=len(stmts), done=done,
                           failed=index or None, hashes=[statement_hash(s.text) for s in stmts])
        with contextlib.suppress(psycopg.Error):
            if row_id is None:
                row_id = write_history(self.conn, self.st, entry)
            else:
                complete_history(self.conn, self.st, row_id, entry)
        where = f"{mf.path}:{st.line}" if st is not None else str(mf.path)
        statement = " ".join(st.text.split()) if st is not None else None
        undone = "rolled back, nothing changed" if rolled_back else f"statements up to {done} stay applied"
        msg = (f"{self.action} by {self.engineer} failed at {where}: {pg} ({undone}); "
               f"{self._state_now(self.inc.version, True)}")
        return self.result("failed", msg, self.inc.version, True, error=pg, file=str(mf.path),
                           line=st.line if st else None, statement=statement, audit_id=row_id,
                           statements_run=0 if rolled_back else max(index - 1 - skip, 0))

    def _set_timeouts(self, *, local: bool) -> None:
        lock_ms = parse_interval_ms(self.settings.lock_timeout, "lock_timeout")
        stmt_ms = parse_interval_ms(self.settings.statement_timeout, "statement_timeout")
        scope = "SET LOCAL" if local else "SET"
        self.conn.execute(f"{scope} lock_timeout = '{lock_ms}ms'; {scope} statement_timeout = '{stmt_ms}ms'".encode())

    def _reset_timeouts(self) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error):
            self.conn.execute(b"RESET lock_timeout; RESET statement_timeout")


def _rollback_open(conn: psycopg.Connection) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")

