"""Scratch databases next to a real one (round-trip checks, restore drills), always dropped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from migrator import db
from migrator.config import Connection
from migrator.errors import ConfigError
from migrator.redact import redact


@contextlib.contextmanager
def scratch_database(conn_info: Connection, prefix: str) -> Iterator[str]:
    """Create ``{prefix}_{random}`` on the server of ``conn_info``; yield its conninfo; drop it."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with db.connect(conn_info) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot create the scratch database {name} on {conn_info.display}: {redact(str(exc).strip())}; "
                "the user needs CREATEDB"
            ) from None
    try:
        yield make_conninfo(conn_info.conninfo, dbname=name)
    finally:
        with contextlib.suppress(Exception), db.connect(conn_info) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
