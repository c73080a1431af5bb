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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from migrator import db, files
from migrator.config import Connection, Settings, parse_interval_ms, prepare_url
from migrator.errors import MigratorError
from migrator.redact import redact
from migrator.rehearse_model import (
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

if TYPE_CHECKING:
    import psycopg

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
        import psycopg

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


def _statements(sql: str) -> list[tuple[int, int, str]]:
    """The engine's statement split (``migrator.sql``), as (start, end, text)."""
    from migrator.sql import split_statements

    return [(st.start, st.end, st.text) for st in split_statements(sql)] or [(0, len(sql), sql)]


def _non_transactional_reason(sql: str) -> str | None:
    from migrator.sql import non_transactional_reason

    return non_transactional_reason(sql)


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    from migrator.sql import line_col

    return line_col(sql, offset)


def _timeouts(settings: Settings) -> tuple[int, int]:
    """lock_timeout and statement_timeout in ms, as the engine computes them for ``up``."""
    lock_ms = parse_interval_ms(settings.lock_timeout, "lock_timeout")
    url_ms = prepare_url(settings.database_url).statement_timeout_ms if settings.database_url else None
    if url_ms is not None and settings.statement_timeout == Settings.statement_timeout:
        return lock_ms, url_ms
    return lock_ms, parse_interval_ms(settings.statement_timeout, "statement_timeout")


def _short(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def lock_predictions(mset: files.MigrationSet, versions: set[int]) -> dict[int, list[Any]]:
    """validate's lock-predicting findings per pending version (``migrator:allow`` ignored: a
    justified lock is still a lock the approver wants measured)."""
    from migrator.lint import rules
    from migrator.lint.parse import parse_file

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
    """What one ``Applier.run`` observes while it goes (shared by its helpers)."""

    def __init__(self, migration: files.Migration, direction: str, target: int, version_before: int,
                 mf: files.MigrationFile, report: MigrationReport, stmts: list[tuple[int, int, str]],
                 before: dict[int, _Rel], filenodes: dict[int, int], sampler: _LockSampler) -> None:
        self.migration = migration
        self.direction = direction
        self.target = target
        self.version_before = version_before
        self.mf = mf
        self.report = report
        self.stmts = stmts
        self.before = before
        self.filenodes = filenodes
        self.sampler = sampler
        self.changed: dict[int, int] = {}  # oid -> statement that first changed its relfilenode
        # lock key -> (statement index, statement start, names)
        self.acquired: dict[tuple[int, str], tuple[int, float, tuple[str, str]]] = {}
        self.current: tuple[int, int, str] | None = None  # the statement running (for the error location)
        self.started = datetime.now(UTC)
        self.t0 = time.perf_counter()


class Applier:
    """Runs one migration on the scratch database the way ``up`` does, observing as it goes."""

    def __init__(self, conn: psycopg.Connection, scratch: Connection, settings: Settings, st: Any,
                 large_table_bytes: int, run_id: str | None) -> None:
        self.conn = conn
        self.scratch = scratch
        self.settings = settings
        self.st = st
        self.large = large_table_bytes
        self.run_id = run_id
        self.lock_ms, self.stmt_ms = _timeouts(settings)

    def _hold(self, key: tuple[int, str], names: tuple[str, str], stmt: int, held_ms: float,
              before: dict[int, _Rel], observed: str) -> LockHold:
        oid, mode = key
        rel = before.get(oid)
        size = rel.size if rel else None
        blocks = BLOCKS.get(mode)
        large = bool(blocks and names[1] in TABLE_KINDS and size is not None and size >= self.large)
        return LockHold(names[0], names[1], mode, stmt, round(held_ms), size, blocks, large, observed)

    def run(self, migration: files.Migration, direction: str, target: int, version_before: int,
            predictions: list[Any]) -> MigrationReport:
        import psycopg

        mf = migration.up if direction == "up" else migration.down
        assert mf is not None  # plan() only returns migrations with the file for the direction
        reason = _non_transactional_reason(mf.sql)
        report = MigrationReport(migration.version, migration.name, direction, str(mf.path), reason is None, reason)
        before = _relations(self.conn)
        sampler = _LockSampler(self.scratch, int(self.conn.info.backend_pid))
        run = _Run(migration, direction, target, version_before, mf, report, _statements(mf.sql), before,
                   {oid: r.filenode for oid, r in before.items() if r.filenode}, sampler)
        sampler.start()
        try:
            if reason is None:
                self._apply_in_transaction(run)
            else:
                self._apply_outside_transaction(run)
        except RehearsalStoppedError:
            raise
        except (psycopg.Error, MigratorError) as exc:
            self._record_failure(run, exc)
        finally:
            sampler.close()
        report.duration_ms = round((time.perf_counter() - run.t0) * 1000, 1)
        self._report_rewrites(run, rolled_back=report.failed and reason is None)
        self._report_predictions(report, predictions)
        return report

    def _entry(self, run: _Run, success: bool) -> Any:
        """The schema_migrations_history row for this run (written in the same transaction as the state)."""
        from migrator.state import HistoryEntry, statement_hash

        return HistoryEntry(
            version=run.migration.version, name=run.migration.name, direction=run.direction,
            checksum=run.mf.sha256, success=success, from_version=run.version_before, to_version=run.target,
            started_at=run.started, finished_at=datetime.now(UTC),
            duration_ms=int((time.perf_counter() - run.t0) * 1000),
            run_id=self.run_id, environment=f"rehearsal:{self.settings.environment}", error=None,
            statements_total=len(run.stmts), statements_done=len(run.stmts) if success else None,
            statement_hashes=[statement_hash(text) for _, _, text in run.stmts],
        )

    def _note_rewrites(self, run: _Run, index: int, nodes: dict[int, int] | None = None) -> None:
        """Remember the first statement that gave each pre-existing relation a new relfilenode."""
        for oid, node in (_filenodes(self.conn) if nodes is None else nodes).items():
            if oid in run.filenodes and node != run.filenodes[oid] and oid not in run.changed:
                run.changed[oid] = index

    def _begin_statement(self, run: _Run, i: int, stmt: tuple[int, int, str]) -> StatementReport:
        run.current = stmt
        sr = StatementReport(i, _line_col(run.mf.sql, stmt[0])[0], _short(stmt[2]), 0.0)
        run.report.statements.append(sr)
        return sr

    def _apply_in_transaction(self, run: _Run) -> None:
        """The whole file, the state and the history row in one transaction, as ``up`` does."""
        import psycopg

        from migrator.state import history_statement, state_statements

        conn = self.conn
        conn.execute(b"BEGIN")
        conn.execute(f"SET LOCAL lock_timeout = '{self.lock_ms}ms'".encode())
        conn.execute(f"SET LOCAL statement_timeout = '{self.stmt_ms}ms'".encode())
        for i, stmt in enumerate(run.stmts, 1):
            s0 = time.perf_counter()
            sr = self._begin_statement(run, i, stmt)
            run.sampler.start_window()
            try:
                conn.execute(stmt[2].encode())
            except psycopg.Error:
                # PostgreSQL releases an aborted transaction's locks at the error: what the
                # failing statement held is what the sampler saw while it ran
                for key, names in run.sampler.end_window().items():
                    if key in run.acquired:  # taken by an earlier statement, reported there
                        continue
                    sr.locks.append(self._hold(key, names, i, (time.perf_counter() - s0) * 1000, run.before,
                                               "sampled while it ran (released at the failure)"))
                raise
            finally:
                sr.duration_ms = round((time.perf_counter() - s0) * 1000, 1)
                run.sampler.end_window()
            held, nodes = _own_locks(conn)
            for key, names in held.items():
                run.acquired.setdefault(key, (i, s0, names))
            self._note_rewrites(run, i, nodes)
        run.current = None
        for query in state_statements(self.st, run.target, False):
            conn.execute(query)
        conn.execute(history_statement(conn, self.st, self._entry(run, True)).encode())
        conn.execute(b"COMMIT")
        end = time.perf_counter()
        for key, (i, s0, names) in run.acquired.items():
            run.report.statements[i - 1].locks.append(
                self._hold(key, names, i, (end - s0) * 1000, run.before, "pg_locks after the statement"))

    def _apply_outside_transaction(self, run: _Run) -> None:
        """Statement by statement in autocommit, dirty while it runs, as ``up`` does for such files."""
        from migrator.state import write_history, write_state

        conn = self.conn
        write_state(conn, self.st, run.target, True)
        conn.execute(f"SET lock_timeout = '{self.lock_ms}ms'; SET statement_timeout = '{self.stmt_ms}ms'"
                     .encode())
        for i, stmt in enumerate(run.stmts, 1):
            sr = self._begin_statement(run, i, stmt)
            run.sampler.start_window()
            s0 = time.perf_counter()
            try:
                conn.execute(stmt[2].encode())
            finally:
                sr.duration_ms = round((time.perf_counter() - s0) * 1000, 1)
                seen = run.sampler.end_window()
                for key, names in seen.items():
                    sr.locks.append(self._hold(key, names, i, sr.duration_ms, run.before, "sampled while it ran"))
            if conn.info.transaction_status != 0:  # BEGIN in the file: its locks are still held
                for key, names in _own_locks(conn)[0].items():
                    run.acquired.setdefault(key, (i, s0, names))
            self._note_rewrites(run, i)
        run.current = None
        if conn.info.transaction_status != 0:
            raise MigratorError(f"{run.mf.path}: the file opens a transaction (BEGIN) that it never commits")
        conn.execute(b"RESET lock_timeout; RESET statement_timeout")
        with conn.transaction():
            write_state(conn, self.st, run.target, False)
            write_history(conn, self.st, self._entry(run, True))

    def _record_failure(self, run: _Run, exc: Exception) -> None:
        """Roll back what is open, report the locks still unreported, and say where it failed."""
        import psycopg

        conn = self.conn
        end = time.perf_counter()
        with contextlib.suppress(psycopg.Error):
            if conn.info.transaction_status != 0:
                conn.execute(b"ROLLBACK")
        statements = run.report.statements
        for key, (i, s0, names) in run.acquired.items():
            if not any(lk.relation == names[0] and lk.mode == key[1] for lk in statements[i - 1].locks):
                statements[i - 1].locks.append(
                    self._hold(key, names, i, (end - s0) * 1000, run.before, "pg_locks after the statement"))
        self._fail(run.report, run.mf, run.current, exc)

    def _report_rewrites(self, run: _Run, rolled_back: bool) -> None:
        after = _relations(self.conn)
        for oid, index in sorted(run.changed.items(), key=lambda x: x[1]):
            rel = run.before[oid]
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
    def _fail(report: MigrationReport, mf: files.MigrationFile, current: tuple[int, int, str] | None,
              exc: Exception) -> None:
        diag = getattr(exc, "diag", None)
        message = redact(getattr(diag, "message_primary", None) or str(exc)).strip()
        detail = getattr(diag, "message_detail", None)
        if detail:
            message += f" ({redact(detail)})"
        report.failed = True
        report.error = message
        if current is not None:
            pos = getattr(diag, "statement_position", None)
            text = current[2]
            offset = current[0] + (int(pos) - 1 if pos else len(text) - len(text.lstrip()))
            line, col = _line_col(mf.sql, offset)
            report.location = f"{mf.path}:{line}:{col}"
            if report.statements:
                report.statements[-1].error = message
        else:
            report.location = str(mf.path)


