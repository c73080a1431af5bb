"""How the rehearsal applies one migration and watches it: the engine's statement split and
transaction paths, a ``pg_locks`` read of the backend's own locks after each statement inside the
open transaction (a lock first seen after statement k was taken by statement k and is held until
COMMIT), a second connection that samples the locks of statements that commit by themselves (and
reads what an aborted transaction still holds before its ROLLBACK), and ``relfilenode`` before and
after each statement (a change is a rewrite)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from migrator import db, files
from migrator.config import Connection, Settings, prepare_url
from migrator.errors import MigrationFileError
from migrator.execute.executor import Audit, Executor, Failure, Job, Timeouts, error_location
from migrator.lint import rules
from migrator.lint.parse import parse_file
from migrator.redact import redact
from migrator.rehearse.model import (
    BLOCKS,
    KINDS,
    LOCK_RULES,
    MODES,
    SAMPLE_INTERVAL_SECONDS,
    STRENGTH,
    TABLE_KINDS,
    LockHold,
    MigrationReport,
    Prediction,
    RehearsalStoppedError,
    Rewrite,
    StatementReport,
    human_bytes,
    human_ms,
)
from migrator.sql import Statement, non_transactional_reason

log = logging.getLogger(__name__)

_USER_RELATIONS = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, c.relfilenode::bigint,
       CASE WHEN c.relkind IN ('r', 'm', 't') THEN pg_total_relation_size(c.oid)
            WHEN c.relkind IN ('i', 'S') THEN pg_relation_size(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'm', 'i', 'I', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
"""
_FILENODES = """
SELECT c.oid::bigint, c.relfilenode::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid >= 16384 AND c.relkind IN ('r', 'm', 'i')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
"""
_LOCKS = """
SELECT c.oid::bigint, l.mode, n.nspname, c.relname, c.relkind::text, c.relfilenode::bigint
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = {pid} AND l.locktype = 'relation' AND l.granted AND c.oid >= 16384
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
"""


# ---------------------------------------------------------------------------------------- observing


@dataclass
class _Rel:
    name: str
    kind: str
    filenode: int | None
    size: int | None


def _mode(mode: str) -> str:
    return MODES.get(str(mode), str(mode))


def _kind(kind: str) -> str:
    return KINDS.get(str(kind), str(kind))


def _relations(conn: psycopg.Connection) -> dict[int, _Rel]:
    return {
        int(oid): _Rel(f"{nsp}.{rel}", _kind(kind), int(node) if node else None,
                       int(size) if size is not None else None)
        for oid, nsp, rel, kind, node, size in conn.execute(_USER_RELATIONS).fetchall()
    }


def _filenodes(conn: psycopg.Connection) -> dict[int, int]:
    return {int(oid): int(node) for oid, node in conn.execute(_FILENODES).fetchall()}


def _own_locks(conn: psycopg.Connection) -> tuple[dict[tuple[int, str], tuple[str, str]], dict[int, int]]:
    """The backend's granted relation locks, and the relfilenode of each locked table, materialized
    view and index (a rewrite needs a lock held until commit: one round trip answers both)."""
    rows = conn.execute(_LOCKS.format(pid="pg_backend_pid()")).fetchall()
    held = {(int(oid), _mode(mode)): (f"{nsp}.{rel}", _kind(kind)) for oid, mode, nsp, rel, kind, _ in rows}
    nodes = {int(row[0]): int(row[5]) for row in rows if row[4] in ("r", "m", "i") and row[5]}
    return held, nodes


class _LockSampler(threading.Thread):
    """Polls pg_locks of the migration's backend from a second connection, for statements that
    commit by themselves (their locks are gone by the time the statement returns)."""

    def __init__(self, conninfo: Connection, pid: int, interval: float = SAMPLE_INTERVAL_SECONDS) -> None:
        super().__init__(name="rehearsal-lock-sampler", daemon=True)
        self.conn = db.connect(conninfo)
        self.query = _LOCKS.format(pid=int(pid))
        self.interval = interval
        self.active = threading.Event()
        self.stopped = threading.Event()
        self.mutex = threading.Lock()
        self.seen: dict[tuple[int, str], tuple[str, str]] = {}
        self.window = 0  # a sample that started in an earlier statement's window is discarded

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                if self.active.wait(0.05) and not self.stopped.is_set():
                    window = self.window
                    rows = self.conn.execute(self.query).fetchall()
                    with self.mutex:
                        if window == self.window and self.active.is_set():
                            for oid, mode, nsp, rel, kind, _ in rows:
                                self.seen.setdefault((int(oid), _mode(mode)), (f"{nsp}.{rel}", _kind(kind)))
                    self.stopped.wait(self.interval)
        except psycopg.Error as exc:  # the report then says less, never something false
            log.warning("lock sampler stopped: %s", redact(exc))

    def start_window(self) -> None:
        with self.mutex:
            self.seen = {}
            self.window += 1
            self.active.set()

    def end_window(self) -> dict[tuple[int, str], tuple[str, str]]:
        with self.mutex:
            self.active.clear()
            self.window += 1
            seen, self.seen = self.seen, {}
        return seen

    def close(self) -> None:
        self.stopped.set()
        self.active.set()
        self.join(timeout=5)
        with contextlib.suppress(Exception):
            self.conn.close()


# ------------------------------------------------------------------------------------------ helpers


def _non_transactional_reason(sql: str) -> str | None:
    return non_transactional_reason(sql)


def _short(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def lock_predictions(mset: files.MigrationSet, versions: set[int]) -> dict[int, list[Any]]:
    """validate's lock-predicting findings per pending version (``migrator:allow`` ignored: a
    justified lock is still a lock the approver wants measured)."""
    state = rules.LintState()
    out: dict[int, list[Any]] = {}
    for m in mset:
        if m.up is None:
            continue
        pf = parse_file(str(m.up.path), m.up.sql)
        if pf.error is not None:
            continue
        found = rules.lint_up(pf, state)
        if m.version in versions:
            out[m.version] = [f for f in found if f.rule in LOCK_RULES]
    return out


def _measured(stmt: StatementReport | None, rewrites: list[Rewrite]) -> str:
    if stmt is None:
        return "statement not reached"
    blocking = [lk for lk in stmt.locks if lk.blocks and lk.kind in TABLE_KINDS]
    rewritten = [r for r in rewrites if r.statement == stmt.index and r.kind in TABLE_KINDS]
    parts = []
    if blocking:
        lk = max(blocking, key=lambda x: (STRENGTH.get(x.mode, 0), x.held_ms))
        parts.append(f"{lk.mode} on {lk.relation} held {human_ms(lk.held_ms)}")
    else:
        strongest = max(stmt.locks, key=lambda x: STRENGTH.get(x.mode, 0), default=None)
        parts.append(f"no blocking lock (strongest: {strongest.mode} on {strongest.relation})" if strongest
                     else "no relation lock measured")
    for r in rewritten:
        parts.append(f"{r.relation} rewritten ({human_bytes(r.size_before)} -> {human_bytes(r.size_after)})")
    if stmt.error:
        parts.append("failed")
    return "; ".join(parts)


# -------------------------------------------------------------------------------------------- apply


class _Run:
    """What one ``Applier.run`` observes while it goes: the executor's observer.

    Inside the file's transaction, a ``pg_locks`` read of the backend's own locks after each
    statement (a lock first seen after statement k was taken by k and is held until COMMIT);
    outside it, what the sampler saw while the statement ran; ``relfilenode`` after each one."""

    def __init__(self, applier: Applier, migration: files.Migration, mf: files.MigrationFile,
                 report: MigrationReport, transactional: bool, before: dict[int, _Rel],
                 sampler: _LockSampler) -> None:
        self.applier = applier
        self.conn = applier.conn
        self.migration = migration
        self.mf = mf
        self.report = report
        self.transactional = transactional
        self.relations_before = before
        self.filenodes = {oid: r.filenode for oid, r in before.items() if r.filenode}
        self.sampler = sampler
        self.changed: dict[int, int] = {}  # oid -> statement that first changed its relfilenode
        # lock key -> (statement index, statement start, names)
        self.acquired: dict[tuple[int, str], tuple[int, float, tuple[str, str]]] = {}
        self.s0 = 0.0
        self.t0 = time.perf_counter()

    # -- the executor's observer ------------------------------------------------------------------

    def before(self, index: int, stmt: Statement) -> None:
        self.report.statements.append(StatementReport(index, stmt.line, _short(stmt.text), 0.0))
        self.sampler.start_window()
        self.s0 = time.perf_counter()

    def after(self, index: int, stmt: Statement) -> None:
        sr = self._finish_statement()
        seen = self.sampler.end_window()
        if not self.transactional:
            for key, names in seen.items():
                sr.locks.append(self._hold(key, names, index, sr.duration_ms, "sampled while it ran"))
        if self.transactional or self.conn.info.transaction_status != 0:  # in a transaction: locks held
            held, nodes = _own_locks(self.conn)
            for key, names in held.items():
                self.acquired.setdefault(key, (index, self.s0, names))
            self._note_rewrites(index, nodes if self.transactional else None)
        else:
            self._note_rewrites(index)

    def failed(self, index: int, stmt: Statement, exc: Exception) -> None:
        sr = self._finish_statement()
        # PostgreSQL releases an aborted transaction's locks at the error: what the failing
        # statement held is what the sampler saw while it ran
        for key, names in self.sampler.end_window().items():
            if key in self.acquired:  # taken by an earlier statement, reported there
                continue
            observed = "sampled while it ran" + (" (released at the failure)" if self.transactional else "")
            sr.locks.append(self._hold(key, names, index, sr.duration_ms, observed))

    # -- helpers ----------------------------------------------------------------------------------

    def _finish_statement(self) -> StatementReport:
        sr = self.report.statements[-1]
        sr.duration_ms = round((time.perf_counter() - self.s0) * 1000, 1)
        return sr

    def _hold(self, key: tuple[int, str], names: tuple[str, str], stmt: int, held_ms: float,
              observed: str) -> LockHold:
        oid, mode = key
        rel = self.relations_before.get(oid)
        size = rel.size if rel else None
        blocks = BLOCKS.get(mode)
        large = bool(blocks and names[1] in TABLE_KINDS and size is not None and size >= self.applier.large)
        return LockHold(names[0], names[1], mode, stmt, round(held_ms), size, blocks, large, observed)

    def _note_rewrites(self, index: int, nodes: dict[int, int] | None = None) -> None:
        """Remember the first statement that gave each pre-existing relation a new relfilenode."""
        for oid, node in (_filenodes(self.conn) if nodes is None else nodes).items():
            if oid in self.filenodes and node != self.filenodes[oid] and oid not in self.changed:
                self.changed[oid] = index

    def report_held_locks(self) -> None:
        """Locks held until the end of the file's transaction, with how long they were held."""
        end = time.perf_counter()
        statements = self.report.statements
        for key, (i, s0, names) in self.acquired.items():
            if not any(lk.relation == names[0] and lk.mode == key[1] for lk in statements[i - 1].locks):
                statements[i - 1].locks.append(self._hold(key, names, i, (end - s0) * 1000,
                                                          "pg_locks after the statement"))


class _WouldFail(Exception):
    """The executor's failure of a rehearsed migration (it rolled back and audited already)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure.error))
        self.failure = failure


def _describe(failure: Failure) -> Exception:
    if isinstance(failure.error, RehearsalStoppedError):  # SIGTERM: the rehearsal stops, it does not "fail"
        return failure.error
    return _WouldFail(failure)


class Applier:
    """Runs one migration on the scratch database through the executor, as ``up`` does, observing
    each statement as it goes."""

    def __init__(self, conn: psycopg.Connection, scratch: Connection, settings: Settings, st: Any,
                 large_table_bytes: int, run_id: str | None) -> None:
        self.conn = conn
        self.scratch = scratch
        self.settings = settings
        self.st = st
        self.large = large_table_bytes
        self.run_id = run_id
        url_ms = prepare_url(settings.database_url).statement_timeout_ms if settings.database_url else None
        self.timeouts = Timeouts.of(settings, url_ms)

    def run(self, migration: files.Migration, direction: str, target: int, version_before: int,
            predictions: list[Any]) -> MigrationReport:
        mf = migration.up if direction == "up" else migration.down
        assert mf is not None  # plan() only returns migrations with the file for the direction
        reason = _non_transactional_reason(mf.sql)
        report = MigrationReport(migration.version, migration.name, direction, str(mf.path), reason is None, reason)
        before = _relations(self.conn)
        sampler = _LockSampler(self.scratch, int(self.conn.info.backend_pid))
        run = _Run(self, migration, mf, report, reason is None, before, sampler)
        executor = Executor(self.conn, self.st, self.timeouts, observer=run, progress=log.info)
        audit = Audit(direction, migration.version, migration.name, self.run_id,
                      f"rehearsal:{self.settings.environment}")
        sampler.start()
        try:
            executor.run(Job(mf, version_before, target, dirty_version=target), audit, _describe)
            run.report_held_locks()
        except _WouldFail as failed:
            run.report_held_locks()
            self._fail(report, mf, failed.failure)
        except MigrationFileError as exc:  # refused before anything ran (an unbalanced BEGIN)
            report.failed, report.error, report.location = True, redact(str(exc)), str(mf.path)
        finally:
            sampler.close()
        report.duration_ms = round((time.perf_counter() - run.t0) * 1000, 1)
        self._report_rewrites(run, rolled_back=report.failed and reason is None)
        self._report_predictions(report, predictions)
        return report

    def _report_rewrites(self, run: _Run, rolled_back: bool) -> None:
        after = _relations(self.conn)
        for oid, index in sorted(run.changed.items(), key=lambda x: x[1]):
            rel = run.relations_before[oid]
            now = after.get(oid)
            if rolled_back:
                now = rel  # rolled back: the rewrite happened, its result was discarded
            run.report.rewrites.append(Rewrite(rel.name, rel.kind, index, rel.size, now.size if now else None))

    @staticmethod
    def _report_predictions(report: MigrationReport, predictions: list[Any]) -> None:
        """Each lint prediction next to what the statement it points at really did."""
        by_index = {s.index: s for s in report.statements}
        for f in predictions:
            k = next((s.index for s in reversed(report.statements) if f.line and s.line <= f.line), None)
            report.predictions.append(Prediction(
                f.rule, f.name, f.line, k, LOCK_RULES[f.rule], redact(f.message),
                _measured(by_index.get(k) if k else None, report.rewrites)))

    @staticmethod
    def _fail(report: MigrationReport, mf: files.MigrationFile, failure: Failure) -> None:
        message, detail, line, col = error_location(failure.error, mf, failure.statement)
        if detail:
            message += f" ({redact(detail)})"
        report.failed = True
        report.error = message
        if failure.statement is not None and not failure.stopped_before:
            report.location = f"{mf.path}:{line}:{col}"
            if report.statements:
                report.statements[-1].error = message
        else:
            report.location = str(mf.path)
