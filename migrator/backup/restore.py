"""Restore: stream a checksummed backup into ``pg_restore --single-transaction`` on a target database.

Before anything touches the target: the backup must have a sha256, the target's PostgreSQL must be
at least the major version the dump was taken from (pg_restore cannot load a newer server's dump into
an older one: a PostgreSQL 18 dump fails on 15 with ``unrecognized configuration parameter
"transaction_timeout"``), and the target must be empty unless the caller confirmed ``clean``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from migrator.backup import pgtools
from migrator.backup.archive import major_of, read_header
from migrator.backup.catalog import metadata_int, resolve_key, tool_major
from migrator.backup.errors import BackupError, BackupIntegrityError
from migrator.backup.keys import open_destination
from migrator.backup.stores import Store
from migrator.config import Connection, Settings, prepare_url, state_table_name
from migrator.db import connect, resolve
from migrator.execute.state import read_state, resolve_table

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class RestoreResult:
    """A restore that pg_restore committed after the sha256 was confirmed."""

    key: str
    url: str
    target: str
    size: int
    sha256: str
    clean: bool
    backup_schema_version: int | None
    schema_version: int
    dirty: bool
    pg_restore: dict[str, object]
    duration_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Source:
    """The backup to restore, as resolved and checked before the target is looked at."""

    store: Store
    key: str
    url: str
    meta: dict[str, str]
    sha256: str
    dump_version: str | None  # the server version the dump was taken from


def _user_objects(conn: Any) -> int:
    row = conn.execute(
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
             AND n.nspname NOT LIKE 'pg_temp%'"""
    ).fetchone()
    return int(row[0]) if row else 0


def _server_version(conn: Any) -> tuple[str, int]:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int"
    ).fetchone()
    return str(row[0]).split(" ")[0], int(row[1]) // 10000


def dump_server_version(store: Store, key: str, meta: dict[str, str]) -> str | None:
    """The PostgreSQL version a backup was dumped from: its archive header (the truth), else the
    ``server-version`` metadata migrator recorded."""
    chunks = store.read(key, chunk_size=64 * 1024)
    try:
        first = next(iter(chunks), b"")
    finally:
        with contextlib.suppress(Exception):
            chunks.close()  # type: ignore[attr-defined]
    header = read_header(first)
    if header is not None and header.server_version:
        return header.server_version.split(" ")[0]
    return meta.get("server-version") or None


def _source(settings: Settings, key_or_latest: str, destination: str | None, database: str | None) -> _Source:
    store = open_destination(settings, destination)
    key = resolve_key(store, key_or_latest, settings, database)
    meta = store.head(key).metadata or {}
    sha = meta.get("sha256")
    url = store.url_for(key)
    if not sha:
        raise BackupIntegrityError(
            f"backup {url} has no sha256 in its metadata; it cannot be checked, refusing to restore it"
        )
    return _Source(store, key, url, meta, sha, dump_server_version(store, key, meta))


def _check_target(source: _Source, target: Connection, clean: bool) -> int:
    """The target's major version, once it is known to accept the dump (and to be empty unless ``clean``)."""
    with connect(target) as conn:
        version, major = _server_version(conn)
        existing = _user_objects(conn)
    dump_major = major_of(source.dump_version)
    if dump_major is not None and dump_major > major:
        raise BackupError(
            f"backup {source.url} is a dump of PostgreSQL {source.dump_version} but {target.display} runs PostgreSQL "
            f"{version}: pg_restore cannot load a newer major version's dump into an older server; restore into "
            f"PostgreSQL {dump_major} or newer (--target-url), or upgrade the target; nothing was restored"
        )
    if existing and not clean:
        raise BackupError(
            f"target database {target.display} is not empty ({existing} tables/sequences/indexes); restore into an "
            "empty database (--target-url), or pass --clean --yes to replace the objects in the backup"
        )
    return major


def restore_backup(
    settings: Settings,
    key_or_latest: str,
    target_url: str | None = None,
    clean: bool = False,
    *,
    destination: str | None = None,
    database: str | None = None,
    no_owner: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """Stream a backup into ``pg_restore`` on the target (default: the configured database).

    pg_restore runs in one transaction and its last input chunk is held back until the sha256 of the
    whole object matched: a corrupted backup is rolled back, never half-restored. ``clean`` (the
    caller's confirmation) drops and recreates the backup's objects in a non-empty target.
    """
    started = time.monotonic()
    source = _source(settings, key_or_latest, destination, database)
    target = prepare_url(target_url) if target_url else resolve(settings)
    major = _check_target(source, target, clean)
    tool = pgtools.find_tool("pg_restore", max(major, tool_major(source.meta)))
    dsn, env = pgtools.child_connection(target.conninfo)
    cmd = [str(tool.path), "--single-transaction", "--no-password", f"--dbname={dsn}"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    if no_owner:
        cmd += ["--no-owner", "--no-privileges"]
    log.info("running %s", pgtools.command_line(cmd))
    size, sha = _stream_into(cmd, env, source, target, tool, progress)
    version, dirty = _state_after(settings, target)
    return RestoreResult(
        key=source.key,
        url=source.url,
        target=target.display,
        size=size,
        sha256=sha,
        clean=clean,
        backup_schema_version=metadata_int(source.meta, "schema-version"),
        schema_version=version,
        dirty=dirty,
        pg_restore=tool.to_dict(),
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _stream_into(
    cmd: list[str],
    env: dict[str, str],
    source: _Source,
    target: Connection,
    tool: pgtools.Tool,
    progress: Progress | None,
) -> tuple[int, str]:
    """Feed the backup to pg_restore, holding the last chunk back until the sha256 matched; (size, sha256)."""
    h = hashlib.sha256()
    size = 0
    with pgtools.stderr_file() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env)
        alive = True
        try:
            held: bytes | None = None
            for chunk in source.store.read(source.key):
                h.update(chunk)
                size += len(chunk)
                if held is not None and alive:
                    alive = pgtools.feed(proc, held)
                held = chunk
                if progress:
                    progress(size)
            sha = h.hexdigest()
            if sha != source.sha256 or str(size) != source.meta.get("size", str(size)):
                pgtools.kill(proc)
                raise BackupIntegrityError(
                    f"backup {source.url} is corrupted (sha256 {sha}, {size} bytes; recorded {source.sha256}, "
                    f"{source.meta.get('size')} bytes); the restore was rolled back, the target is unchanged"
                )
            if held is not None and alive:
                pgtools.feed(proc, held)
            pgtools.close_stdin(proc)
            rc = proc.wait()
        except BaseException:
            pgtools.kill(proc)
            raise
        if rc != 0:
            raise BackupError(
                f"pg_restore ({tool.version}) into {target.display} failed with exit code {rc}: "
                f"{pgtools.read_stderr(err) or 'no message'}; it ran in one transaction, nothing was restored"
            )
    return size, sha


def _state_after(settings: Settings, target: Connection) -> tuple[int, bool]:
    with connect(target) as conn:
        st = resolve_table(conn, state_table_name(settings, target.table))
        return read_state(conn, st)
