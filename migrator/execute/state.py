"""Database state, byte-compatible with golang-migrate's PostgreSQL driver, plus our audit table.

golang-migrate keeps ``(version bigint not null primary key, dirty boolean not null)`` in one row
of ``schema_migrations`` in CURRENT_SCHEMA(); no row means "no version" (-1). Setting a version is
TRUNCATE then INSERT in one transaction; the row ``-1 | t`` exists only for a failed first down.
Its advisory lock id is ``crc32(schema NUL table NUL database) * 1486364155 mod 2^32``, where the
CLI uses the URL path (``/askfrank``) and Go code the bare name, so we take both ids.

The audit trail lives in ``{table}_history`` next to it; golang-migrate never reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import class_row, dict_row

from migrator import __version__
from migrator.config import TableName
from migrator.errors import ConfigError, LockTimeoutError, MigratorError
from migrator.redact import redact
from migrator.sql import COMMENT_TOKENS, scan

log = logging.getLogger(__name__)

NO_VERSION = -1
ADVISORY_LOCK_SALT = 1486364155


def advisory_lock_id(database_name: str, *additional_names: str) -> int:
    """golang-migrate's ``database.GenerateAdvisoryLockId``: extra names first, database last."""
    name = "\x00".join([*additional_names, database_name]) if additional_names else database_name
    return (zlib.crc32(name.encode("utf-8")) * ADVISORY_LOCK_SALT) % 2**32


@dataclass(frozen=True)
class StateTable:
    """The resolved state table of one database: its names and the two golang-migrate lock ids."""

    schema: str
    table: str
    database: str

    @property
    def qualified(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def history(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table + "_history")

    @property
    def lock_ids(self) -> tuple[int, int]:
        """(id used by the ``migrate`` CLI, id used by Go code via WithInstance)."""
        return (
            advisory_lock_id("/" + self.database, self.schema, self.table),
            advisory_lock_id(self.database, self.schema, self.table),
        )


def resolve_table(conn: psycopg.Connection, name: TableName) -> StateTable:
    """Fill in the schema (CURRENT_SCHEMA() unless given) and the database name."""
    row = conn.execute("SELECT current_schema(), current_database()").fetchone()
    assert row is not None
    current_schema, database = row
    schema = name.schema or current_schema
    if not schema:
        raise ConfigError(
            "the connection has no current schema (empty search_path); set search_path or use --table schema.table"
        )
    st = StateTable(schema=schema, table=name.table, database=database)
    check_state_table(conn, st)
    return st


MAX_NAME_BYTES = 63  # PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1)
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
_GOLANG_MIGRATE_COLUMNS = [("version", "bigint", True), ("dirty", "boolean", True)]
_HISTORY_REQUIRED = {"id", "version", "direction", "success", "started_at", "finished_at", "duration_ms"}
_TABLE_OPTION = "--table / MIGRATIONS_TABLE / x-migrations-table"


def check_state_table(conn: psycopg.Connection, st: StateTable) -> None:
    """Refuse a state table name that would touch something that is not ours (issue 10.11).

    Before anything is created: a name PostgreSQL would truncate (so ``{table}_history`` could
    collide with another table), a system schema, or an existing table (or view) that is not a
    golang-migrate state table / our audit table, e.g. an application's ``users`` or Rails'
    ``schema_migrations(version varchar)``.
    """
    where = f"{st.schema}.{st.table}"
    history = st.table + "_history"
    for label, name in (("schema", st.schema), ("audit table", history)):
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ConfigError(
                f"migrations table {where!r} is too long: its {label} name {name!r} has "
                f"{len(name.encode('utf-8'))} bytes and PostgreSQL truncates names to {MAX_NAME_BYTES}, so it could "
                f"collide with another table; use a table name of at most {MAX_NAME_BYTES - len('_history')} bytes "
                f"({_TABLE_OPTION})"
            )
    if st.schema in _SYSTEM_SCHEMAS or st.schema.startswith(("pg_toast", "pg_temp")):
        raise ConfigError(
            f"migrations table {where!r} is in the system schema {st.schema}; use a schema of your own, "
            f"e.g. public.schema_migrations ({_TABLE_OPTION})"
        )
    found = _relation_columns(conn, st.schema, st.table)
    if found is not None and found != ("r", _GOLANG_MIGRATE_COLUMNS):
        raise ConfigError(
            f"{where} exists but is not a golang-migrate state table ({_describe(found)}; expected "
            "version bigint not null, dirty boolean not null): it belongs to something else (an application "
            f"table, another migration tool); choose another name with {_TABLE_OPTION}. Nothing was changed"
        )
    found = _relation_columns(conn, st.schema, history)
    if found is not None and (found[0] != "r" or not {c for c, _t, _n in found[1]} >= _HISTORY_REQUIRED):
        raise ConfigError(
            f"{st.schema}.{history} exists but is not this tool's audit table ({_describe(found)}); "
            f"choose another migrations table name with {_TABLE_OPTION}. Nothing was changed"
        )


def _relation_columns(
    conn: psycopg.Connection, schema: str, name: str
) -> tuple[str, list[tuple[str, str, bool]]] | None:
    """(relkind, [(column, type, not null)]) of a relation, or None when there is none."""
    rows = conn.execute(
        """SELECT c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = %s AND c.relname = %s ORDER BY a.attnum""",
        (schema, name),
    ).fetchall()
    if not rows:
        return None
    return rows[0][0], [(c, t, bool(nn)) for _k, c, t, nn in rows if c is not None]


def _describe(found: tuple[str, list[tuple[str, str, bool]]]) -> str:
    kind = {"r": "table", "v": "view", "m": "materialized view", "p": "partitioned table", "f": "foreign table",
            "i": "index", "S": "sequence"}.get(found[0], "relation")
    cols = ", ".join(f"{c} {t}" for c, t, _n in found[1][:6]) + (", ..." if len(found[1]) > 6 else "")
    return f"a {kind} with columns {cols}" if cols else f"a {kind}"


def table_exists(conn: psycopg.Connection, st: StateTable, history: bool = False) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (st.schema, st.table + ("_history" if history else "")),
    ).fetchone()
    return row is not None


DIRECTIONS = ("up", "down", "force", "recover")

# Columns added after the first release, each with its type: ensure_tables adds the missing ones
# in place (ADD COLUMN IF NOT EXISTS), so databases audited by an older migrator keep their rows.
_AUDIT_COLUMNS = {
    "statements_total": "integer",  # statements in the file as the engine splits it
    "statements_done": "integer",  # statements that completed (rolled back ones included: the index reached)
    "failed_statement": "integer",  # 1-based index of the failing statement, NULL if none
    "statement_hashes": "text[]",  # statement_hash of each statement, in file order
    "action": "text",  # recoveries: revert | resume | mark_applied | leave_dirty
    "comment": "text",
    "transactional": "boolean",  # the file ran in one transaction (a failure changed nothing), NULL if unknown
}


def ensure_tables(conn: psycopg.Connection, st: StateTable) -> None:
    """Create the golang-migrate state table (exact DDL) and our history table, or upgrade the latter.

    Runs under the migration lock. ALTERs run only when something is missing: even a no-op
    ``ADD COLUMN IF NOT EXISTS`` takes an ACCESS EXCLUSIVE lock on the history table.
    """
    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (st.schema,)).fetchone():
        raise ConfigError(
            f"schema {st.schema!r} of the migrations table {st.schema}.{st.table} does not exist; create it "
            f"(CREATE SCHEMA {sql.Identifier(st.schema).as_string(conn)}) or choose another with {_TABLE_OPTION}"
        )
    if not table_exists(conn, st):
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, dirty boolean not null)"
            ).format(st.qualified)
        )
    if not table_exists(conn, st, history=True):
        conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                id bigserial PRIMARY KEY,
                run_id text,
                version bigint NOT NULL,
                name text,
                direction text NOT NULL,
                checksum text,
                success boolean NOT NULL,
                from_version bigint,
                to_version bigint,
                started_at timestamptz NOT NULL,
                finished_at timestamptz NOT NULL,
                duration_ms bigint NOT NULL,
                db_user text NOT NULL DEFAULT current_user,
                client_host text,
                client_addr inet DEFAULT inet_client_addr(),
                tool_version text NOT NULL,
                environment text,
                approved_by text,
                error text
            )"""
            ).format(st.history)
        )
    _upgrade_history(conn, st)
    repair_history_sequence(conn, st)


def repair_history_sequence(conn: psycopg.Connection, st: StateTable) -> int | None:
    """Move the audit table's id sequence past ``max(id)`` when it is behind; the id it moved to, else None.

    After a restore of the rows without their sequence, a template clone or a crash the sequence
    can hand out ids that exist, and every audited command then fails with a duplicate key (issue
    19). Called from ``ensure_tables``, under the migration lock every audit writer holds, so no
    row is inserted between the check and the ``setval``. Two index-only reads when nothing is wrong.
    """
    history = st.history.as_string(conn)
    try:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (history,)).fetchone()
        seq = row[0] if row else None
        if not seq:  # an id that is not serial/identity: ids are not ours to allocate
            return None
        row = conn.execute(
            sql.SQL("SELECT s.last_value, s.is_called, (SELECT max(id) FROM {}) FROM {} s").format(
                st.history, sql.SQL(seq)  # pg_get_serial_sequence returns the name quoted
            )
        ).fetchone()
        assert row is not None
        last, called, top = int(row[0]), bool(row[1]), row[2]
        next_id = last + 1 if called else last
        if top is None or next_id > int(top):
            return None
        conn.execute("SELECT setval(%s::regclass, %s, true)", (seq, int(top)))
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning("could not check the id sequence of the audit table %s.%s_history: %s", st.schema, st.table,
                    str(exc).splitlines()[0])
        return None
    log.warning(
        "the id sequence %s of the audit table %s.%s_history was behind its rows (next id %s, highest id %s): "
        "moved it on to %s so audit rows can be written (a restore without the sequence, a template clone or a crash)",
        seq, st.schema, st.table, next_id, top, int(top) + 1,
    )
    return int(top) + 1


def _history_columns(conn: psycopg.Connection, st: StateTable) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (st.schema, st.table + "_history"),
    ).fetchall()
    return {r[0] for r in rows}


def _upgrade_history(conn: psycopg.Connection, st: StateTable) -> None:
    """Add the audit columns and the direction CHECK (with 'recover') where an older table lacks them."""
    have = _history_columns(conn, st)
    missing = [(c, t) for c, t in _AUDIT_COLUMNS.items() if c not in have]
    checks = conn.execute(
        """SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
           WHERE c.conrelid = %s::regclass AND c.contype = 'c'""",
        (st.history.as_string(conn),),
    ).fetchall()
    direction_checks = [(n, d) for n, d in checks if "direction" in d]
    current = [n for n, d in direction_checks if all(f"'{x}'" in d for x in DIRECTIONS)]
    if not missing and current:
        return
    with conn.transaction():
        for column, type_ in missing:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} " + type_).format(
                    st.history, sql.Identifier(column)
                )
            )
        if not current:
            for name, _def in direction_checks:
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(st.history, sql.Identifier(name)))
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (direction IN ({}))").format(
                    st.history,
                    sql.Identifier((st.table + "_history")[:45] + "_direction_check"),
                    sql.SQL(", ").join(sql.Literal(d) for d in DIRECTIONS),
                )
            )


def read_state(conn: psycopg.Connection, st: StateTable) -> tuple[int, bool]:
    """(version, dirty); (-1, False) when the table is missing or empty, as golang-migrate."""
    if not table_exists(conn, st):
        return NO_VERSION, False
    row = conn.execute(sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(st.qualified)).fetchone()
    if row is None:
        return NO_VERSION, False
    return int(row[0]), bool(row[1])


def state_statements(st: StateTable, version: int, dirty: bool) -> list[sql.Composed]:
    """golang-migrate's SetVersion: empty the table, then INSERT unless (-1, clean).

    golang-migrate empties it with TRUNCATE; we DELETE: the table ends up identical, but DELETE
    does not take an ACCESS EXCLUSIVE lock (readers such as app start-up checks are not blocked)
    and avoids a new relation file per migration (measured: +1.2 ms per migration with TRUNCATE).
    """
    stmts = [sql.SQL("DELETE FROM {}").format(st.qualified)]
    if version >= 0 or (version == NO_VERSION and dirty):
        stmts.append(
            sql.SQL("INSERT INTO {} (version, dirty) VALUES ({}, {})").format(
                st.qualified, sql.Literal(int(version)), sql.Literal(bool(dirty))
            )
        )
    return stmts


def write_state(conn: psycopg.Connection, st: StateTable, version: int, dirty: bool) -> None:
    """Set the version (see ``state_statements``) in the caller's transaction, or in one of its own."""
    with conn.transaction():
        for stmt in state_statements(st, version, dirty):
            conn.execute(stmt)


TOKEN_HASH_PREFIX = "t:"


def statement_hash(text: str) -> str:
    """``t:`` + sha256 of a statement's PostgreSQL tokens joined by one space.

    ``resume`` compares these to tell whether the statements already run are unchanged in a fixed
    file: layout and comments between tokens do not count, but every token does byte for byte, so
    a change inside a string literal (``'a  b'`` -> ``'a b'``) is a change.
    """
    tokens = scan(text)
    if tokens is None:  # does not even scan: compare the text itself
        return TOKEN_HASH_PREFIX + hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
    raw = text.encode("utf-8")  # the scanner's offsets are byte offsets, end inclusive
    joined = b" ".join(raw[t.start:t.end + 1] for t in tokens if t.name not in COMMENT_TOKENS)
    return TOKEN_HASH_PREFIX + hashlib.sha256(joined).hexdigest()


def _legacy_statement_hash(text: str) -> str:
    """The hash older migrators wrote: sha256 of the text with every run of whitespace as one space."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def statement_matches(recorded: str, text: str) -> bool:
    """Whether ``text`` is the statement whose hash an audit row recorded (either hash format)."""
    if recorded.startswith(TOKEN_HASH_PREFIX):
        return recorded == statement_hash(text)
    return recorded == _legacy_statement_hash(text)


STARTED_ERROR = "started: not finished (the process was killed or the server crashed during this migration)"


@dataclass
class HistoryEntry:
    """One audit row; written in the migration's transaction, or on its own after a failure."""

    version: int
    name: str | None
    direction: str
    checksum: str | None
    success: bool
    from_version: int
    to_version: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    run_id: str | None
    environment: str | None
    error: str | None = None
    approved_by: str | None = None
    statements_total: int | None = None
    statements_done: int | None = None
    failed_statement: int | None = None
    statement_hashes: list[str] | None = None
    action: str | None = None
    comment: str | None = None
    transactional: bool | None = None


_HISTORY_COLUMNS = (
    "run_id", "version", "name", "direction", "checksum", "success", "from_version", "to_version",
    "client_host", "tool_version", "environment", "error", "approved_by", "statements_total",
    "statements_done", "failed_statement", "statement_hashes", "action", "comment", "transactional",
    "started_at", "finished_at", "duration_ms",
)  # fmt: skip


def _insert(st: StateTable, timings: sql.Composable) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in _HISTORY_COLUMNS)
    values = sql.SQL(", ").join([sql.Placeholder()] * (len(_HISTORY_COLUMNS) - 3))
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}, {})").format(st.history, columns, values, timings)


def write_history(conn: psycopg.Connection, st: StateTable, entry: HistoryEntry) -> int:
    """INSERT one audit row; returns its id. A row the table refuses raises AuditWriteError."""
    with audit_write(st, entry):
        row = conn.execute(
            _insert(st, sql.SQL("%s, %s, %s")) + sql.SQL(" RETURNING id"),
            (*_history_params(entry), entry.started_at, entry.finished_at, entry.duration_ms),
        ).fetchone()
    assert row is not None
    return int(row[0])


class AuditWriteError(MigratorError, psycopg.errors.DatabaseError):
    """The audit table refused a row (a constraint, a permission, a changed column): one line.

    Also a psycopg ``DatabaseError``, so code that handles a failed database write (a failed
    migration still reporting its own error, a recovery rolling back) treats it as before, and
    the CLI and the flows print the line instead of an internal error (exit 70).
    """


@contextlib.contextmanager
def audit_write(st: StateTable, entry: HistoryEntry) -> Iterator[None]:
    """Turn the audit table refusing a row into AuditWriteError (a lost connection or a cancel
    is left as it is: the engine's own handling says what state that leaves)."""
    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError, psycopg.errors.ProgrammingError) as exc:
        diag = exc.diag
        detail = diag.message_detail or ""
        reason = (diag.message_primary or str(exc).splitlines()[0]) + (
            f" ({detail})" if detail and not detail.startswith("Failing row contains") else ""  # the row: noise
        )
        what = f"{entry.direction} of version {entry.version}" + (f" ({entry.action})" if entry.action else "")
        raise AuditWriteError(
            f"could not write the audit row for the {what} to {st.schema}.{st.table}_history: {redact(reason)}; "
            "the step that row records was not made (it is written in the same transaction, or first). "
            "Fix the audit table (its constraints, permissions or columns: \\d "
            f"{st.schema}.{st.table}_history) and retry; `migrator status` shows the database's state"
        ) from exc


def history_statement(conn: psycopg.Connection, st: StateTable, entry: HistoryEntry) -> str:
    """The audit INSERT with its values inlined, for a batch: finished_at and the duration are
    taken server-side when the statement runs, i.e. right after the migration's statements."""
    query = _insert(
        st, sql.SQL("%s, clock_timestamp(), round(extract(epoch FROM clock_timestamp() - %s) * 1000)")
    )
    params = (*_history_params(entry), entry.started_at, entry.started_at)
    return psycopg.ClientCursor(conn).mogrify(query, params)


def update_progress(conn: psycopg.Connection, st: StateTable, row_id: int, statements_done: int) -> None:
    """Record on a "started" row that one more statement of a non-transactional file completed."""
    conn.execute(
        sql.SQL("UPDATE {} SET statements_done = %s WHERE id = %s").format(st.history), (statements_done, row_id)
    )


def complete_history(conn: psycopg.Connection, st: StateTable, row_id: int, entry: HistoryEntry) -> None:
    """Finish a "started" row: outcome, error, progress and timings (in the caller's transaction)."""
    conn.execute(
        sql.SQL(
            """UPDATE {} SET success = %s, error = %s, statements_done = %s, failed_statement = %s,
               to_version = %s, finished_at = %s, duration_ms = %s WHERE id = %s"""
        ).format(st.history),
        (
            entry.success, entry.error, entry.statements_done, entry.failed_statement, entry.to_version,
            entry.finished_at, entry.duration_ms, row_id,
        ),
    )


def _history_params(entry: HistoryEntry) -> tuple[object, ...]:
    """Values of the history columns but the timings, in ``_HISTORY_COLUMNS`` order."""
    return (
        entry.run_id,
        entry.version,
        entry.name,
        entry.direction,
        entry.checksum,
        entry.success,
        entry.from_version,
        entry.to_version,
        socket.gethostname(),
        __version__,
        entry.environment,
        entry.error,
        entry.approved_by,
        entry.statements_total,
        entry.statements_done,
        entry.failed_statement,
        entry.statement_hashes,
        entry.action,
        entry.comment,
        entry.transactional,
    )


def read_history(conn: psycopg.Connection, st: StateTable, limit: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    if not table_exists(conn, st, history=True):
        return []

    q = sql.SQL("SELECT * FROM {} ORDER BY id DESC").format(st.history)
    if limit:
        q += sql.SQL(" LIMIT {}").format(sql.Literal(int(limit)))
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(q).fetchall())


@dataclass
class Attempt:
    """One audit row, as ``last_attempt`` reads it."""

    id: int
    version: int
    name: str | None
    direction: str
    checksum: str | None
    success: bool
    error: str | None
    statements_total: int | None
    statements_done: int | None
    failed_statement: int | None
    statement_hashes: list[str] | None
    action: str | None
    started_at: datetime
    finished_at: datetime
    run_id: str | None
    environment: str | None
    approved_by: str | None
    comment: str | None
    from_version: int | None = None
    to_version: int | None = None
    transactional: bool | None = None


_ATTEMPT_FIELDS = [f.name for f in fields(Attempt)]


def last_attempt(conn: psycopg.Connection, st: StateTable, version: int | None = None) -> Attempt | None:
    """The newest up/down audit row for ``version`` (or the newest overall when None); None if there is none.

    A table from before the audit columns existed is read as it is (the new fields are None).
    """
    if not table_exists(conn, st, history=True):
        return None
    have = _history_columns(conn, st)
    select = sql.SQL(", ").join(
        sql.Identifier(f) if f in have else sql.SQL("NULL AS {}").format(sql.Identifier(f)) for f in _ATTEMPT_FIELDS
    )
    q = sql.SQL("SELECT {} FROM {} WHERE direction IN ('up', 'down')").format(select, st.history)
    params: tuple[object, ...] = ()
    if version is not None:
        q += sql.SQL(" AND version = %s")
        params = (version,)

    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        return cur.execute(q + sql.SQL(" ORDER BY id DESC LIMIT 1"), params).fetchone()


def recovery_after(conn: psycopg.Connection, st: StateTable, after_id: int, action: str) -> Attempt | None:
    """The newest ``recover`` row of ``action`` (resume, revert) after audit row ``after_id`` that
    recorded statement progress, or None."""
    if not table_exists(conn, st, history=True):
        return None
    have = _history_columns(conn, st)
    select = sql.SQL(", ").join(
        sql.Identifier(f) if f in have else sql.SQL("NULL AS {}").format(sql.Identifier(f)) for f in _ATTEMPT_FIELDS
    )

    q = sql.SQL("SELECT {} FROM {} WHERE direction = 'recover' AND action = %s AND id > %s "
                "AND statements_done IS NOT NULL ORDER BY id DESC LIMIT 1").format(select, st.history)
    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        return cur.execute(q, (action, after_id)).fetchone()


@dataclass
class AttemptProgress:
    """How far a failed file got, in both directions: the failed attempt moved on by the newest
    resume after it (``done`` statements ran), and a revert after that which ran part of the down
    file outside a transaction (``reverted`` of its statements; None when no revert changed anything).
    Every recovery row after the failed attempt belongs to that incident: a new up/down would be a
    newer attempt. ``row`` is the row the progress comes from (the attempt or its last resume)."""

    row: Attempt
    done: int
    revert: Attempt | None = None

    @property
    def reverted(self) -> int | None:
        return None if self.revert is None else int(self.revert.statements_done or 0)


def progress_of(conn: psycopg.Connection, st: StateTable, attempt: Attempt) -> AttemptProgress:
    """The failed ``attempt``'s progress after the recovery rows that followed it (see ``AttemptProgress``)."""
    row = recovery_after(conn, st, attempt.id, "resume") or attempt
    p = AttemptProgress(row, int(row.statements_done or 0))
    revert = recovery_after(conn, st, row.id, "revert")
    outside = revert is not None and not revert.success and not revert.transactional
    if outside and revert is not None and ((revert.statements_done or 0) > 0 or revert.error == STARTED_ERROR):
        p.revert = revert
    return p


def last_applied_ups(conn: psycopg.Connection, st: StateTable) -> dict[int, tuple[datetime, str | None]]:
    """(finished_at, sha256) of each version's last successful up in the audit trail."""
    if not table_exists(conn, st, history=True):
        return {}
    rows = conn.execute(
        sql.SQL(
            """SELECT DISTINCT ON (version) version, finished_at, checksum FROM {}
            WHERE direction = 'up' AND success ORDER BY version, id DESC"""
        ).format(st.history)
    ).fetchall()
    return {int(v): (t, c) for v, t, c in rows}


def applied_checksums(conn: psycopg.Connection, st: StateTable) -> dict[int, str]:
    """sha256 of the up file of each version as last successfully applied (for drift checks)."""
    return {v: c for v, (_t, c) in last_applied_ups(conn, st).items() if c}


def _lock_holder(conn: psycopg.Connection, lock_id: int) -> str:
    row = conn.execute(
        """SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'),
                  a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s::bigint::oid
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           LIMIT 1""",
        (lock_id,),
    ).fetchone()
    if not row:
        return "another session"
    pid, app, addr, started = row
    return f"pid {pid} ({app or 'unknown application'}, {addr}, connected {started:%Y-%m-%d %H:%M:%S %Z})"


def acquire_lock(
    conn: psycopg.Connection, st: StateTable, wait_seconds: float, stop: Callable[[], bool] | None = None
) -> None:
    """Take both golang-migrate advisory locks (session level), waiting at most ``wait_seconds``.

    The wait is a poll of ``pg_try_advisory_lock`` with backoff from an idle autocommit session,
    never a blocking ``pg_advisory_lock()``: a statement waiting inside the server holds a
    snapshot, and ``CREATE INDEX CONCURRENTLY`` in the running migration waits for every older
    snapshot, so a blocked waiter deadlocked with it (issue 10.1). Between polls this session is
    idle and holds nothing. ``stop`` (a cancel request) ends the wait early with LockWaitStopped.
    """
    deadline = time.monotonic() + max(0.0, wait_seconds)
    taken: list[int] = []
    for lock_id in st.lock_ids:
        delay = 0.02
        while not _try_lock(conn, lock_id):
            if stop is not None and stop():
                release_lock(conn, taken)
                raise LockWaitStopped(f"stopped while waiting for the migration lock on {st.schema}.{st.table}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = _lock_holder(conn, lock_id)
                release_lock(conn, taken)
                raise LockTimeoutError(
                    f"migration lock {lock_id} on {st.database}.{st.schema}.{st.table} is held by {holder}; "
                    f"gave up after {wait_seconds:g}s. Another migrator or golang-migrate run is in progress: "
                    "wait for it, or raise --lock-wait"
                )
            if delay >= 0.5:
                log.info("waiting for the migration lock held by %s", _lock_holder(conn, lock_id))
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, 1.0)
        taken.append(lock_id)
    log.debug("took advisory locks %s", st.lock_ids)


class LockWaitStopped(Exception):
    """A cancel request arrived while waiting for the lock (nothing was taken or changed)."""


def _try_lock(conn: psycopg.Connection, lock_id: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,)).fetchone()
    return bool(row and row[0])


def release_lock(conn: psycopg.Connection, ids: tuple[int, ...] | list[int]) -> None:
    if conn.closed:  # the session is gone (server crash, kill): so are its advisory locks
        return
    for lock_id in reversed(list(ids)):
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        except Exception as exc:  # the session ending releases it anyway
            log.warning("could not release advisory lock %s: %s", lock_id, exc)
