"""Create: ``pg_dump --format=custom`` streamed into the store while its sha256 is computed.

The dump is taken in a snapshot exported by our own REPEATABLE READ transaction, so the
schema_migrations version recorded in its metadata is exactly the one inside the dump. It is
streamed (no temporary file); the store makes it a backup (visible under its key, with its sha256)
only when pg_dump exited 0 and the stored size matches: see ``stores`` for how each store makes
that step atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
from psycopg import sql

from migrator import __version__
from migrator.backup import pgtools
from migrator.backup.errors import BackupError
from migrator.backup.keys import group_prefix, make_key, open_destination
from migrator.backup.retention import sweep_interrupted
from migrator.backup.stores import READ_CHUNK, S3_MAX_PARTS, MiB, S3Store, Store, Upload, part_size_from_env
from migrator.backup.verify import VerifyResult, verify_backup
from migrator.config import Connection, Settings, state_table_name
from migrator.db import connect, resolve
from migrator.execute.state import read_state, resolve_table
from migrator.redact import redact

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


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
    cleanup: str | None = None  # what this run removed of interrupted backups' leftovers, one line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ reading pg_dump's output

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


@dataclass
class _Dump:
    """One pg_dump run: its process, the reader of its output, and the state read in its snapshot."""

    settings: Settings
    store: Store
    holder: pgtools.SnapshotHolder
    tool: pgtools.Tool
    run_id: str | None
    now: datetime
    proc: subprocess.Popen[bytes]
    reader: _PartReader
    state: _Background

    def describe(self) -> tuple[str, dict[str, str]]:
        """Key and metadata (everything but sha256 and size), once the schema version is known."""
        version, dirty, table = self.state.result()
        key = make_key(self.store, self.settings.environment, self.holder.database, self.now, version)
        return key, {
            "database": self.holder.database,
            "server-version": self.holder.server_version,
            "schema-version": str(version),
            "dirty": str(dirty).lower(),
            "state-table": table,
            "environment": self.settings.environment,
            "run-id": self.run_id or "",
            "tool-version": f"migrator {__version__}",
            "pg-dump-version": self.tool.version,
            "format": "pg_dump-custom",
            "created-at": self.now.isoformat(timespec="milliseconds"),
        }


def create_verified_backup(settings: Settings, *, run_id: str | None = None,
                           say: Callable[[str], None] | None = None) -> tuple[BackupResult, VerifyResult]:
    """A backup read back before anything relies on it (sha256, size, ``pg_restore --list``): what a
    ``migrate`` run and a fleet member take before they apply. ``say`` gets one line per step."""
    result = create_backup(settings, run_id=run_id)
    if result.cleanup and say:
        say(result.cleanup)
    if say:
        say(f"backup {result.key} written: {result.size} bytes, sha256 {result.sha256}")
    check = verify_backup(settings, result.key)
    if say:
        say(f"backup {result.key} verified: {check.toc_entries} TOC entries")
    return result, check


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
    started = time.monotonic()
    store = open_destination(settings, destination)
    run_id = run_id or settings.run_id
    conn_info = resolve(settings)
    store.preflight()
    _removed, cleanup = sweep_interrupted(store, group_prefix(store, settings, None))
    dsn, env = pgtools.child_connection(conn_info.conninfo)
    holder = pgtools.SnapshotHolder.open(dsn, env, conn_info.display)
    now = datetime.now(UTC)
    try:
        tool = pgtools.find_tool("pg_dump", holder.major)
        cmd = [str(tool.path), "--format=custom", "--no-password", f"--snapshot={holder.snapshot}", f"--dbname={dsn}"]
        size_part = _part_size(store, holder.database_bytes, part_size)
        log.info("running %s", pgtools.command_line(cmd))
        with pgtools.stderr_file() as err:
            proc = _start(tool, cmd, env, err)
            assert proc.stdout is not None
            reader = _PartReader(proc.stdout, size_part)
            reader.start()
            # pg_dump is running; read schema_migrations in its snapshot meanwhile (psycopg takes ~0.2 s to load)
            state = _Background(lambda: _state_in_snapshot(settings, conn_info, holder.snapshot))
            dump = _Dump(settings, store, holder, tool, run_id, now, proc, reader, state)
            key, metadata, info = _store_dump(dump, err, progress)
    finally:
        holder.close()
    return BackupResult(
        key=key,
        url=store.url_for(key),
        size=reader.size,
        sha256=reader.sha256.hexdigest(),
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
        cleanup=cleanup,
    )


def _start(tool: pgtools.Tool, cmd: list[str], env: dict[str, str], err: IO[bytes]) -> subprocess.Popen[bytes]:
    # a 1 MiB pipe lets pg_dump run on while we are briefly busy elsewhere
    try:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env, pipesize=MiB
        )
    except OSError as exc:
        raise BackupError(f"cannot run {tool.describe()}: {exc.strerror}") from None


def _store_dump(dump: _Dump, err: IO[bytes], progress: Progress | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Upload pg_dump's output part by part and complete the upload only when pg_dump succeeded;
    on any failure (ours, pg_dump's, the store's) kill pg_dump and abort the upload."""
    proc, reader, state = dump.proc, dump.reader, dump.state
    assert proc.stdout is not None
    upload: Upload | None = None
    try:
        upload = dump.store.start_upload(dump.describe)
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
                f"pg_dump ({dump.tool.version}) failed with exit code {rc}: "
                f"{pgtools.read_stderr(err) or 'no message'}; no backup was stored"
            )
        if reader.size == 0:
            raise BackupError("pg_dump produced no output; no backup was stored")
        info = upload.complete({"sha256": reader.sha256.hexdigest(), "size": str(reader.size)}, reader.size)
        key, metadata = upload.described()
        return key, metadata, info
    except BaseException as exc:
        reader.cancel()
        pgtools.kill(proc)
        state.wait()
        warning = upload.abort() if upload is not None else None
        if warning and isinstance(exc, BackupError):
            raise type(exc)(f"{exc}; {warning}") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            proc.stdout.close()


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
