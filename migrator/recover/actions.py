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

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pglast import ast, parse_sql
from psycopg import sql

from migrator import files
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import MigrationFileError, MigratorError
from migrator.execute.cancel import cancel_scope
from migrator.execute.executor import Audit, Executor, Failure, Job, error_location
from migrator.execute.state import (
    NO_VERSION,
    Attempt,
    HistoryEntry,
    LockWaitStopped,
    StateTable,
    last_attempt,
    progress_of,
    read_state,
    statement_matches,
    write_history,
    write_state,
)
from migrator.lint import rules
from migrator.lint.parse import parse_file
from migrator.redact import redact
from migrator.sql import split_statements

if TYPE_CHECKING:
    import psycopg


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
        for name, code in (("SIGTERM", 143), ("SIGINT", 130)):  # stopped by a signal: exit as `up` does
            if (result.error or "").startswith(f"cancelled by {name}"):
                self.exit_code = code

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
    # a revert that ran part of the down file before it failed or was killed: what it undid
    revert_file: str | None = None
    reverted: int | None = None  # statements of the down file that the revert completed
    revert_error: str | None = None
    revert_statements: list[StatementRow] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)

    @property
    def partly_reverted(self) -> bool:
        return self.reverted is not None

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
        if self.partly_reverted:
            total = len(self.revert_statements)
            text += (f"; then a revert ran {self.reverted} of {total} statement(s) of {self.revert_file} and stopped"
                     + (f": {self.revert_error}" if self.revert_error else ""))
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fingerprint"] = self.fingerprint
        d["headline"] = self.headline()
        return d


def inspect(settings: Settings, *, migrator: Migrator | None = None) -> Incident:
    """Read the incident (no lock taken, nothing written)."""
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
    prog = _progress(conn, st, attempt)
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
    if attempt is not None and prog.row is not None:
        inc.attempt_id = attempt.id
        inc.run_id = prog.row.run_id
        inc.failed_at = f"{prog.row.started_at:%Y-%m-%d %H:%M:%S %Z}"
        inc.pg_error = redact(prog.error) if prog.error else None
    if mf is not None:
        inc.file = _shown(mf.path)
        inc.file_changed = attempt is not None and attempt.checksum not in (None, mf.sha256)
        inc.statements = _statement_rows(mf.sql, prog.done if attempt else None, prog.failed, inc.pg_error)
        failed = next((r for r in inc.statements if r.state == "failed"), None)
        if failed is not None:
            inc.line, inc.statement = failed.line, failed.text
    if prog.reverted is not None and mig is not None and mig.down is not None:
        inc.revert_file = _shown(mig.down.path)
        inc.reverted = prog.reverted
        inc.revert_error = redact(prog.revert_error) if prog.revert_error else None
        inc.revert_statements = _statement_rows(mig.down.sql, prog.reverted, None, inc.revert_error)
    inc.options = _options(inc, mig, attempt, prog)
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


@dataclass
class _Progress:
    """``state.AttemptProgress`` as the incident reads it (what ran, in both directions)."""

    done: int = 0
    hashes: list[str] | None = None
    error: str | None = None
    failed: int | None = None
    row: _Row | None = None
    reverted: int | None = None
    revert_hashes: list[str] | None = None
    revert_error: str | None = None


def _progress(conn: psycopg.Connection, st: StateTable, attempt: Attempt | None) -> _Progress:
    if attempt is None:
        return _Progress()
    p = progress_of(conn, st, attempt)
    r = p.row
    out = _Progress(p.done, r.statement_hashes, r.error, r.failed_statement, _Row(r.run_id, r.started_at))
    if p.revert is not None:
        out.reverted, out.revert_hashes, out.revert_error = p.reverted, p.revert.statement_hashes, p.revert.error
    return out


def _statement_rows(text: str, done: int | None, failed_index: int | None, error: str | None) -> list[StatementRow]:
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


def _options(inc: Incident, mig: files.Migration | None, attempt: Attempt | None, prog: _Progress) -> list[Option]:
    v, prev = version_text(inc.version), version_text(inc.previous_version)
    return [
        _revert_option(inc, mig, attempt, prog, prev),
        _resume_option(inc, mig, attempt, prog, v),
        Option(
            "mark_applied", True,
            f"change no schema; record version {v}, clean (you finished the "
            f"{'rollback' if inc.direction == 'down' else 'migration'} by hand"
            + (", and put back what the partial revert undid" if inc.partly_reverted else "") + ")",
        ),
        Option("leave_dirty", True, f"change nothing: the database stays dirty at version {v}; decide later"),
    ]


def _revert_option(inc: Incident, mig: files.Migration | None, attempt: Attempt | None, prog: _Progress,
                   prev: str) -> Option:
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
    down = _split(mig.down.sql)
    skip = prog.reverted or 0
    if skip:
        does = (f"continue {mig.down.filename}: skip the {skip} statement(s) the earlier revert ran, run "
                f"{_span(skip, len(down))}, then record version {prev}, clean")
    else:
        does = (f"run {mig.down.filename} ({len(down)} statement(s)) to undo the partial change, then record "
                f"version {prev}, clean")
    problem = _changed_since(mig.down.filename, prog.revert_hashes, down, skip, "revert") if skip else None
    if problem is None and skip >= len(down) > 0:
        problem = (f"{mig.down.filename} now has {len(down)} statement(s) but {skip} already ran: the file was cut; "
                   "restore it")
    if problem is None:
        problem = down_file_problem(mig)
    up_total = len(prog.hashes) if prog.hashes else (len(_split(mig.up.sql)) if mig.up else 0)
    if problem is None and attempt is not None and prog.done < up_total:
        problem = partial_state_problem(mig.down, down[skip:], skip, prog.done, up_total)
    return Option("revert", problem is None, does, why_not=problem)


def down_file_problem(mig: files.Migration) -> str | None:
    """Why ``mig``'s down file is not safe to run on a partially applied up (None when it is).

    The validator's rules decide: MIG011 (a DROP without IF EXISTS fails on an object the up never
    created) and a down that does not parse. Allow comments do not count here: a justified DROP
    without IF EXISTS is still unsafe when the up stopped half-way.
    """
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



_SAFE_DROP_COMMANDS = ("AT_DropColumn", "AT_DropConstraint")


def _undoes_only_what_exists(text: str) -> bool:
    """A statement that is a no-op where its object was never made: ``DROP ... IF EXISTS``, or an
    ``ALTER TABLE`` that only drops columns/constraints ``IF EXISTS`` (on a table the partial up did
    not make, it fails: the revert stops there, changing nothing)."""
    try:
        stmts = parse_sql(text)
    except Exception:
        return False
    for raw in stmts:
        node = raw.stmt
        if isinstance(node, ast.DropStmt):
            if not node.missing_ok:
                return False
        elif isinstance(node, ast.AlterTableStmt):
            cmds = [c for c in (node.cmds or ()) if isinstance(c, ast.AlterTableCmd)]
            if not cmds or not all(
                    c.subtype is not None and c.subtype.name in _SAFE_DROP_COMMANDS and c.missing_ok for c in cmds):
                return False
        else:
            return False
    return True


def partial_state_problem(down: files.MigrationFile, statements: list[Any], skip: int, up_done: int,
                          up_total: int) -> str | None:
    """Why running ``statements`` of ``down`` would undo something the partial up never did (None when
    every one only drops what exists): a data change (``UPDATE h SET bal = bal / 100`` after the
    ``* 100`` never ran) or a DDL statement that assumes the whole up ran."""
    for i, stmt in enumerate(statements, start=skip + 1):
        if _undoes_only_what_exists(stmt.text):
            continue
        one = " ".join(stmt.text.split())
        short = one if len(one) <= 100 else one[:97] + "..."
        return (f"the up ran only {up_done} of its {up_total} statement(s), and statement {i} of {down.filename} "
                f"(line {stmt.line}: {short}) changes data or schema that the partial up may never have made; "
                "choose resume to finish the up (fix its file first), or finish it by hand and choose mark_applied")
    return None


def _span(done: int, total: int) -> str:
    return f"statement {done + 1}" if done + 1 == total else f"statements {done + 1}..{total}"


def _changed_since(filename: str, recorded: list[str] | None, now: list[Any], done: int, action: str) -> str | None:
    """Why the ``done`` statements that already ran are no longer the file's first ones (None if they are)."""
    if recorded is None:
        return None
    if done > len(recorded):
        return "the audit row is inconsistent (more statements done than hashed)"
    for i, (old, new) in enumerate(zip(recorded[:done], now[:done], strict=False), start=1):
        if not statement_matches(old, new.text):
            return (f"statement {i} of {filename} already ran but has changed in the file since: {action} would "
                    f"skip the new text. Put the file back as it ran and fix only statements after {done}"
                    + (", or revert" if action == "resume" else ""))
    return None


def _resume_option(inc: Incident, mig: files.Migration | None, attempt: Attempt | None, prog: _Progress,
                   v: str) -> Option:
    mf = None if mig is None else (mig.up if inc.direction == "up" else mig.down)
    hashes, done = prog.hashes, prog.done
    if attempt is None or hashes is None:
        return Option("resume", False, "run the statements that did not run", why_not=(
            "no audit row says which statements ran (the database was left dirty by another tool or an older "
            "migrator): finish by hand and choose mark_applied, or revert"
        ))
    if mf is None:
        return Option("resume", False, "run the statements that did not run", why_not=(
            f"the {inc.direction} file of migration {attempt.version} is not on the worker"
        ))
    now = _split(mf.sql)
    does = (f"skip the {done} statement(s) already run and run {_span(done, len(now))} of {mf.filename} as it is "
            f"on the worker when you submit (fix it first; the statements already run must be unchanged), "
            f"then record version {v}, clean")
    if inc.partly_reverted:
        return Option("resume", False, does, why_not=(
            f"a revert already ran {inc.reverted} statement(s) of {inc.revert_file} after the failure, so the "
            f"statements the up ran are partly undone: choose revert to finish undoing (it continues at statement "
            f"{(inc.reverted or 0) + 1} of the down file), or repair by hand and choose mark_applied"
        ))
    if len(now) <= done and len(now) < len(hashes):
        return Option("resume", False, does, why_not=(
            f"{mf.filename} now has {len(now)} statement(s) but {done} already ran: the file was cut; restore it"
        ))
    problem = _changed_since(mf.filename, hashes, now, done, "resume")
    if problem is not None:
        return Option("resume", False, does, why_not=problem)
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
    (outcome ``refused``/``failed``) with the reason, never half-recorded. Always audited.

    SQL runs through the executor, in a cancel scope: SIGTERM/SIGINT (a Prefect Cancel) cancel the
    running statement on the server, and the audit row and the state say where it stopped."""
    if action not in ACTIONS:
        raise MigratorError(f"unknown recovery action {action!r}; use one of {', '.join(ACTIONS)}")
    engineer = (engineer or "").strip()
    if not engineer:
        raise MigratorError("a recovery needs the engineer's name (--engineer / the form's engineer field)")
    say = progress or (lambda _msg: None)
    m = Migrator(settings, run_id=run_id)
    migrations = m.load_files()
    with cancel_scope() as scope:
        try:
            with m.session(lock=True, stop=lambda: scope.requested) as s:
                scope.add(s.conn)
                try:
                    inc = _incident(s.conn, s.st, migrations, settings.environment)
                    ex = Executor(s.conn, s.st, m.timeouts(), scope=scope, progress=say)
                    ctx = _Ctx(s.conn, s.st, settings, inc, action, engineer, comment, run_id or settings.run_id,
                               say, ex)
                    return ctx.run(migrations)
                finally:
                    scope.remove(s.conn)
        except LockWaitStopped:
            raise MigratorError(
                f"recover {action} cancelled by {scope.signal_name} while waiting for the migration lock; "
                "nothing was changed"
            ) from None


class _Failed(Exception):
    """The executor's failure, as the recovery result the caller returns."""

    def __init__(self, result: RecoveryResult) -> None:
        super().__init__(result.message)
        self.result = result


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
    executor: Executor
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)

    def run(self, migrations: files.MigrationSet) -> RecoveryResult:
        inc, action = self.inc, self.action
        if not inc.dirty:
            return self.refuse(f"the database is clean at version {version_text(inc.version)}: nothing to recover")
        option = inc.option(action)
        if not option.available:
            return self.refuse(f"{action} refused: {option.why_not}")
        mig = migrations.get(inc.file_version if inc.file_version is not None else inc.version)
        if action == "leave_dirty":
            return self.leave_dirty()
        if action == "mark_applied":
            return self.mark_applied(mig)
        assert mig is not None
        try:
            return self.revert(mig) if action == "revert" else self.resume(mig)
        except _Failed as failed:
            return failed.result
        except MigrationFileError as exc:  # the executor's preflight: nothing ran
            return self.refuse(f"{action} refused: {exc}")

    # -- audit -------------------------------------------------------------------------------

    def entry(self, success: bool, to_version: int, *, error: str | None = None,
              mf: files.MigrationFile | None = None) -> HistoryEntry:
        """A recovery row that runs no SQL (refusals, leave_dirty, mark_applied)."""
        return HistoryEntry(
            version=self.inc.version, name=self._name(), direction="recover", checksum=mf.sha256 if mf else None,
            success=success, from_version=self.inc.version, to_version=to_version, started_at=self.started,
            finished_at=datetime.now(UTC), duration_ms=int((time.perf_counter() - self.t0) * 1000),
            run_id=self.run_id, environment=self.settings.environment, error=redact(error) if error else None,
            approved_by=self.engineer, action=self.action, comment=self.comment or None,
        )

    def _name(self) -> str | None:
        return self.inc.migration.split("_", 1)[1] if self.inc.migration and "_" in self.inc.migration else None

    def audit(self) -> Audit:
        """The executor's row for a revert or resume: direction ``recover``, the action, the engineer."""
        return Audit("recover", self.inc.version, self._name(), self.run_id, self.settings.environment,
                     approved_by=self.engineer, action=self.action, comment=self.comment or None)

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
        """Run the down file (the rest of it, after a partial revert) and record the previous version."""
        assert mig.down is not None
        return self._execute(mig.down, self.inc.reverted or 0, self.inc.previous_version)

    def resume(self, mig: files.Migration) -> RecoveryResult:
        """Run the statements of the failed file that did not run, and record its version."""
        mf = mig.up if self.inc.direction == "up" else mig.down
        assert mf is not None
        done = sum(1 for r in self.inc.statements if r.state == "done")
        return self._execute(mf, done, self.inc.version)

    def _execute(self, mf: files.MigrationFile, skip: int, target: int) -> RecoveryResult:
        """Hand the file to the executor: in one transaction when it allows it and nothing of it ran,
        else statement by statement from ``skip``, the database staying dirty until the end."""
        job = Job(mf, self.inc.version, target, dirty_version=None, start=skip)
        done = self.executor.run(job, self.audit(), lambda f: _Failed(self._failed(mf, f, skip)))
        ran, total = done.ran, len(done.statements)
        verb = "resumed" if self.action == "resume" else "reverted"
        how = "in one transaction" if done.transactional else f"statement(s) {skip + 1}..{total}"
        self.say(f"{verb}: ran {mf.filename} ({how})")
        msg = (f"{verb} by {self.engineer}: ran {ran} statement(s) of {mf.filename}"
               f"{f' (skipped the {skip} already run)' if skip else ''}"
               + "".join(f"; {n}" for n in done.notes) + f"; {self._state_now(target, False)}")
        audit_id = done.audit_id if done.audit_id is not None else self._last_row_id()
        return self.result("completed", msg, target, False, statements_run=ran, audit_id=audit_id)

    def _last_row_id(self) -> int | None:
        """The row a one-round-trip run wrote (we hold the migration lock: it is the newest)."""
        row = self.conn.execute(sql.SQL("SELECT max(id) FROM {}").format(self.st.history)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def _failed(self, mf: files.MigrationFile, f: Failure, skip: int) -> RecoveryResult:
        pg, _detail, line, _col = error_location(f.error, mf, f.statement)
        if f.signal_name:
            pg = f"cancelled by {f.signal_name}" + ("" if f.stopped_before else f" ({pg})")
        st = f.statement
        where = f"{_shown(mf.path)}:{line or st.line}" if st is not None else _shown(mf.path)
        statement = " ".join(st.text.split()) if st is not None else None
        undone = "rolled back, nothing changed" if f.transactional else f"statements up to {f.done} stay applied"
        msg = (f"{self.action} by {self.engineer} {'stopped before' if f.stopped_before else 'failed at'} {where}: "
               f"{pg} ({undone}); {self._state_now(self.inc.version, True)}; `migrator recover` shows what ran now")
        return self.result("failed", msg, self.inc.version, True, error=pg, file=str(mf.path),
                           line=st.line if st else None, statement=statement, audit_id=f.audit_id,
                           statements_run=0 if f.transactional else max(f.done - skip, 0))
