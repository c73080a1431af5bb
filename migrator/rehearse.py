"""Rehearsal: apply the pending migrations to a restored copy of the database first, and measure
what they lock, for how long, and what they rewrite.

A backup (the newest complete one, or a given key) is restored into a scratch database on a
rehearsal server that is not the source's server/database; the pending migrations then run there
as ``up`` runs them (same statement splitting, same transactional / non-transactional paths, same
lock and statement timeouts, same version bookkeeping), one statement at a time so that after each
statement the backend's own ``pg_locks`` rows can be read inside the still-open transaction: a
lock first seen after statement k was taken by statement k and is held until COMMIT. Statements of
a non-transactional file (CREATE INDEX CONCURRENTLY...) commit by themselves, so a second
connection samples their locks while they run. Relation sizes and ``relfilenode`` are read before
and after each migration: a changed relfilenode means the table was rewritten.

The source database is never written to: it is only read once, to prove the rehearsal server is
another database. The scratch database is dropped afterwards unless ``keep``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator import db, files
from migrator.config import Connection, Settings, parse_interval_ms, prepare_url, state_table_name
from migrator.errors import ConfigError, MigratorError
from migrator.redact import redact

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

DEFAULT_LARGE_TABLE_BYTES = 10 * 1024 * 1024
SAMPLE_INTERVAL_SECONDS = 0.02
ESTIMATE_LABEL = (
    "the rehearsal's own time on the rehearsal server; production hardware, load and waits for "
    "locks held by running sessions can make it longer"
)

# pg_locks mode -> the name people read in PostgreSQL's documentation, strongest last.
MODES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
_STRENGTH = {name: i for i, name in enumerate(MODES.values())}
# What each mode blocks for the application (plain SELECT / INSERT-UPDATE-DELETE).
_BLOCKS = {
    "SHARE": "writes",
    "SHARE ROW EXCLUSIVE": "writes",
    "EXCLUSIVE": "writes",
    "ACCESS EXCLUSIVE": "reads and writes",
}
_KINDS = {"r": "table", "p": "table", "m": "materialized view", "i": "index", "I": "index", "S": "sequence",
          "v": "view", "f": "foreign table", "t": "toast", "c": "type"}
_TABLE_KINDS = ("table", "materialized view")

# validate's rules that predict a blocking lock, and what they predict.
LOCK_RULES = {
    "MIG002": "ACCESS EXCLUSIVE while the whole table is scanned",
    "MIG003": "SHARE (blocks writes) until the index is built",
    "MIG004": "a write-blocking lock while every row is validated",
    "MIG005": "ACCESS EXCLUSIVE and a table rewrite",
    "MIG010": "row locks on every row until commit",
    "MIG013": "ACCESS EXCLUSIVE and a table rewrite",
    "MIG014": "ACCESS EXCLUSIVE while the unique index is built",
    "MIG016": "ACCESS EXCLUSIVE on the index's table",
}

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
SELECT c.oid::bigint, l.mode, n.nspname, c.relname, c.relkind::text
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = {pid} AND l.locktype = 'relation' AND l.granted AND c.oid >= 16384
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
"""


# --------------------------------------------------------------------------------------------- report


@dataclass
class LockHold:
    """One lock a statement took, and how long it was held."""

    relation: str
    kind: str
    mode: str
    statement: int  # 1-based index of the statement that took it
    held_ms: int  # from that statement's start until COMMIT (or the end of an autocommit statement)
    size_bytes: int | None  # the relation's size before the migration (None: created by it)
    blocks: str | None  # "reads and writes", "writes", or None
    large: bool  # a blocking lock on a table of at least large_table_bytes
    observed: str  # "pg_locks after the statement" or "sampled while it ran"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rewrite:
    """A relation whose relfilenode changed: PostgreSQL wrote a new copy of it."""

    relation: str
    kind: str
    statement: int
    size_before: int | None
    size_after: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """A validate rule that predicted a lock, next to what the rehearsal measured."""

    rule: str
    name: str
    line: int | None
    statement: int | None
    predicted: str
    message: str
    measured: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatementReport:
    index: int
    line: int
    text: str
    duration_ms: float
    locks: list[LockHold] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "locks": [lk.to_dict() for lk in self.locks]}


@dataclass
class MigrationReport:
    version: int
    name: str
    direction: str
    file: str
    transactional: bool
    why_not_transactional: str | None
    duration_ms: float = 0.0
    statements: list[StatementReport] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    failed: bool = False
    error: str | None = None
    location: str | None = None  # file:line:column of the failing statement

    @property
    def locks(self) -> list[LockHold]:
        return [lk for s in self.statements for lk in s.locks]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["statements"] = [s.to_dict() for s in self.statements]
        d["locks"] = [lk.to_dict() for lk in self.locks]
        return d


@dataclass
class RehearsalReport:
    """Everything a rehearsal found; ``ok`` False when a migration would fail."""

    environment: str
    database: str
    backup_key: str | None
    backup_size: int | None
    scratch_server: str
    scratch_database: str | None
    kept: bool
    large_table_bytes: int
    version_before: int | None = None
    version_after: int | None = None
    restore_seconds: float = 0.0
    apply_seconds: float = 0.0
    total_seconds: float = 0.0
    estimate_seconds: float = 0.0
    estimate_label: str = ESTIMATE_LABEL
    migrations: list[MigrationReport] = field(default_factory=list)
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)
    server_version: str | None = None

    @property
    def failure(self) -> MigrationReport | None:
        return next((m for m in self.migrations if m.failed), None)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def failure_message(self) -> str | None:
        m = self.failure
        if m is None:
            return None
        return (
            f"rehearsal: migration {m.version} ({m.name}) would fail at {m.location or m.file}: {m.error}; "
            "caught on the restored copy, nothing was applied to the source database"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["migrations"] = [m.to_dict() for m in self.migrations]
        d["ok"] = self.ok
        d["failure"] = self.failure_message()
        return d


# ------------------------------------------------------------------------------------------ options


@dataclass
class RehearsalOptions:
    """How to rehearse: which backup, on which server, and what counts as a large table."""

    backup: str = "latest"
    scratch_url: str | None = None  # a URL of the rehearsal server (its database is only the admin one)
    backup_destination: str | None = None  # where the backups are (default: settings.backup_url)
    keep: bool = False
    large_table_bytes: int = DEFAULT_LARGE_TABLE_BYTES
    max_backup_bytes: int | None = None
    allow_same_server: bool | None = None  # None: only for the local environment
    target_version: int | None = None


def deployment_rehearsal(environment: str, directory: Path | None = None) -> dict[str, Any]:
    """The ``rehearsal:`` mapping of ``deployments/<environment>.yaml`` ({} when absent).

    Read here (not through the Prefect tasks) so that the CLI can use it without importing Prefect.
    """
    import os

    base = directory or Path(os.environ.get("MIGRATOR_DEPLOYMENTS_DIR") or "deployments")
    path = base / f"{environment}.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    section = raw.get("rehearsal") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: rehearsal must be a mapping (enabled, server_url, max_backup_bytes, ...)")
    return section


def parse_bytes(value: object, setting: str) -> int:
    """``1073741824``, ``500MB``, ``10GiB``... as bytes; a clear error naming ``setting`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{setting}={value!r} is not a size; use bytes or e.g. 500MB, 20GB")
    unit = (m.group(2) or "b").lower().rstrip("b").rstrip("i") or "b"
    factor = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    return int(float(m.group(1)) * factor)


# -------------------------------------------------------------------------------- same-server guard


def _endpoint(conninfo: str) -> tuple[str, str, str]:
    """(host, port, database) as libpq would use them; localhost spellings folded together."""
    import os

    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(conninfo)
    host = str(p.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
    if host in ("localhost", "127.0.0.1", "::1"):
        host = "localhost"
    port = str(p.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(p.get("user") or os.environ.get("PGUSER") or "")
    dbname = str(p.get("dbname") or os.environ.get("PGDATABASE") or user)
    return host, port, dbname


def _identity(conn: psycopg.Connection) -> tuple[str | None, str, str]:
    """(cluster system identifier or None when not readable, current database, server version)."""
    import psycopg

    version = str(conn.execute("SHOW server_version").fetchone()[0]).split(" ")[0]  # type: ignore[index]
    dbname = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        return (str(row[0]) if row else None), dbname, version
    except psycopg.Error:
        return None, dbname, version


def check_not_source(
    source: Connection, scratch: Connection, *, allow_same_server: bool, environment: str
) -> tuple[list[str], str]:
    """Refuse a rehearsal server that is the source database (or its server, unless allowed).

    Returns (warnings, scratch server version). The URL check runs before any connection; then
    the cluster's system identifier proves it for aliases (a socket path vs 127.0.0.1, a DNS name).
    """
    warnings: list[str] = []
    src_ep, scr_ep = _endpoint(source.conninfo), _endpoint(scratch.conninfo)
    if src_ep == scr_ep:
        raise ConfigError(
            f"refusing to rehearse: the rehearsal server URL {scratch.display} is the source database itself "
            f"({src_ep[0]}:{src_ep[1]}/{src_ep[2]}); set --scratch-url / rehearsal.server_url to another server"
        )
    with db.connect(scratch) as conn:
        scr_id, scr_db, scr_version = _identity(conn)
    try:
        with db.connect(source) as conn:
            src_id, src_db, src_version = _identity(conn)
    except ConfigError as exc:
        warnings.append(f"could not reach the source database to compare servers ({exc}); compared URLs only")
        return warnings, scr_version
    # without a readable identifier (neither superuser nor pg_monitor) the same host and port are the same server
    readable = src_id is not None and scr_id is not None
    same_cluster = src_id == scr_id if readable else src_ep[:2] == scr_ep[:2]
    if same_cluster and src_db == scr_db:
        raise ConfigError(
            f"refusing to rehearse: {scratch.display} is the source database {src_db} on the same server; "
            "set --scratch-url / rehearsal.server_url to another server"
        )
    if same_cluster:
        if not allow_same_server:
            raise ConfigError(
                f"refusing to rehearse environment {environment!r} on the source's own server ({scratch.display}): "
                "the restore and the rewrites would load it; point --scratch-url / rehearsal.server_url at "
                "another server (or set rehearsal.allow_same_server: true / --allow-same-server)"
            )
        warnings.append("the rehearsal ran on the source database's own server (allowed for this environment)")
    if src_version.split(".")[0] != scr_version.split(".")[0]:
        warnings.append(
            f"the rehearsal server runs PostgreSQL {scr_version}, the source {src_version}: locks are the same "
            "for these statements in most cases, timings and rewrites may differ"
        )
    return warnings, scr_version


# ---------------------------------------------------------------------------------- scratch database


def _scratch_name(environment: str) -> str:
    env = re.sub(r"[^a-z0-9]", "_", environment.lower())[:20]
    return f"rehearsal_{env}_{datetime.now(UTC):%Y%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def _scratch_database(server: Connection, name: str, keep: bool) -> Iterator[str]:
    """Create ``name`` on ``server``; yield its conninfo; drop it afterwards unless ``keep``."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with db.connect(server) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot create the scratch database {name} on {server.display}: {redact(str(exc).strip())}; "
                "the rehearsal server's user needs CREATEDB"
            ) from None
    try:
        yield make_conninfo(server.conninfo, dbname=name)
    finally:
        if not keep:
            try:
                with db.connect(server) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except Exception as exc:  # never hide the rehearsal's own outcome behind a cleanup error
                log.warning("could not drop the scratch database %s on %s: %s", name, server.display, redact(exc))


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
    return _KINDS.get(str(kind), str(kind))


def _relations(conn: psycopg.Connection) -> dict[int, _Rel]:
    return {
        int(oid): _Rel(f"{nsp}.{rel}", _kind(kind), int(node) if node else None,
                       int(size) if size is not None else None)
        for oid, nsp, rel, kind, node, size in conn.execute(_USER_RELATIONS).fetchall()
    }


def _filenodes(conn: psycopg.Connection) -> dict[int, int]:
    return {int(oid): int(node) for oid, node in conn.execute(_FILENODES).fetchall()}


def _own_locks(conn: psycopg.Connection) -> dict[tuple[int, str], tuple[str, str]]:
    rows = conn.execute(_LOCKS.format(pid="pg_backend_pid()")).fetchall()
    return {(int(oid), _mode(mode)): (f"{nsp}.{rel}", _kind(kind))
            for oid, mode, nsp, rel, kind in rows}


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
                            for oid, mode, nsp, rel, kind in rows:
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


def human_bytes(n: int | None) -> str:
    if n is None:
        return "new"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_ms(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60000:.1f} min"


def _predictions(mset: files.MigrationSet, versions: set[int]) -> dict[int, list[Any]]:
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
    blocking = [lk for lk in stmt.locks if lk.blocks and lk.kind in _TABLE_KINDS]
    rewritten = [r for r in rewrites if r.statement == stmt.index and r.kind in _TABLE_KINDS]
    parts = []
    if blocking:
        lk = max(blocking, key=lambda x: (_STRENGTH.get(x.mode, 0), x.held_ms))
        parts.append(f"{lk.mode} on {lk.relation} held {human_ms(lk.held_ms)}")
    else:
        strongest = max(stmt.locks, key=lambda x: _STRENGTH.get(x.mode, 0), default=None)
        parts.append(f"no blocking lock (strongest: {strongest.mode} on {strongest.relation})" if strongest
                     else "no relation lock measured")
    for r in rewritten:
        parts.append(f"{r.relation} rewritten ({human_bytes(r.size_before)} -> {human_bytes(r.size_after)})")
    if stmt.error:
        parts.append("failed")
    return "; ".join(parts)


# -------------------------------------------------------------------------------------------- apply


class _Applier:
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
        blocks = _BLOCKS.get(mode)
        large = bool(blocks and names[1] in _TABLE_KINDS and size is not None and size >= self.large)
        return LockHold(names[0], names[1], mode, stmt, round(held_ms), size, blocks, large, observed)

    def run(self, migration: files.Migration, direction: str, target: int, version_before: int,
            predictions: list[Any]) -> MigrationReport:
        import psycopg

        from migrator.state import (
            HistoryEntry,
            history_statement,
            state_statements,
            statement_hash,
            write_history,
            write_state,
        )

        mf = migration.up if direction == "up" else migration.down
        assert mf is not None  # plan() only returns migrations with the file for the direction
        reason = _non_transactional_reason(mf.sql)
        report = MigrationReport(migration.version, migration.name, direction, str(mf.path), reason is None, reason)
        stmts = _statements(mf.sql)
        conn = self.conn
        before = _relations(conn)
        filenodes = {oid: r.filenode for oid, r in before.items() if r.filenode}
        changed: dict[int, int] = {}  # oid -> statement that first changed its relfilenode
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        # lock key -> (statement index, statement start, names)
        acquired: dict[tuple[int, str], tuple[int, float, tuple[str, str]]] = {}
        sampler: _LockSampler | None = None
        current: tuple[int, int, str] | None = None

        def entry(success: bool, error: str | None = None) -> Any:
            return HistoryEntry(
                version=migration.version, name=migration.name, direction=direction, checksum=mf.sha256,
                success=success, from_version=version_before, to_version=target, started_at=started,
                finished_at=datetime.now(UTC), duration_ms=int((time.perf_counter() - t0) * 1000),
                run_id=self.run_id, environment=f"rehearsal:{self.settings.environment}", error=error,
                statements_total=len(stmts), statements_done=len(stmts) if success else None,
                statement_hashes=[statement_hash(text) for _, _, text in stmts],
            )

        def note_rewrites(index: int) -> None:
            for oid, node in _filenodes(conn).items():
                if oid in filenodes and node != filenodes[oid] and oid not in changed:
                    changed[oid] = index

        try:
            if reason is None:
                conn.execute(b"BEGIN")
                conn.execute(f"SET LOCAL lock_timeout = '{self.lock_ms}ms'".encode())
                conn.execute(f"SET LOCAL statement_timeout = '{self.stmt_ms}ms'".encode())
                for i, current in enumerate(stmts, 1):
                    s0 = time.perf_counter()
                    sr = StatementReport(i, _line_col(mf.sql, current[0])[0], _short(current[2]), 0.0)
                    report.statements.append(sr)
                    conn.execute(current[2].encode())
                    sr.duration_ms = round((time.perf_counter() - s0) * 1000, 1)
                    for key, names in _own_locks(conn).items():
                        acquired.setdefault(key, (i, s0, names))
                    note_rewrites(i)
                current = None
                for query in state_statements(self.st, target, False):
                    conn.execute(query)
                conn.execute(history_statement(conn, self.st, entry(True)).encode())
                conn.execute(b"COMMIT")
                end = time.perf_counter()
                for key, (i, s0, names) in acquired.items():
                    report.statements[i - 1].locks.append(
                        self._hold(key, names, i, (end - s0) * 1000, before, "pg_locks after the statement"))
            else:
                write_state(conn, self.st, target, True)
                conn.execute(f"SET lock_timeout = '{self.lock_ms}ms'; SET statement_timeout = '{self.stmt_ms}ms'"
                             .encode())
                pid = int(conn.info.backend_pid)
                sampler = _LockSampler(self.scratch, pid)
                sampler.start()
                for i, current in enumerate(stmts, 1):
                    sr = StatementReport(i, _line_col(mf.sql, current[0])[0], _short(current[2]), 0.0)
                    report.statements.append(sr)
                    sampler.start_window()
                    s0 = time.perf_counter()
                    try:
                        conn.execute(current[2].encode())
                    finally:
                        sr.duration_ms = round((time.perf_counter() - s0) * 1000, 1)
                        seen = sampler.end_window()
                        for key, names in seen.items():
                            sr.locks.append(self._hold(key, names, i, sr.duration_ms, before, "sampled while it ran"))
                    if conn.info.transaction_status != 0:  # BEGIN in the file: its locks are still held
                        for key, names in _own_locks(conn).items():
                            acquired.setdefault(key, (i, s0, names))
                    note_rewrites(i)
                current = None
                if conn.info.transaction_status != 0:
                    raise MigratorError(f"{mf.path}: the file opens a transaction (BEGIN) that it never commits")
                conn.execute(b"RESET lock_timeout; RESET statement_timeout")
                with conn.transaction():
                    write_state(conn, self.st, target, False)
                    write_history(conn, self.st, entry(True))
        except (psycopg.Error, MigratorError) as exc:
            end = time.perf_counter()
            with contextlib.suppress(psycopg.Error):
                if conn.info.transaction_status != 0:
                    conn.execute(b"ROLLBACK")
            for key, (i, s0, names) in acquired.items():
                if not any(lk.relation == names[0] and lk.mode == key[1] for lk in report.statements[i - 1].locks):
                    report.statements[i - 1].locks.append(
                        self._hold(key, names, i, (end - s0) * 1000, before, "pg_locks after the statement"))
            self._fail(report, mf, current, exc)
        finally:
            if sampler is not None:
                sampler.close()
        report.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        after = _relations(conn)
        for oid, index in sorted(changed.items(), key=lambda x: x[1]):
            rel = before[oid]
            now = after.get(oid)
            if report.failed and reason is None:
                now = rel  # rolled back: the rewrite happened, its result was discarded
            report.rewrites.append(Rewrite(rel.name, rel.kind, index, rel.size, now.size if now else None))
        by_index = {s.index: s for s in report.statements}
        for f in predictions:
            k = next((s.index for s in reversed(report.statements) if f.line and s.line <= f.line), None)
            report.predictions.append(Prediction(
                f.rule, f.name, f.line, k, LOCK_RULES[f.rule], redact(f.message),
                _measured(by_index.get(k) if k else None, report.rewrites)))
        return report

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


# ----------------------------------------------------------------------------------------- rehearse


def resolve_backup(settings: Settings, key: str, destination: str | None) -> tuple[str, int | None]:
    """(key, size) of the backup to restore: ``latest`` is the newest complete backup."""
    from migrator.backup import BackupError, list_backups

    if key.strip() != "latest":
        infos = list_backups(settings, destination=destination, all_groups=True)
        size = next((b.size for b in infos if b.key == key.strip() or b.url == key.strip()), None)
        return key.strip(), size
    infos = [b for b in list_backups(settings, destination=destination) if getattr(b, "complete", True)]
    infos = [b for b in infos if b.created_at is not None]
    if not infos:
        raise BackupError(
            f"no complete backup of {settings.environment!r} to rehearse on; run `migrator backup` first, or pass "
            "--backup KEY (see `migrator backups list`)"
        )
    return infos[0].key, infos[0].size


def rehearse(
    settings: Settings,
    options: RehearsalOptions,
    *,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> RehearsalReport:
    """Restore a backup into a scratch database and rehearse the pending migrations there.

    A migration that would fail is reported (``report.ok`` False), not raised: the caller decides
    (the CLI exits 1, the migrate flow fails before approval). Refusals and unusable backups raise.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    started = time.perf_counter()
    migrations = files.load(settings.migrations_path)
    migrations.raise_if_errors()
    source = db.resolve(settings)
    server = _rehearsal_server(settings, options)
    allow = options.allow_same_server
    if allow is None:
        allow = settings.environment == "local"
    warnings, server_version = check_not_source(source, server, allow_same_server=allow,
                                                environment=settings.environment)
    key, size = resolve_backup(settings, options.backup, options.backup_destination)
    report = RehearsalReport(
        environment=settings.environment,
        database=_endpoint(source.conninfo)[2],
        backup_key=key,
        backup_size=size,
        scratch_server=server.display,
        scratch_database=None,
        kept=options.keep,
        large_table_bytes=options.large_table_bytes,
        warnings=warnings,
        server_version=server_version,
    )
    if options.max_backup_bytes is not None:
        if size is None:
            report.skipped = (f"rehearsal skipped: the size of backup {key} is unknown and rehearsal.max_backup_bytes "
                              f"is {human_bytes(options.max_backup_bytes)}")
        elif size > options.max_backup_bytes:
            report.skipped = (f"rehearsal skipped: backup {key} is {human_bytes(size)}, above rehearsal."
                              f"max_backup_bytes ({human_bytes(options.max_backup_bytes)}); nothing was measured")
        if report.skipped:
            report.warnings.append(report.skipped)
            say(report.skipped)
            report.total_seconds = round(time.perf_counter() - started, 3)
            return report
    name = _scratch_name(settings.environment)
    report.scratch_database = name
    settings = Settings(**{**settings.__dict__, "table": _table_spec(settings, source)})
    with _scratch_database(server, name, options.keep) as scratch_conninfo:
        scratch = prepare_url(scratch_conninfo)
        say(f"restoring {key} into scratch database {name} on {server.display}")
        _restore(settings, key, scratch_conninfo, options.backup_destination, report)
        say(f"restored in {report.restore_seconds:.1f} s")
        _apply_all(settings, scratch, migrations, options, report, say, run_id)
    report.total_seconds = round(time.perf_counter() - started, 3)
    if options.keep:
        report.warnings.append(f"scratch database {name} kept on {server.display} (--keep); drop it when done")
    return report


def _rehearsal_server(settings: Settings, options: RehearsalOptions) -> Connection:
    if options.scratch_url:
        return prepare_url(options.scratch_url)
    if settings.environment == "local":
        from migrator import embedded

        return prepare_url(embedded.server_url(settings.embedded_dir, database="postgres"))
    raise ConfigError(
        f"no rehearsal server for environment {settings.environment!r}: pass --scratch-url URL or set "
        f"rehearsal.server_url in deployments/{settings.environment}.yaml (never the source's server)"
    )


def _table_spec(settings: Settings, source: Connection) -> str | None:
    """The source's state table as a --table spec (its URL's x-migrations-table does not follow the
    scratch database's URL)."""
    if settings.table or source.table is None:
        return settings.table
    tn = state_table_name(settings, source.table)
    quote = lambda name: '"' + name.replace('"', '""') + '"'  # noqa: E731
    return f"{quote(tn.schema)}.{quote(tn.table)}" if tn.schema else quote(tn.table)


def _restore(settings: Settings, key: str, target: str, destination: str | None, report: RehearsalReport) -> None:
    from migrator.backup import restore_backup

    result = restore_backup(settings, key, target, destination=destination, no_owner=True)
    report.restore_seconds = round(result.duration_seconds, 3)
    report.backup_size = report.backup_size or result.size


def _apply_all(settings: Settings, scratch: Connection, migrations: files.MigrationSet, options: RehearsalOptions,
               report: RehearsalReport, say: Progress, run_id: str | None) -> None:
    from migrator.engine import Migrator
    from migrator.state import acquire_lock, ensure_tables, release_lock, resolve_table

    scratch_settings = Settings(**{**settings.__dict__, "database_url": scratch.conninfo})
    plan = Migrator(scratch_settings).plan(target=options.target_version)
    report.version_before = report.version_after = plan.version
    if plan.dirty:
        report.warnings.append(f"the backup records a DIRTY database at version {plan.version}; nothing rehearsed")
        raise MigratorError(
            f"backup {report.backup_key} records a dirty database at version {plan.version}: `up` would refuse it; "
            "fix the source's state first (`migrator status`)"
        )
    found = _predictions(migrations, {s.version for s in plan.steps})
    t0 = time.perf_counter()
    conn = db.connect(scratch)
    try:
        st = resolve_table(conn, state_table_name(settings, None))
        acquire_lock(conn, st, settings.lock_wait_seconds)
        try:
            ensure_tables(conn, st)
            applier = _Applier(conn, scratch, settings, st, options.large_table_bytes, run_id)
            for step in plan.steps:
                m = migrations.get(step.version)
                if m is None:
                    raise MigratorError(f"migration {step.version} vanished from {migrations.directory}")
                preds = found.get(m.version, []) if step.direction == "up" else []
                before = report.version_after if report.version_after is not None else -1
                mr = applier.run(m, step.direction, step.to_version, before, preds)
                report.migrations.append(mr)
                say(f"{m.version}/{step.direction[0]} {m.name} ({human_ms(mr.duration_ms)})"
                    + (f": WOULD FAIL at {mr.location}: {mr.error}" if mr.failed else ""))
                if mr.failed:
                    break
                report.version_after = step.to_version
        finally:
            with contextlib.suppress(Exception):
                if conn.info.transaction_status != 0:
                    conn.execute("ROLLBACK")
            with contextlib.suppress(Exception):
                release_lock(conn, st.lock_ids)
    finally:
        conn.close()
    report.apply_seconds = round(time.perf_counter() - t0, 3)
    report.estimate_seconds = round(sum(m.duration_ms for m in report.migrations) / 1000, 3)
