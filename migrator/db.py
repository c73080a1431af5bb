"""Connections: resolve the configured or embedded database and turn libpq failures into
one-line errors that name the (redacted) target and say what to check."""

from __future__ import annotations

import logging

import psycopg

from migrator import __version__, embedded
from migrator.config import Connection, Settings, prepare_url
from migrator.errors import ConfigError
from migrator.redact import redact

log = logging.getLogger(__name__)


def resolve(settings: Settings) -> Connection:
    """The connection to use: DATABASE_URL, or the embedded server when none is configured.

    Fail closed: only the ``local`` environment (or one that allows it explicitly) may use the
    embedded server; any other stops here, before connecting anywhere.
    """
    url = settings.database_url
    if url is None:
        if settings.environment != "local" and not settings.allow_embedded:
            raise ConfigError(
                f"environment {settings.environment!r} has no database URL: set DATABASE_URL or --database-url "
                "(only the local environment may use the embedded PostgreSQL); nothing was run"
            )

        url = embedded.server_url(settings.embedded_dir)
        log.info("no DATABASE_URL: using the embedded PostgreSQL in %s", settings.embedded_dir)
    return prepare_url(url)


def connect(conn_info: Connection, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection; failures become ConfigError with the redacted target."""
    try:
        return psycopg.connect(
            conn_info.conninfo,
            autocommit=autocommit,
            application_name=f"migrator/{__version__}",
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        msg = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise ConfigError(
            f"cannot connect to {conn_info.display}: {msg}; check DATABASE_URL / --database-url and that "
            "the server is reachable"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid connection settings {conn_info.display}: {redact(exc)}") from None
