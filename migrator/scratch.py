"""Scratch databases next to a real one (rehearsals, round trips, restore drills), always dropped,
and the ones a killed process left behind found and dropped by the next run (issue 19).

A scratch database is named ``migrator_scratch_<purpose>_<host>_<pid>_<yyyymmddhhmmss>_<rand>``
(at most 63 bytes, PostgreSQL's limit): who made it and when (see ``migrator.leftover``). A kept one
(``rehearse --keep``) is ``migrator_kept_<purpose>_...``: asked for, so never swept.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import make_conninfo

from migrator import db, leftover
from migrator.config import Connection
from migrator.errors import ConfigError
from migrator.redact import redact

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "migrator_scratch_"
KEPT_PREFIX = "migrator_kept_"
_PURPOSE_MAX = 9  # 17 + 9 + 1 + 8 + 1 + 7 (pid) + 1 + 14 + 1 + 4 = 63
_NAME_RE = re.compile(r"^migrator_scratch_(?P<purpose>[a-z0-9]+)_[0-9a-f]{8}_\d{1,10}_\d{14}_[0-9a-f]{4}$")


def scratch_name(purpose: str, *, keep: bool = False) -> str:
    """A fresh scratch database name for ``purpose`` (``rehearsal``, ``roundtrip``, ``drill``)."""
    clean = re.sub(r"[^a-z0-9]", "", purpose.lower())[:_PURPOSE_MAX] or "scratch"
    name = f"{KEPT_PREFIX if keep else SCRATCH_PREFIX}{clean}_{leftover.maker_tag('_')}_{leftover.random_suffix()}"
    assert len(name.encode()) <= 63, name
    return name


@dataclass
class Sweep:
    """What a sweep of one server removed, and the leftovers it had to leave (and why)."""

    server: str
    removed: list[leftover.Removed] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (name, why) of leftovers it could not drop

    @property
    def freed_bytes(self) -> int:
        return sum(r.size or 0 for r in self.removed)

    def message(self) -> str | None:
        """One line for the person: what was removed and how much it freed (None: nothing to say)."""
        line = leftover.summary("leftover scratch database", "leftover scratch databases", self.removed)
        if line is not None:
            line += f" on {self.server}"
        return line


def sweep_scratch_databases(conn_info: Connection, *, max_age_hours: float = leftover.DEFAULT_MAX_AGE_HOURS,
                            say: Callable[[str], None] | None = None) -> Sweep:
    """Drop the scratch databases of processes that are gone (or older than ``max_age_hours``) on the
    server of ``conn_info``. Never one whose process is alive, never one with a connection: the
    DROP is without FORCE, so a session that appears meanwhile makes it fail (and the database
    stays). Best effort: a failure is logged and the caller goes on."""
    sweep = Sweep(conn_info.display)
    try:
        with db.connect(conn_info) as admin:
            rows = admin.execute(
                r"""SELECT d.datname::text,
                           CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END,
                           (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname
                                                                  AND a.pid <> pg_backend_pid())
                    FROM pg_database d WHERE d.datname LIKE 'migrator\_scratch\_%' ORDER BY 1"""
            ).fetchall()
            for name, size, sessions in rows:
                if not _NAME_RE.match(name):
                    continue
                maker = leftover.find_maker(name, "_")
                ok, why = leftover.removable(maker, None, max_age_hours=max_age_hours)
                if not ok:
                    continue
                if sessions:
                    sweep.kept.append((name, f"{why}, but {sessions} session(s) still use it"))
                    continue
                try:
                    admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.InvalidCatalogName:
                    continue  # another process's sweep dropped it first: gone, nothing to do by hand
                except psycopg.Error as exc:
                    sweep.kept.append((name, f"{why}, but it could not be dropped: {redact(str(exc).strip())}"))
                    continue
                sweep.removed.append(leftover.Removed(name, int(size) if size is not None else None, why))
    except ConfigError as exc:  # unreachable: the caller's own connection says so next, in one line
        log.info("could not look for leftover scratch databases on %s: %s", conn_info.display, redact(str(exc).strip()))
        return sweep
    except psycopg.Error as exc:  # the sweep must never stop the caller's own work
        log.warning("could not look for leftover scratch databases on %s: %s", conn_info.display,
                    redact(str(exc).strip()))
        return sweep
    for name, why in sweep.kept:
        log.warning("left the scratch database %s on %s: %s; drop it by hand when it is idle "
                    "(DROP DATABASE %s)", name, conn_info.display, why, name)
    line = sweep.message()
    if line:
        log.info("%s", line)
        if say is not None:
            say(line)
    return sweep


@contextlib.contextmanager
def scratch_database(conn_info: Connection, purpose: str = "scratch", *, name: str | None = None,
                     keep: bool = False, user: str = "the user", sweep: bool = True,
                     say: Callable[[str], None] | None = None) -> Iterator[str]:
    """Create a scratch database (``name``, else ``scratch_name(purpose)``) on the server of
    ``conn_info``; yield its conninfo.

    First (``sweep``) the leftovers of killed runs on that server are dropped (``say`` gets the one
    line saying what was freed). Dropped afterwards WITH (FORCE) unless ``keep``; a failed drop is
    logged, never raised, so that it cannot hide the caller's own outcome. ``user`` names whose
    CREATEDB the error asks for."""
    if sweep:
        sweep_scratch_databases(conn_info, say=say)
    given = name
    with db.connect(conn_info) as admin:
        for attempt in range(3):
            name = given or scratch_name(purpose, keep=keep)
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                break
            except psycopg.errors.DuplicateDatabase:
                if given or attempt == 2:  # two names of one process in one second, same random part
                    raise ConfigError(f"the scratch database {name} already exists on {conn_info.display}; "
                                      "retry, or drop it if nothing uses it") from None
            except psycopg.Error as exc:
                raise ConfigError(
                    f"cannot create the scratch database {name} on {conn_info.display}: "
                    f"{redact(str(exc).strip())}; {user} needs CREATEDB"
                ) from None
    assert name is not None
    try:
        yield make_conninfo(conn_info.conninfo, dbname=name)
    finally:
        if not keep:
            try:
                with db.connect(conn_info) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except Exception as exc:  # never hide the caller's own outcome behind a cleanup error
                log.warning("could not drop the scratch database %s on %s: %s", name, conn_info.display, redact(exc))
