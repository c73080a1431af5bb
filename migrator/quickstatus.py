"""``migrator status`` without psycopg (issue 23: status answers in <= 0.3 s).

The engine's ``Migrator.status`` needs ``import psycopg`` (~0.2 s of CPU here); status itself is
one connection and a few catalog reads. This module reads the same things through ``migrator.pq``
(libpq over ctypes) and builds the same ``Status``: version, dirty flag, applied (with the audit
trail's time and sha256) and pending migrations, INVALID indexes. Whenever its answer could differ
from the engine's it returns None and the caller asks the engine: a dirty database (the engine
also reads the failed attempt and the file's statements), a state or audit table the engine would
refuse, an unusual conninfo, the embedded server not running yet, any failed query.
``tests/test_quick_status.py`` checks both give the same ``Status`` in each state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from migrator import __version__
from migrator.config import Connection, Settings, prepare_url, state_table_name
from migrator.errors import ConfigError
from migrator.redact import redact
from migrator.status_model import INVALID_INDEXES_SQL, NO_VERSION, Status, build_status

if TYPE_CHECKING:
    from migrator import files, pq

log = logging.getLogger(__name__)

# what migrator.execute.state accepts as a state table and as its audit table (otherwise the engine says why)
_STATE_COLUMNS = [("version", "bigint", True), ("dirty", "boolean", True)]
_HISTORY_REQUIRED = {"id", "version", "direction", "success", "started_at", "finished_at", "duration_ms"}
_MAX_NAME_BYTES = 63
_RELATIONS = """
SELECT c.relname::text, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = $1 AND c.relname IN ($2, $3)
ORDER BY c.relname, a.attnum
"""
# a table information_schema lists (the engine's test: the user has some privilege on it)
_VISIBLE = "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ($2, $3)"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connection(settings: Settings) -> tuple[Connection, bool] | None:
    """(conninfo, is the embedded server) as ``db.resolve`` gives it, or None to let the engine resolve it."""
    if settings.database_url is not None:
        return prepare_url(settings.database_url), False
    if settings.environment != "local" and not settings.allow_embedded:
        return None  # db.resolve refuses with the one-line reason
    from migrator import embedded

    url = embedded.running_url(settings.embedded_dir)
    if url is None:
        return None  # not started yet: the engine starts it
    log.info("no DATABASE_URL: using the embedded PostgreSQL in %s", settings.embedded_dir)
    return prepare_url(url), True


def read(settings: Settings) -> Status | None:
    """The engine's ``Migrator.status()`` for a clean database, or None when the engine must answer."""
    from migrator import files, pq

    migrations = files.load(settings.migrations_path)
    resolved = _connection(settings)
    if resolved is None:
        return None
    conn_info, embedded = resolved
    try:
        conn = pq.Connection(conn_info.conninfo, application_name=f"migrator/{__version__}", connect_timeout="10",
                             client_encoding="UTF8")
    except pq.Unavailable:
        return None
    except pq.ConnectError as exc:
        if embedded:  # e.g. its database not created yet: the engine creates it
            return None
        lines = str(exc).strip().splitlines()
        msg = redact("connection failed: " + lines[0] if lines else "connection failed")  # psycopg's wording
        raise ConfigError(f"cannot connect to {conn_info.display}: {msg}; check DATABASE_URL / --database-url and "
                          "that the server is reachable") from None
    with conn:
        try:
            return _read(conn, settings, conn_info, migrations)
        except pq.QueryError as exc:
            log.debug("fast status gave way to the engine: %s", exc)
            return None


def _read(conn: pq.Connection, settings: Settings, conn_info: Connection,
          migrations: files.MigrationSet) -> Status | None:
    ((current_schema, database, tz_name),) = conn.query(
        "SELECT current_schema()::text, current_database()::text, current_setting('TimeZone')")
    name = state_table_name(settings, conn_info.table)
    schema = name.schema or current_schema
    history = name.table + "_history"
    if (not schema or max(len(schema.encode()), len(history.encode())) > _MAX_NAME_BYTES
            or schema in ("pg_catalog", "information_schema") or schema.startswith(("pg_toast", "pg_temp"))):
        return None
    shapes: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {}
    for relname, relkind, column, type_, notnull in conn.query(_RELATIONS, (schema, name.table, history)):
        shape = shapes.setdefault(relname, (relkind, []))
        if column is not None:
            shape[1].append((column, type_, notnull))
    state, audit = shapes.get(name.table), shapes.get(history)
    if state is not None and state != ("r", _STATE_COLUMNS):
        return None
    if audit is not None and (audit[0] != "r" or not {c for c, _t, _n in audit[1]} >= _HISTORY_REQUIRED):
        return None
    visible = {row[0] for row in conn.query(_VISIBLE, (schema, name.table, history))}
    version, dirty = NO_VERSION, False
    if name.table in visible:
        rows = conn.query(f"SELECT version, dirty FROM {_quote(schema)}.{_quote(name.table)} LIMIT 1")
        if rows:
            version, dirty = int(rows[0][0]), bool(rows[0][1])
    if dirty:
        return None  # the engine reads the failed attempt too
    applied_at: dict[int, tuple[str, str | None]] = {}
    if history in visible:
        tz = _tzinfo(tz_name)
        for v, epoch, checksum in conn.query(
                f"""SELECT DISTINCT ON (version) version, floor(extract(epoch FROM finished_at))::bigint, checksum
                    FROM {_quote(schema)}.{_quote(history)} WHERE direction = 'up' AND success
                    ORDER BY version, id DESC"""):
            if epoch is None:
                return None
            applied_at[int(v)] = (f"{datetime.fromtimestamp(epoch, tz):%Y-%m-%d %H:%M:%S %Z}", checksum)
    status = build_status(database, f"{schema}.{name.table}", migrations, version, dirty, applied_at)
    status.invalid_indexes = [f"{s}.{i} (on {t})" for s, i, t in conn.query(INVALID_INDEXES_SQL.replace("%%", "%"))]
    return status


def _tzinfo(name: str | None) -> tzinfo:
    """The session's TimeZone as psycopg gives datetimes (a ZoneInfo; UTC when Python does not know it)."""
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name or "UTC")
    except Exception:  # psycopg: an unknown zone logs a warning and uses UTC
        return UTC
