"""Scratch databases next to a real one (round-trip checks, restore drills), always dropped."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

from migrator import db
from migrator.config import Connection
from migrator.errors import ConfigError
from migrator.redact import redact

log = logging.getLogger(__name__)


@contextlib.contextmanager
def scratch_database(conn_info: Connection, prefix: str = "migrator_scratch", *, name: str | None = None,
                     keep: bool = False, user: str = "the user") -> Iterator[str]:
    """Create ``name`` (default ``{prefix}_{random}``) on the server of ``conn_info``; yield its conninfo.

    Dropped afterwards WITH (FORCE) unless ``keep``; a failed drop is logged, never raised, so that it
    cannot hide the caller's own outcome. ``user`` names whose CREATEDB the error asks for."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
    with db.connect(conn_info) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot create the scratch database {name} on {conn_info.display}: {redact(str(exc).strip())}; "
                f"{user} needs CREATEDB"
            ) from None
    try:
        yield make_conninfo(conn_info.conninfo, dbname=name)
    finally:
        if not keep:
            try:
                with db.connect(conn_info) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except Exception as exc:  # never hide the caller's own outcome behind a cleanup error
                log.warning("could not drop the scratch database %s on %s: %s", name, conn_info.display, redact(exc))
