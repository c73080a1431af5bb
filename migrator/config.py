"""Settings from CLI options and environment, and golang-migrate URL compatibility.

A golang-migrate database URL can be pasted as is: its ``x-migrations-table``,
``x-migrations-table-quoted`` and ``x-statement-timeout`` options are honoured, the other ``x-``
options are accepted and ignored, and run-time parameters lib/pq passes to the server (such as
``search_path``) are turned into libpq ``options=-c ...`` so the session sees the same settings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from migrator.errors import ConfigError
from migrator.redact import redact_url, register_secret, register_url

DEFAULT_TABLE = "schema_migrations"
DEFAULT_LOCK_TIMEOUT = "10s"
DEFAULT_STATEMENT_TIMEOUT = "30min"
DEFAULT_LOCK_WAIT_SECONDS = 300.0

# libpq connection keywords (PostgreSQL 15-18); anything else in a URL query is a server parameter.
LIBPQ_KEYWORDS = frozenset(
    """host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout
    client_encoding options application_name fallback_application_name keepalives keepalives_idle
    keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode sslnegotiation
    requiressl sslcompression sslcert sslkey sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl
    sslcrldir sslsni requirepeer ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib
    gssdelegation service target_session_attrs load_balance_hosts min_protocol_version
    max_protocol_version scram_client_key scram_server_key oauth_issuer oauth_client_id
    oauth_client_secret oauth_scope""".split()
)
_INTERVAL_RE = re.compile(r"^\s*(\d+(\.\d+)?)\s*(ms|s|min|h|d)?\s*$")
_IDENT_RE = re.compile(r'^(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)$')


@dataclass(frozen=True)
class TableName:
    """The state table; ``schema`` None means PostgreSQL's CURRENT_SCHEMA(), as golang-migrate."""

    table: str = DEFAULT_TABLE
    schema: str | None = None


@dataclass(frozen=True)
class Connection:
    """A libpq-ready conninfo plus what golang-migrate options in the URL asked for."""

    conninfo: str
    display: str
    table: TableName | None = None
    statement_timeout_ms: int | None = None


@dataclass
class Settings:
    """Everything a command needs; built once by the CLI or by a Prefect task."""

    database_url: str | None = None
    migrations_path: Path = Path("migrations")
    table: str | None = None
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
    run_id: str | None = None
    environment: str = "local"
    embedded_dir: Path = Path(".migrator/pgdata")
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_format: str = "json"
    backup_url: str | None = None
    flow_run_url: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment, with explicit (non-None) overrides winning."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("DATABASE_URL") or None,
            "migrations_path": Path(env.get("MIGRATIONS_PATH") or "migrations"),
            "table": env.get("MIGRATIONS_TABLE") or None,
            "lock_timeout": env.get("MIGRATOR_LOCK_TIMEOUT") or DEFAULT_LOCK_TIMEOUT,
            "statement_timeout": env.get("MIGRATOR_STATEMENT_TIMEOUT") or DEFAULT_STATEMENT_TIMEOUT,
            "lock_wait_seconds": _float_env("MIGRATOR_LOCK_WAIT", DEFAULT_LOCK_WAIT_SECONDS),
            "run_id": env.get("MIGRATOR_RUN_ID") or None,
            "environment": env.get("MIGRATOR_ENV") or "local",
            "embedded_dir": Path(env.get("MIGRATOR_EMBEDDED_DIR") or ".migrator/pgdata"),
            "webhook_url": env.get("WEBHOOK_URL") or None,
            "webhook_secret": env.get("WEBHOOK_SECRET") or None,
            "webhook_format": env.get("WEBHOOK_FORMAT") or "json",
            "backup_url": env.get("BACKUP_URL") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Fail early, naming the setting, on malformed values."""
        register_url(self.database_url)
        register_url(self.webhook_url)
        register_url(self.backup_url)
        register_secret(self.webhook_secret)
        if self.webhook_format not in ("json", "slack"):
            raise ConfigError(f"WEBHOOK_FORMAT / --webhook-format={self.webhook_format!r}: use json or slack")
        parse_interval_ms(self.lock_timeout, "--lock-timeout / MIGRATOR_LOCK_TIMEOUT")
        parse_interval_ms(self.statement_timeout, "--statement-timeout / MIGRATOR_STATEMENT_TIMEOUT")
        if self.lock_wait_seconds < 0:
            raise ConfigError("--lock-wait / MIGRATOR_LOCK_WAIT must be >= 0 seconds")
        if self.table is not None:
            parse_table(self.table)


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds; e.g. {name}=120") from None


def parse_interval_ms(value: str, setting: str) -> int:
    """Parse a PostgreSQL-style duration (``500ms``, ``10s``, ``5min``, ``1h``, ``0``) into ms."""
    m = _INTERVAL_RE.match(str(value))
    if not m:
        raise ConfigError(f"{setting}={value!r} is not a duration; use e.g. 500ms, 10s, 5min, 1h or 0 (off)")
    number = float(m.group(1))
    unit = m.group(3) or "ms"
    factor = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    return int(number * factor)


def _unquote_ident(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


def parse_table(spec: str) -> TableName:
    """``table``, ``schema.table`` or golang-migrate's quoted ``"schema"."table"``."""
    spec = spec.strip()
    parts: list[str] = []
    buf = ""
    in_quote = False
    for ch in spec:
        if ch == '"':
            in_quote = not in_quote
            buf += ch
        elif ch == "." and not in_quote:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    if not parts or len(parts) > 2 or not all(_IDENT_RE.match(p) for p in parts):
        raise ConfigError(
            f"migrations table {spec!r} is not a valid name; use table, schema.table or \"schema\".\"table\""
        )
    names = [_unquote_ident(p) for p in parts]
    if len(names) == 2:
        return TableName(table=names[1], schema=names[0])
    return TableName(table=names[0])


def state_table_name(settings: Settings, url_table: TableName | None) -> TableName:
    """--table / MIGRATIONS_TABLE, else the URL's x-migrations-table, else schema_migrations."""
    if settings.table:
        return parse_table(settings.table)
    return url_table or TableName()


def prepare_url(url: str) -> Connection:
    """Turn a golang-migrate/libpq URL into a libpq conninfo, extracting golang-migrate options."""
    register_url(url)
    url = url.strip()
    if "://" not in url:
        # libpq key=value conninfo: pass through untouched
        return Connection(conninfo=url, display=redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL / --database-url is not a valid URL ({exc}): {redact_url(url)}") from None
    scheme = parts.scheme.lower()
    if scheme in ("pgx", "pgx4", "pgx5", "postgres", "postgresql"):
        scheme = "postgresql"
    else:
        raise ConfigError(
            f"DATABASE_URL scheme {parts.scheme!r} is not PostgreSQL; use postgres://user@host:5432/db"
        )
    table: TableName | None = None
    statement_timeout_ms: int | None = None
    kept: list[tuple[str, str]] = []
    server_options: list[str] = []
    query = parse_qsl(parts.query, keep_blank_values=True)
    qdict = dict(query)
    for key, value in query:
        if key == "x-migrations-table":
            # golang-migrate: without x-migrations-table-quoted the value is the bare table name
            quoted = qdict.get("x-migrations-table-quoted", "").lower() in ("1", "true")
            table = parse_table(value) if quoted else TableName(table=value)
        elif key == "x-statement-timeout":
            try:
                statement_timeout_ms = int(value)
            except ValueError:
                raise ConfigError(f"x-statement-timeout={value!r} in DATABASE_URL must be milliseconds") from None
        elif key.startswith("x-"):
            continue
        elif key in LIBPQ_KEYWORDS:
            kept.append((key, value))
        else:
            escaped = value.replace(" ", "\\ ")
            server_options.append(f"-c {key}={escaped}")
    if server_options:
        existing = dict(kept).get("options")
        kept = [(k, v) for k, v in kept if k != "options"]
        kept.append(("options", " ".join(([existing] if existing else []) + server_options)))
    conninfo = urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept, quote_via=quote), ""))
    return Connection(
        conninfo=conninfo,
        display=redact_url(conninfo),
        table=table,
        statement_timeout_ms=statement_timeout_ms,
    )
