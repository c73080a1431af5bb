"""Backup, verify, restore, list and prune: the API the CLI and the Prefect tasks call.

A backup is ``pg_dump --format=custom`` of the configured database, taken in a snapshot exported by
our own REPEATABLE READ transaction, so the schema_migrations version recorded in its metadata is
exactly the one inside the dump. The dump is streamed (no temporary file) into the store while its
sha256 is computed; it becomes a backup only when pg_dump exited 0 and the stored size matches.

Keys: ``{prefix}/{environment}/{database}/{UTC timestamp}_v{version}.dump``, so they sort by time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from migrator import __version__
from migrator.backup import pgtools
from migrator.backup.errors import BackupError, BackupIntegrityError
from migrator.backup.stores import (
    READ_CHUNK,
    S3_MAX_PARTS,
    MiB,
    S3Store,
    Store,
    StoredObject,
    Upload,
    open_store,
    part_size_from_env,
)
from migrator.config import Connection, Settings, prepare_url, state_table_name
from migrator.redact import redact

log = logging.getLogger(__name__)

DEFAULT_BACKUP_URL = "file://./backups"
Progress = Callable[[int], None]

_KEY_RE = re.compile(
    r"(?:^|/)(?P<env>[^/]+)/(?P<db>[^/]+)/(?P<ts>\d{8}T\d{6})(?:\.(?P<ms>\d{3}))?Z_v(?P<version>-?\d+|none)\.dump$"
)
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


# ------------------------------------------------------------------------------------------ results


@dataclass
class BackupResult:
    """A backup that was written, size-checked and is complete."""

    key: str
    url: str
    size: int
    sha256: str
    database: str
    environment: str
    schema_version: int
    dirty: bool
    server_version: str
    pg_dump: dict[str, object]
    parts: int
    encryption: str
    run_id: str | None
    created_at: str
    duration_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyResult:
    """Outcome of reading a backup back: sha256, size and pg_restore --list."""

    key: str
    url: str
    ok: bool
    size: int
    expected_size: int | None
    sha256: str
    expected_sha256: str | None
    toc_entries: int
    pg_restore: dict[str, object]
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
class BackupInfo:
    """One listed backup; time and version come from its key."""

    key: str
    url: str
    size: int
    environment: str | None
    database: str | None
    version: int | None
    created_at: datetime | None

    @property
    def age_seconds(self) -> float | None:
        if self.created_at is None:
            return None
        return (datetime.now(UTC) - self.created_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        d["age_seconds"] = round(self.age_seconds, 1) if self.age_seconds is not None else None
        return d


@dataclass
class PruneResult:
    """What a retention policy keeps and deletes (or would delete, on a dry run)."""

    keep_last: int
    keep_days: float
    dry_run: bool
    kept: list[BackupInfo]
    deleted: list[BackupInfo]

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_last": self.keep_last,
            "keep_days": self.keep_days,
            "dry_run": self.dry_run,
            "kept": [b.to_dict() for b in self.kept],
            "deleted": [b.to_dict() for b in self.deleted],
        }


# ------------------------------------------------------------------------------------------ helpers


def _destination(settings: Settings, destination: str | None) -> Store:
    return open_store(destination or settings.backup_url or DEFAULT_BACKUP_URL)


def _safe(name: str) -> str:
    return _SAFE_RE.sub("_", name) or "_"


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"


def make_key(store: Store, environment: str, database: str, now: datetime, version: int) -> str:
    """``{prefix}/{environment}/{database}/{UTC timestamp}_v{version}.dump``."""
    v = "none" if version < 0 else str(version)
    return store.join(_safe(environment), _safe(database), f"{_timestamp(now)}_v{v}.dump")


def parse_key(key: str) -> tuple[str, str, datetime, int | None] | None:
    """(environment, database, created_at, version) of a key in our layout, else None."""
    m = _KEY_RE.search(key)
    if not m:
        return None
    created = datetime.strptime(m.group("ts"), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    if m.group("ms"):
        created += timedelta(milliseconds=int(m.group("ms")))
    version = None if m.group("version") == "none" else int(m.group("version"))
    return m.group("env"), m.group("db"), created, version


def _info(store: Store, obj: StoredObject) -> BackupInfo:
    parsed = parse_key(obj.key)
    if parsed:
        env, db, created, version = parsed
        return BackupInfo(obj.key, store.url_for(obj.key), obj.size, env, db, version, created)
    created_at = obj.last_modified
    if created_at is not None and created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return BackupInfo(obj.key, store.url_for(obj.key), obj.size, None, None, None, created_at)


def configured_database_name(settings: Settings) -> str:
    """Name of the configured database without connecting (the embedded default is ``askfrank``)."""
    if not settings.database_url:
        from migrator.embedded import DEFAULT_DATABASE

        return DEFAULT_DATABASE
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(prepare_url(settings.database_url).conninfo)
    return str(params.get("dbname") or params.get("user") or "postgres")


def _resolve_key(store: Store, key: str, settings: Settings, database: str | None) -> str:
    """A key as given (also as a full URL), or ``latest`` of the environment/database group."""
    key = key.strip()
    if key != "latest":
        base = store.url_for("")
        if key.startswith(base):
            key = key[len(base) :]
        return key.lstrip("/") if isinstance(store, S3Store) else key
    db = database or configured_database_name(settings)
    group = store.join(_safe(settings.environment), _safe(db)) + "/"
    infos = [_info(store, o) for o in store.list(group)]
    infos = [i for i in infos if i.created_at is not None]
    if not infos:
        raise BackupError(
            f"no backups of database {db!r} (environment {settings.environment!r}) in {store.url}; "
            "run `migrator backup` first or check --to / BACKUP_URL and --env"
        )
    return max(infos, key=lambda i: (i.created_at, i.key)).key


def _server_major(conn: Any) -> tuple[str, int]:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int"
    ).fetchone()
    return str(row[0]).split(" ")[0], int(row[1]) // 10000


def _metadata_int(meta: dict[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def _tool_major(meta: dict[str, str]) -> int:
    m = re.match(r"(\d+)", meta.get("pg-dump-version", ""))
    return int(m.group(1)) if m else 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------- backup

_EOF = object()


class _PartReader(threading.Thread):
    """Reads pg_dump's stdout in parts, hashing as it goes, one part ahead of the uploader.

    Memory holds at most two parts: the one being uploaded and the next one (being read, or read and
    waiting); the reader starts a new part only once the uploader took the previous one.
    """

    def __init__(self, stream: IO[bytes], part_size: int) -> None:
        super().__init__(name="pg_dump-reader", daemon=True)
        self.stream = stream
        self.part_size = part_size
        self.queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _wait_taken(self) -> None:
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks and not self.stop.is_set():
                self.queue.all_tasks_done.wait(0.2)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                part = self.stream.read(self.part_size)
                if not part:
                    break
                self.sha256.update(part)
                self.size += len(part)
                if not self._put(part):
                    return
                del part
                self._wait_taken()
            self._put(_EOF)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def parts(self) -> Iterable[bytes]:
        while True:
            item = self.queue.get()
            self.queue.task_done()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise BackupError(f"reading pg_dump's output failed: {redact(item)}")
            assert isinstance(item, bytes)
            yield item
            del item  # do not keep the uploaded part alive while waiting for the next one

    def cancel(self) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Empty, ValueError):
            while True:
                self.queue.get_nowait()
                self.queue.task_done()


def _part_size(store: Store, database_bytes: int, part_size: int | None) -> int:
    if not isinstance(store, S3Store):
        return part_size or READ_CHUNK  # a file takes any write size: small reads keep memory low
    size = part_size or part_size_from_env()
    # S3 allows 10,000 parts; a dump is normally smaller than the database, keep a 10% margin.
    needed = -(-database_bytes // (S3_MAX_PARTS * 9 // 10))
    if needed > size:
        log.info("database of %d bytes: %d-byte parts keep S3 under 10,000 parts", database_bytes, needed)
        size = needed
    return size


def create_backup(
    settings: Settings,
    *,
    destination: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    part_size: int | None = None,
) -> BackupResult:
    """Dump the configured database into the destination; raises BackupError/StorageError on any failure.

    A psql session exports a snapshot; pg_dump starts on it at once, and meanwhile we read
    schema_migrations in the same snapshot, so the recorded version is exactly the dump's.
    """
    from migrator.db import resolve

    started = time.monotonic()
    store = _destination(settings, destination)
    run_id = run_id or settings.run_id
    conn_info = resolve(settings)
    store.preflight()
    dsn, env = pgtools.child_connection(conn_info.conninfo)
    holder = pgtools.SnapshotHolder.open(dsn, env, conn_info.display)
    now = datetime.now(UTC)
    try:
        tool = pgtools.find_tool("pg_dump", holder.major)
        cmd = [str(tool.path), "--format=custom", "--no-password", f"--snapshot={holder.snapshot}", f"--dbname={dsn}"]
        size_part = _part_size(store, holder.database_bytes, part_size)
        log.info("running %s", pgtools.command_line(cmd))
        with pgtools.stderr_file() as err:
            # a 1 MiB pipe lets pg_dump run on while we are briefly busy elsewhere
            try:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env, pipesize=MiB
                )
            except OSError as exc:
                raise BackupError(f"cannot run {tool.describe()}: {exc.strerror}") from None
            assert proc.stdout is not None
            reader = _PartReader(proc.stdout, size_part)
            reader.start()
            # pg_dump is running; read schema_migrations in its snapshot meanwhile (psycopg takes ~0.2 s to load)
            state = _Background(lambda: _state_in_snapshot(settings, conn_info, holder.snapshot))

            def describe() -> tuple[str, dict[str, str]]:
                version, dirty, table = state.result()
                key = make_key(store, settings.environment, holder.database, now, version)
                return key, {
                    "database": holder.database,
                    "server-version": holder.server_version,
                    "schema-version": str(version),
                    "dirty": str(dirty).lower(),
                    "state-table": table,
                    "environment": settings.environment,
                    "run-id": run_id or "",
                    "tool-version": f"migrator {__version__}",
                    "pg-dump-version": tool.version,
                    "format": "pg_dump-custom",
                    "created-at": now.isoformat(timespec="milliseconds"),
                }

            upload: Upload | None = None
            try:
                upload = store.start_upload(describe)
                done = 0
                for part in reader.parts():
                    state.raise_if_failed()
                    upload.write(part)
                    done += len(part)
                    del part
                    if progress:
                        progress(done)
                rc = proc.wait()
                reader.join()
                if rc != 0:
                    raise BackupError(
                        f"pg_dump ({tool.version}) failed with exit code {rc}: "
                        f"{pgtools.read_stderr(err) or 'no message'}; no backup was stored"
                    )
                if reader.size == 0:
                    raise BackupError("pg_dump produced no output; no backup was stored")
                sha256 = reader.sha256.hexdigest()
                info = upload.complete({"sha256": sha256, "size": str(reader.size)}, reader.size)
                key, metadata = upload.described()
            except BaseException as exc:
                reader.cancel()
                _kill(proc)
                state.wait()
                warning = upload.abort() if upload is not None else None
                if warning and isinstance(exc, BackupError):
                    raise type(exc)(f"{exc}; {warning}") from None
                raise
            finally:
                with contextlib.suppress(OSError):
                    proc.stdout.close()
    finally:
        holder.close()
    return BackupResult(
        key=key,
        url=store.url_for(key),
        size=reader.size,
        sha256=sha256,
        database=holder.database,
        environment=settings.environment,
        schema_version=int(metadata["schema-version"]),
        dirty=metadata["dirty"] == "true",
        server_version=holder.server_version,
        pg_dump=tool.to_dict(),
        parts=int(info.get("parts", 1)),
        encryption=str(info.get("encryption", "none")),
        run_id=run_id,
        created_at=metadata["created-at"],
        duration_seconds=round(time.monotonic() - started, 3),
    )


class _Background(threading.Thread):
    """Runs ``fn`` in a thread; ``result()`` waits and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(name="backup-state", daemon=True)
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        # Not urgent (needed only when the first part is stored): leave the CPU to pg_dump and its server.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            self.value = self.fn()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def wait(self) -> None:
        self.join(timeout=60)

    def result(self) -> Any:
        self.join()
        self.raise_if_failed()
        return self.value


def _state_in_snapshot(settings: Settings, conn_info: Connection, snapshot: str) -> tuple[int, bool, str]:
    """(version, dirty, state table) of schema_migrations as seen by the exported snapshot."""
    import psycopg
    from psycopg import sql

    from migrator.db import connect
    from migrator.state import read_state, resolve_table

    conn = connect(conn_info, autocommit=False)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        st = resolve_table(conn, state_table_name(settings, conn_info.table))
        version, dirty = read_state(conn, st)
        return version, dirty, f"{st.schema}.{st.table}"
    except psycopg.Error as exc:
        raise BackupError(f"cannot read the migration state of {conn_info.display}: {redact(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# ------------------------------------------------------------------------------------------- verify


def _feed(proc: subprocess.Popen[bytes], chunk: bytes) -> bool:
    """Write to the child's stdin; False once it stopped reading (pg_restore --list reads only the TOC)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(chunk)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            proc.stdin.close()


def verify_backup(
    settings: Settings,
    key: str,
    destination: str | None = None,
    *,
    database: str | None = None,
    raise_on_failure: bool = True,
) -> VerifyResult:
    """Stream a backup back, recompute its sha256 and size, and have ``pg_restore --list`` read it."""
    import tempfile

    store = _destination(settings, destination)
    key = _resolve_key(store, key, settings, database)
    head = store.head(key)
    meta = head.metadata or {}
    expected_sha = meta.get("sha256") or None
    expected_size = _metadata_int(meta, "size")
    tool = pgtools.find_tool("pg_restore", _tool_major(meta))
    h = hashlib.sha256()
    size = 0
    with pgtools.stderr_file() as err, tempfile.TemporaryFile() as toc:
        cmd = [str(tool.path), "--list"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=toc, stderr=err)
        feeding = True
        try:
            for chunk in store.read(key):
                h.update(chunk)
                size += len(chunk)
                if feeding:
                    feeding = _feed(proc, chunk)
        except BaseException:
            _kill(proc)
            raise
        _close_stdin(proc)
        rc = proc.wait()
        toc.seek(0)
        entries = sum(1 for ln in toc.read().decode("utf-8", "replace").splitlines() if ln and not ln.startswith(";"))
        stderr = pgtools.read_stderr(err)
    sha = h.hexdigest()
    problems: list[str] = []
    if expected_sha is None:
        problems.append("no sha256 recorded in its metadata (not made by migrator, or the upload did not finish)")
    elif sha != expected_sha:
        problems.append(f"sha256 is {sha}, the backup recorded {expected_sha}: the stored object is corrupted")
    if expected_size is not None and size != expected_size:
        problems.append(f"size is {size} bytes, the backup recorded {expected_size}")
    if rc != 0:
        problems.append(f"pg_restore --list cannot read it (exit {rc}): {stderr or 'no message'}")
    result = VerifyResult(
        key=key,
        url=store.url_for(key),
        ok=not problems,
        size=size,
        expected_size=expected_size,
        sha256=sha,
        expected_sha256=expected_sha,
        toc_entries=entries,
        pg_restore=tool.to_dict(),
        problems=problems,
        metadata=meta,
    )
    if problems and raise_on_failure:
        raise BackupIntegrityError(f"backup {result.url} failed verification: " + "; ".join(problems))
    return result


# ------------------------------------------------------------------------------------------ restore


def _user_objects(conn: Any) -> int:
    row = conn.execute(
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
             AND n.nspname NOT LIKE 'pg_temp%'"""
    ).fetchone()
    return int(row[0]) if row else 0


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
    from migrator.db import connect, resolve
    from migrator.state import read_state, resolve_table

    started = time.monotonic()
    store = _destination(settings, destination)
    key = _resolve_key(store, key_or_latest, settings, database)
    head = store.head(key)
    meta = head.metadata or {}
    expected_sha = meta.get("sha256")
    if not expected_sha:
        raise BackupIntegrityError(
            f"backup {store.url_for(key)} has no sha256 in its metadata; it cannot be checked, refusing to restore it"
        )
    target = prepare_url(target_url) if target_url else resolve(settings)
    with connect(target) as conn:
        _, major = _server_major(conn)
        existing = _user_objects(conn)
    if existing and not clean:
        raise BackupError(
            f"target database {target.display} is not empty ({existing} tables/sequences/indexes); restore into an "
            "empty database (--target-url), or pass --clean --yes to replace the objects in the backup"
        )
    tool = pgtools.find_tool("pg_restore", max(major, _tool_major(meta)))
    dsn, env = pgtools.child_connection(target.conninfo)
    cmd = [str(tool.path), "--single-transaction", "--no-password", f"--dbname={dsn}"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    if no_owner:
        cmd += ["--no-owner", "--no-privileges"]
    log.info("running %s", pgtools.command_line(cmd))
    h = hashlib.sha256()
    size = 0
    with pgtools.stderr_file() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env)
        alive = True
        try:
            held: bytes | None = None
            for chunk in store.read(key):
                h.update(chunk)
                size += len(chunk)
                if held is not None and alive:
                    alive = _feed(proc, held)
                held = chunk
                if progress:
                    progress(size)
            sha = h.hexdigest()
            if sha != expected_sha or str(size) != meta.get("size", str(size)):
                _kill(proc)
                raise BackupIntegrityError(
                    f"backup {store.url_for(key)} is corrupted (sha256 {sha}, {size} bytes; recorded {expected_sha}, "
                    f"{meta.get('size')} bytes); the restore was rolled back, the target is unchanged"
                )
            if held is not None and alive:
                _feed(proc, held)
            _close_stdin(proc)
            rc = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        if rc != 0:
            raise BackupError(
                f"pg_restore ({tool.version}) into {target.display} failed with exit code {rc}: "
                f"{pgtools.read_stderr(err) or 'no message'}; it ran in one transaction, nothing was restored"
            )
    with connect(target) as conn:
        st = resolve_table(conn, state_table_name(settings, target.table))
        version, dirty = read_state(conn, st)
    return RestoreResult(
        key=key,
        url=store.url_for(key),
        target=target.display,
        size=size,
        sha256=sha,
        clean=clean,
        backup_schema_version=_metadata_int(meta, "schema-version"),
        schema_version=version,
        dirty=dirty,
        pg_restore=tool.to_dict(),
        duration_seconds=round(time.monotonic() - started, 3),
    )


# ------------------------------------------------------------------------------------- list & prune


def list_backups(
    settings: Settings,
    *,
    destination: str | None = None,
    database: str | None = None,
    all_groups: bool = False,
) -> list[BackupInfo]:
    """Backups of the configured environment and database (or all of them), newest first."""
    store = _destination(settings, destination)
    if all_groups:
        prefix = store.join() + "/" if store.join() else ""
    else:
        db = database or configured_database_name(settings)
        prefix = store.join(_safe(settings.environment), _safe(db)) + "/"
    infos = [_info(store, o) for o in store.list(prefix)]
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(infos, key=lambda i: (i.created_at or epoch, i.key), reverse=True)


def retention(
    backups: list[BackupInfo], keep_last: int, keep_days: float, now: datetime | None = None
) -> tuple[list[BackupInfo], list[BackupInfo]]:
    """(kept, deleted) per environment/database group: the newest ``keep_last``, all younger than
    ``keep_days``, and always the newest; backups of unknown age are kept."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=keep_days)
    groups: dict[tuple[str | None, str | None], list[BackupInfo]] = {}
    for b in backups:
        groups.setdefault((b.environment, b.database), []).append(b)
    kept: list[BackupInfo] = []
    deleted: list[BackupInfo] = []
    epoch = datetime.min.replace(tzinfo=UTC)
    for items in groups.values():
        items.sort(key=lambda i: (i.created_at or epoch, i.key), reverse=True)
        for index, b in enumerate(items):
            if index == 0 or index < keep_last or b.created_at is None or b.created_at > cutoff:
                kept.append(b)
            else:
                deleted.append(b)
    return kept, deleted


def prune_backups(
    settings: Settings,
    *,
    keep_last: int,
    keep_days: float,
    destination: str | None = None,
    database: str | None = None,
    all_groups: bool = False,
    yes: bool = False,
    now: datetime | None = None,
) -> PruneResult:
    """Apply the retention policy; deletes only with ``yes`` (otherwise a dry run)."""
    from migrator.errors import ConfigError

    if keep_last < 0 or keep_days < 0:
        raise ConfigError("--keep-last and --keep-days must be >= 0")
    store = _destination(settings, destination)
    backups = list_backups(settings, destination=destination, database=database, all_groups=all_groups)
    kept, deleted = retention(backups, keep_last, keep_days, now)
    if yes:
        for b in deleted:
            store.delete(b.key)
            log.info("deleted backup %s", b.url)
    return PruneResult(keep_last, keep_days, not yes, kept, deleted)
