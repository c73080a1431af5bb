"""Rehearsal: apply the pending migrations to a restored copy of the database first, and measure
what they lock, for how long, and what they rewrite.

A backup (the newest complete one, or a given key) is restored into a scratch database on a
rehearsal server that is not the source's server/database; the pending migrations then run there
as ``up`` runs them (same statement splitting, same transactional / non-transactional paths, same
lock and statement timeouts, same version bookkeeping), one statement at a time so that after each
statement the backend's own ``pg_locks`` rows can be read inside the still-open transaction: a
lock first seen after statement k was taken by statement k and is held until COMMIT. Statements of
a non-transactional file (CREATE INDEX CONCURRENTLY...) commit by themselves, so a second
connection samples their locks while they run. Relation sizes and ``relfilenode`` are read before
and after each migration: a changed relfilenode means the table was rewritten.

The source database is never written to: it is only read once, to prove the rehearsal server is
another database. The scratch database is dropped afterwards unless ``keep``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from migrator import db, embedded, files
from migrator.backup import BackupError, list_backups, restore_backup
from migrator.config import Connection, Settings, prepare_url, state_table_name
from migrator.engine import Migrator
from migrator.errors import ConfigError, MigratorError
from migrator.execute.state import acquire_lock, ensure_tables, release_lock, resolve_table
from migrator.rehearse.apply import Applier, lock_predictions
from migrator.rehearse.model import (
    DEFAULT_LARGE_TABLE_BYTES,
    RehearsalReport,
    RehearsalStoppedError,
    human_bytes,
    human_ms,
)
from migrator.scratch import scratch_database

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

@dataclass
class RehearsalOptions:
    """How to rehearse: which backup, on which server, and what counts as a large table."""

    backup: str = "latest"
    scratch_url: str | None = None  # a URL of the rehearsal server (its database is only the admin one)
    backup_destination: str | None = None  # where the backups are (default: settings.backup_url)
    keep: bool = False
    large_table_bytes: int = DEFAULT_LARGE_TABLE_BYTES
    max_backup_bytes: int | None = None
    allow_same_server: bool | None = None  # None: only for the local environment
    target_version: int | None = None


def deployment_rehearsal(environment: str, directory: Path | None = None) -> dict[str, Any]:
    """The ``rehearsal:`` mapping of ``deployments/<environment>.yaml`` ({} when absent).

    Read here (not through the Prefect tasks) so that the CLI can use it without importing Prefect.
    """
    base = directory or Path(os.environ.get("MIGRATOR_DEPLOYMENTS_DIR") or "deployments")
    path = base / f"{environment}.yaml"
    if not path.exists():
        return {}

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    section = raw.get("rehearsal") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: rehearsal must be a mapping (enabled, server_url, max_backup_bytes, ...)")
    return section


def parse_bytes(value: object, setting: str) -> int:
    """``1073741824``, ``500MB``, ``10GiB``... as bytes; a clear error naming ``setting`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{setting}={value!r} is not a size; use bytes or e.g. 500MB, 20GB")
    unit = (m.group(2) or "b").lower().rstrip("b").rstrip("i") or "b"
    factor = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    return int(float(m.group(1)) * factor)


# -------------------------------------------------------------------------------- same-server guard


def _endpoint(conninfo: str) -> tuple[str, str, str]:
    """(host, port, database) as libpq would use them; localhost spellings folded together."""
    p = conninfo_to_dict(conninfo)
    host = str(p.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
    if host in ("localhost", "127.0.0.1", "::1"):
        host = "localhost"
    port = str(p.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(p.get("user") or os.environ.get("PGUSER") or "")
    dbname = str(p.get("dbname") or os.environ.get("PGDATABASE") or user)
    return host, port, dbname


def _identity(conn: psycopg.Connection) -> tuple[str | None, str, str]:
    """(cluster system identifier or None when not readable, current database, server version)."""
    version = str(conn.execute("SHOW server_version").fetchone()[0]).split(" ")[0]  # type: ignore[index]
    dbname = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        return (str(row[0]) if row else None), dbname, version
    except psycopg.Error:
        return None, dbname, version


def check_not_source(
    source: Connection, scratch: Connection, *, allow_same_server: bool, environment: str
) -> tuple[list[str], str]:
    """Refuse a rehearsal server that is the source database (or its server, unless allowed).

    Returns (warnings, scratch server version). The URL check runs before any connection; then
    the cluster's system identifier proves it for aliases (a socket path vs 127.0.0.1, a DNS name).
    """
    warnings: list[str] = []
    src_ep, scr_ep = _endpoint(source.conninfo), _endpoint(scratch.conninfo)
    if src_ep == scr_ep:
        raise ConfigError(
            f"refusing to rehearse: the rehearsal server URL {scratch.display} is the source database itself "
            f"({src_ep[0]}:{src_ep[1]}/{src_ep[2]}); set --scratch-url / rehearsal.server_url to another server"
        )
    try:
        conn = db.connect(scratch)
    except ConfigError as exc:
        reason = str(exc).split("; check ")[0]
        raise ConfigError(f"rehearsal server: {reason}; check --scratch-url / MIGRATOR_REHEARSAL_URL / "
                          "rehearsal.server_url and that the server is reachable") from None
    with conn:
        scr_id, scr_db, scr_version = _identity(conn)
    try:
        with db.connect(source) as conn:
            src_id, src_db, src_version = _identity(conn)
    except ConfigError as exc:
        warnings.append(f"could not reach the source database to compare servers ({exc}); compared URLs only")
        return warnings, scr_version
    # without a readable identifier (neither superuser nor pg_monitor) the same host and port are the same server
    readable = src_id is not None and scr_id is not None
    same_cluster = src_id == scr_id if readable else src_ep[:2] == scr_ep[:2]
    if same_cluster and src_db == scr_db:
        raise ConfigError(
            f"refusing to rehearse: {scratch.display} is the source database {src_db} on the same server; "
            "set --scratch-url / rehearsal.server_url to another server"
        )
    if same_cluster:
        if not allow_same_server:
            raise ConfigError(
                f"refusing to rehearse environment {environment!r} on the source's own server ({scratch.display}): "
                "the restore and the rewrites would load it; point --scratch-url / rehearsal.server_url at "
                "another server (or set rehearsal.allow_same_server: true / --allow-same-server)"
            )
        warnings.append("the rehearsal ran on the source database's own server (allowed for this environment)")
    if src_version.split(".")[0] != scr_version.split(".")[0]:
        warnings.append(
            f"the rehearsal server runs PostgreSQL {scr_version}, the source {src_version}: locks are the same "
            "for these statements in most cases, timings and rewrites may differ"
        )
    return warnings, scr_version


# ----------------------------------------------------------------------------------------- rehearse


@dataclass
class ChosenBackup:
    """The backup a rehearsal restores, and the newer ones it could not use (issue 19: a truncated
    newest backup is said, never silently passed over)."""

    key: str
    size: int | None
    created_at: datetime | None = None
    newer_incomplete: list[Any] = field(default_factory=list)  # BackupInfo of newer, unusable backups

    @property
    def problem(self) -> str | None:
        """The warning to show when the newest backup was not the one restored, else None."""
        if not self.newer_incomplete:
            return None
        newest = self.newer_incomplete[0]
        others = len(self.newer_incomplete) - 1
        taken = f", taken {newest.created_at:%Y-%m-%d %H:%M:%S} UTC" if newest.created_at else ""
        ours = f"{self.created_at:%Y-%m-%d %H:%M:%S} UTC" if self.created_at else "an unknown time"
        return (
            f"the newest backup {newest.key}{taken}{',' if taken else ''} is INCOMPLETE ({newest.problem})"
            + (f", and {others} more newer one(s)" if others else "")
            + f"; rehearsed on the newest complete one instead, {self.key} (taken {ours}): its data is older "
            "than production's. Take a new backup (`migrator backup`) and see `migrator backups list`"
        )


def resolve_backup(settings: Settings, key: str, destination: str | None) -> ChosenBackup:
    """The backup to restore: ``latest`` is the newest complete backup, and any newer incomplete
    one is named in ``problem``."""
    if key.strip() != "latest":
        wanted = key.strip()
        for every in (False, True):  # the database's own group first: listing a whole bucket is slow
            infos = list_backups(settings, destination=destination, all_groups=every)
            found = next((b for b in infos if wanted in (b.key, b.url)), None)
            if found is not None:
                return ChosenBackup(wanted, found.size, found.created_at)
        return ChosenBackup(wanted, None)
    dated = [b for b in list_backups(settings, destination=destination) if b.created_at is not None]
    newer: list[Any] = []
    for b in dated:  # newest first
        if b.complete:
            return ChosenBackup(b.key, b.size, b.created_at, newer)
        newer.append(b)
    if newer:
        raise BackupError(
            f"no complete backup of {settings.environment!r} to rehearse on: the newest, {newer[0].key}, is "
            f"INCOMPLETE ({newer[0].problem}){f' and so are {len(newer) - 1} older one(s)' if len(newer) > 1 else ''}; "
            "run `migrator backup` first, or pass --backup KEY (see `migrator backups list`)"
        )
    raise BackupError(
        f"no complete backup of {settings.environment!r} to rehearse on; run `migrator backup` first, or pass "
        "--backup KEY (see `migrator backups list`)"
    )


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """In a plain process (SIGTERM at its default, i.e. the CLI), turn SIGTERM into an exception so
    that the scratch database is dropped instead of left behind. Raising mid-statement abandons the
    scratch connection, which the DROP DATABASE ... WITH (FORCE) on the way out then terminates;
    nothing of value runs there. Hosts with their own handler (Prefect) keep it."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    fired: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if fired:  # already stopping: let the cleanup finish
            return
        fired.append(signum)
        raise RehearsalStoppedError(
            "rehearsal stopped by SIGTERM: its scratch database was dropped and nothing was applied to the "
            "source database"
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rehearse(
    settings: Settings,
    options: RehearsalOptions,
    *,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> RehearsalReport:
    """Restore a backup into a scratch database and rehearse the pending migrations there.

    A migration that would fail is reported (``report.ok`` False), not raised: the caller decides
    (the CLI exits 1, the migrate flow fails before approval). Refusals and unusable backups raise.
    """
    with _stop_on_sigterm():
        return _rehearse(settings, options, progress=progress, run_id=run_id)


def _rehearse(settings: Settings, options: RehearsalOptions, *, progress: Progress | None,
              run_id: str | None) -> RehearsalReport:
    say = progress or (lambda msg: log.info("%s", msg))
    started = time.perf_counter()
    migrations = files.load(settings.migrations_path)
    migrations.raise_if_errors()
    source = db.resolve(settings)
    server = _rehearsal_server(settings, options)
    allow = options.allow_same_server
    if allow is None:
        allow = settings.environment == "local"
    warnings, server_version = check_not_source(source, server, allow_same_server=allow,
                                                environment=settings.environment)
    chosen = resolve_backup(settings, options.backup, options.backup_destination)
    key, size = chosen.key, chosen.size
    report = RehearsalReport(
        environment=settings.environment,
        database=_endpoint(source.conninfo)[2],
        backup_key=key,
        backup_size=size,
        scratch_server=":".join(_endpoint(server.conninfo)[:2]),  # where, never the URL (or who)
        scratch_database=None,
        kept=options.keep,
        large_table_bytes=options.large_table_bytes,
        warnings=warnings,
        server_version=server_version,
        backup_created_at=chosen.created_at.isoformat() if chosen.created_at else None,
        backup_problem=chosen.problem,
    )
    if chosen.problem:
        report.warnings.insert(0, chosen.problem)
        say(f"warning: {chosen.problem}")
    if options.max_backup_bytes is not None:
        if size is None:
            report.skipped = (f"rehearsal skipped: the size of backup {key} is unknown and rehearsal.max_backup_bytes "
                              f"is {human_bytes(options.max_backup_bytes)}")
        elif size > options.max_backup_bytes:
            report.skipped = (f"rehearsal skipped: backup {key} is {human_bytes(size)}, above rehearsal."
                              f"max_backup_bytes ({human_bytes(options.max_backup_bytes)}); nothing was measured")
        if report.skipped:
            report.warnings.append(report.skipped)
            say(report.skipped)
            report.total_seconds = round(time.perf_counter() - started, 3)
            return report
    settings = Settings(**{**settings.__dict__, "table": _table_spec(settings, source)})

    def swept(line: str) -> None:
        report.cleanup = line
        say(line)

    with scratch_database(server, "rehearsal", keep=options.keep, user="the rehearsal server's user",
                          say=swept) as scratch_conninfo:
        name = str(conninfo_to_dict(scratch_conninfo)["dbname"])
        report.scratch_database = name
        scratch = prepare_url(scratch_conninfo)
        taken = f" (taken {chosen.created_at:%Y-%m-%d %H:%M:%S} UTC)" if chosen.created_at else ""
        say(f"restoring backup {key}{taken} into scratch database {name} on {report.scratch_server}")
        _restore(settings, key, scratch_conninfo, options.backup_destination, report)
        say(f"restored in {report.restore_seconds:.1f} s")
        _apply_all(settings, scratch, migrations, options, report, say, run_id)
    report.total_seconds = round(time.perf_counter() - started, 3)
    if options.keep:
        report.warnings.append(f"scratch database {name} kept on {report.scratch_server} (--keep); drop it when done")
    return report


def _rehearsal_server(settings: Settings, options: RehearsalOptions) -> Connection:
    if options.scratch_url:
        return prepare_url(options.scratch_url)
    if settings.environment == "local":
        return prepare_url(embedded.server_url(settings.embedded_dir, database="postgres"))
    raise ConfigError(
        f"no rehearsal server for environment {settings.environment!r}: pass --scratch-url URL or set "
        f"rehearsal.server_url in deployments/{settings.environment}.yaml (never the source's server)"
    )


def _table_spec(settings: Settings, source: Connection) -> str | None:
    """The source's state table as a --table spec (its URL's x-migrations-table does not follow the
    scratch database's URL)."""
    if settings.table or source.table is None:
        return settings.table
    tn = state_table_name(settings, source.table)
    quote = lambda name: '"' + name.replace('"', '""') + '"'  # noqa: E731
    return f"{quote(tn.schema)}.{quote(tn.table)}" if tn.schema else quote(tn.table)


def _restore(settings: Settings, key: str, target: str, destination: str | None, report: RehearsalReport) -> None:
    result = restore_backup(settings, key, target, destination=destination, no_owner=True)
    report.restore_seconds = round(result.duration_seconds, 3)
    report.backup_size = report.backup_size or result.size


def _apply_all(settings: Settings, scratch: Connection, migrations: files.MigrationSet, options: RehearsalOptions,
               report: RehearsalReport, say: Progress, run_id: str | None) -> None:
    scratch_settings = Settings(**{**settings.__dict__, "database_url": scratch.conninfo})
    plan = Migrator(scratch_settings).plan(target=options.target_version)
    report.version_before = report.version_after = plan.version
    if plan.dirty:
        report.warnings.append(f"the backup records a DIRTY database at version {plan.version}; nothing rehearsed")
        raise MigratorError(
            f"backup {report.backup_key} records a dirty database at version {plan.version}: `up` would refuse it; "
            "fix the source's state first (`migrator status`)"
        )

    found = lock_predictions(migrations, {s.version for s in plan.steps})
    t0 = time.perf_counter()
    conn = db.connect(scratch)
    try:
        st = resolve_table(conn, state_table_name(settings, None))
        acquire_lock(conn, st, settings.lock_wait_seconds)
        ensure_tables(conn, st)

        applier = Applier(conn, scratch, settings, st, options.large_table_bytes, run_id)
        for step in plan.steps:
            m = migrations.get(step.version)
            if m is None:
                raise MigratorError(f"migration {step.version} vanished from {migrations.directory}")
            preds = found.get(m.version, []) if step.direction == "up" else []
            before = report.version_after if report.version_after is not None else -1
            mr = applier.run(m, step.direction, step.to_version, before, preds)
            report.migrations.append(mr)
            say(f"{m.version}/{step.direction[0]} {m.name} ({human_ms(mr.duration_ms)})"
                + (f": WOULD FAIL at {mr.location}: {mr.error}" if mr.failed else ""))
            if mr.failed:
                break
            report.version_after = step.to_version
        with contextlib.suppress(Exception):
            if conn.info.transaction_status != 0:
                conn.execute("ROLLBACK")
            release_lock(conn, st.lock_ids)
    finally:  # after an error or a stop mid-statement, closing ends the session and its locks
        conn.close()
    report.apply_seconds = round(time.perf_counter() - t0, 3)
    report.estimate_seconds = round(sum(m.duration_ms for m in report.migrations) / 1000, 3)
