"""Settings from CLI options and environment, and golang-migrate URL compatibility.

A golang-migrate database URL can be pasted as is: its ``x-migrations-table``,
``x-migrations-table-quoted`` and ``x-statement-timeout`` options are honoured, the other ``x-``
options are accepted and ignored, and run-time parameters lib/pq passes to the server (such as
``search_path``) are turned into libpq ``options=-c ...`` so the session sees the same settings.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

from migrator.errors import ConfigError
from migrator.redact import MASK, redact, redact_url, register_secret, register_url
from migrator.urlparts import UrlError, has_scheme, split_url

DEFAULT_TABLE = "schema_migrations"
DEFAULT_LOCK_TIMEOUT = "10s"
DEFAULT_STATEMENT_TIMEOUT = "30min"
DEFAULT_LOCK_WAIT_SECONDS = 300.0
INT_MAX_MS = 2**31 - 1  # PostgreSQL's limit for lock_timeout and statement_timeout (about 24.8 days)
MAX_LOCK_WAIT_SECONDS = INT_MAX_MS // 1000

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
    allow_embedded: bool = False  # a non-local environment whose deployments YAML says embedded: true

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment, with explicit (non-None) overrides winning."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("DATABASE_URL"),  # set but empty is an error, not "embedded"
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
        if self.database_url is not None and not self.database_url.strip():
            raise ConfigError(
                "DATABASE_URL / --database-url is set but empty; give a postgres:// URL, or unset it to use "
                "the embedded database (local environment only)"
            )
        try:
            lock_wait = float(self.lock_wait_seconds)
        except (TypeError, ValueError):
            raise ConfigError(f"lock wait {self.lock_wait_seconds!r} is not a number of seconds; e.g. 300") from None
        self.lock_wait_seconds = check_lock_wait(lock_wait)
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
    """Parse a PostgreSQL-style duration (``500ms``, ``10s``, ``5min``, ``1h``, ``0``) into ms.

    PostgreSQL keeps lock_timeout and statement_timeout in an int of milliseconds, so anything
    above 2147483647 ms is refused here rather than by every migration at apply time.
    """
    m = _INTERVAL_RE.match(str(value))
    if not m:
        raise ConfigError(f"{setting}={value!r} is not a duration; use e.g. 500ms, 10s, 5min, 1h or 0 (off)")
    number = float(m.group(1))
    unit = m.group(3) or "ms"
    factor = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    ms = number * factor
    if ms > INT_MAX_MS:
        raise ConfigError(
            f"{setting}={value!r} is longer than PostgreSQL allows ({INT_MAX_MS} ms, about 24 days); "
            "use e.g. 30min or 0 (off)"
        )
    return max(1, round(ms)) if ms > 0 else 0  # 0.4ms must not become 0 (= no timeout)


def check_lock_wait(seconds: float, setting: str = "--lock-wait / MIGRATOR_LOCK_WAIT") -> float:
    """A finite number of seconds PostgreSQL can wait for (0 = do not wait)."""
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_LOCK_WAIT_SECONDS:
        raise ConfigError(
            f"{setting}={seconds!r} must be a number of seconds from 0 to {MAX_LOCK_WAIT_SECONDS} "
            "(about 24 days, PostgreSQL's lock_timeout limit); e.g. 300"
        )
    return seconds


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


SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")  # Debian/Ubuntu, Fedora/Arch, source builds
SECRET_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})


def socket_dir(port: str | None = None) -> str | None:
    """The machine's PostgreSQL socket folder for ``port`` (psql's default one if it exists there)."""
    name = f".s.PGSQL.{port or os.environ.get('PGPORT') or 5432}"
    for d in SOCKET_DIRS:
        if os.path.exists(os.path.join(d, name)):
            return d
    return None


def _not_a_url(setting: str, why: str) -> ConfigError:
    return ConfigError(
        f"{setting} cannot be read as a PostgreSQL URL: {why}. It is not shown, as it may hold a password; "
        "percent-encode special characters in the user and password (# %23, ? %3F, / %2F, @ %40, % %25)"
    )


def prepare_url(url: str, setting: str = "DATABASE_URL / --database-url") -> Connection:
    """Turn a golang-migrate/libpq URL into a libpq conninfo, extracting golang-migrate options.

    The user and password are re-encoded (so ``#``, ``?`` and ``@`` in a password reach the server
    intact); a URL without a host gets the machine's socket folder, as psql finds it.
    """
    register_url(url)
    url = url.strip()
    if not url:
        raise ConfigError(f"{setting} is empty; give a postgres:// URL (only the local environment may use none)")
    if not has_scheme(url):
        return _prepare_keyvalue(url, setting)
    try:
        parts = split_url(url)
    except UrlError as exc:
        raise _not_a_url(setting, str(exc)) from None
    if parts.scheme.lower() not in ("pgx", "pgx4", "pgx5", "postgres", "postgresql"):
        raise ConfigError(
            f"{setting} scheme {parts.scheme!r} is not PostgreSQL; use postgres://user@host:5432/db"
        )
    table, statement_timeout_ms, kept = _query_options(parts.query, setting)
    hosts = parts.hosts
    if not hosts.split(":")[0] and "host" not in dict(kept) and "hostaddr" not in dict(kept) and not _host_from_env():
        port = dict(kept).get("port") or (hosts.split(":", 1)[1] if ":" in hosts else None)
        found = socket_dir(port)
        if found:
            kept.append(("host", found))
    if parts.password:
        register_secret(quote(parts.password, safe=""))  # the form the conninfo (and libpq's errors) carry
    userinfo = ""
    if parts.user is not None:
        userinfo = quote(parts.user, safe="")
        if parts.password:
            userinfo += ":" + quote(parts.password, safe="")
        userinfo += "@"
    query_s = urlencode(kept, quote_via=quote)
    conninfo = f"postgresql://{userinfo}{hosts}{parts.path}" + (f"?{query_s}" if query_s else "")
    shown = [(k, MASK if k in SECRET_PARAMS else v) for k, v in kept]
    display_user = (quote(parts.user, safe="") + (":" + MASK if parts.password else "") + "@") if parts.user else ""
    display = f"postgresql://{display_user}{hosts}{parts.path}" + (
        f"?{urlencode(shown, quote_via=quote, safe='*/')}" if shown else ""
    )
    return Connection(
        conninfo=conninfo,
        display=redact(display),
        table=table,
        statement_timeout_ms=statement_timeout_ms,
    )


def _prepare_keyvalue(url: str, setting: str) -> Connection:
    """libpq key=value conninfo: passed through, with the socket folder when no host is given."""
    if not re.match(r"\s*[A-Za-z_]+\s*=", url):
        raise _not_a_url(setting, "it is neither scheme://... nor libpq key=value settings")
    if not re.search(r"(^|\s)host(addr)?\s*=", url) and not _host_from_env():
        kv_port = re.search(r"(?:^|\s)port\s*=\s*'?(\d+)", url)
        found = socket_dir(kv_port.group(1) if kv_port else None)
        if found:
            url += f" host={found}"
    return Connection(conninfo=url, display=redact_url(url))


def _query_options(query_s: str, setting: str) -> tuple[TableName | None, int | None, list[tuple[str, str]]]:
    """Split a URL query into golang-migrate's x- options and the libpq parameters to keep.

    Returns (state table, statement timeout in ms, libpq parameters); server run-time parameters
    (anything not a libpq keyword, e.g. ``search_path``) are folded into libpq's ``options``.
    """
    table: TableName | None = None
    statement_timeout_ms: int | None = None
    kept: list[tuple[str, str]] = []
    server_options: list[str] = []
    query = parse_qsl(query_s, keep_blank_values=True)
    first: dict[str, str] = {}
    for key, value in query:  # Go's url.Values.Get: the first value of a repeated key
        first.setdefault(key, value)
    flags = {name: _x_bool(first, name, setting) for name in X_BOOL_OPTIONS}
    for name in X_INT_OPTIONS:
        raw = first.get(name, "")
        if raw and not _GO_ATOI_RE.match(raw):
            raise ConfigError(
                f"{name}={raw!r} in {setting} is not a whole number; golang-migrate refuses it too "
                f"(e.g. {name}=10485760, or remove the option)"
            )
    quoted = flags["x-migrations-table-quoted"]
    if "x-migrations-table" in first:
        value = first["x-migrations-table"]
        if not value.strip():
            raise ConfigError(
                f"x-migrations-table in {setting} is empty; name the state table (e.g. "
                "x-migrations-table=schema_migrations) or remove the option"
            )
        # golang-migrate: without x-migrations-table-quoted the value is the bare table name
        table = _quoted_table(value, setting) if quoted else TableName(table=value)
    elif quoted:
        raise ConfigError(
            f"x-migrations-table-quoted is true in {setting} but there is no x-migrations-table (golang-migrate "
            'crashes on that URL); add x-migrations-table="schema"."table" or remove x-migrations-table-quoted'
        )
    if "x-statement-timeout" in first:
        value = first["x-statement-timeout"]
        if not value.isdigit() or int(value) > INT_MAX_MS:
            raise ConfigError(
                f"x-statement-timeout={value!r} in {setting} must be whole milliseconds from 0 to "
                f"{INT_MAX_MS} (PostgreSQL's limit)"
            )
        statement_timeout_ms = int(value)
    for key, value in query:
        if key.startswith("x-"):  # golang-migrate's own options; the others are accepted and ignored
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
    return table, statement_timeout_ms, kept


# golang-migrate reads its boolean options with Go's strconv.ParseBool and refuses anything else.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
X_BOOL_OPTIONS = ("x-migrations-table-quoted", "x-multi-statement")
X_INT_OPTIONS = ("x-multi-statement-max-size",)  # read with strconv.Atoi (migrator ignores the value)
_GO_ATOI_RE = re.compile(r"^[+-]?[0-9]+$")


def go_parse_bool(value: str) -> bool | None:
    """Go's ``strconv.ParseBool``: True, False, or None when Go would return an error."""
    if value in GO_TRUE:
        return True
    if value in GO_FALSE:
        return False
    return None


def _x_bool(first: dict[str, str], name: str, setting: str) -> bool:
    """A boolean ``x-`` option as golang-migrate reads it: absent or empty is false."""
    raw = first.get(name, "")
    if not raw:
        return False
    parsed = go_parse_bool(raw)
    if parsed is None:
        raise ConfigError(
            f"{name}={raw!r} in {setting} is not a boolean golang-migrate accepts (it refuses this URL too); "
            "use true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
        )
    return parsed


def _quoted_table(value: str, setting: str) -> TableName:
    """``x-migrations-table`` with ``x-migrations-table-quoted`` true: golang-migrate's checks."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        raise ConfigError(
            f"x-migrations-table in {setting} must be quoted when x-migrations-table-quoted is true, as "
            'golang-migrate requires: e.g. x-migrations-table="migrate"."schema_migrations" '
            "(or drop x-migrations-table-quoted for a bare table name)"
        )
    try:
        return parse_table(value)
    except ConfigError:
        raise ConfigError(
            f"x-migrations-table in {setting} is not \"table\" or \"schema\".\"table\" (golang-migrate refuses "
            'it too); e.g. x-migrations-table="migrate"."schema_migrations"'
        ) from None


def _host_from_env() -> bool:
    return bool(os.environ.get("PGHOST") or os.environ.get("PGHOSTADDR"))
