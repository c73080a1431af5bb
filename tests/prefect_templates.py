"""Prefect's own database, migrated once per test run and copied for every server that needs one.

A Prefect server on a fresh database runs all of Prefect's schema migrations and registers its block
types on its first start: 35-55 s on these 2-core machines under a test run's load, against ~15 s on
a database that has both (``CREATE DATABASE ... TEMPLATE`` takes 0.6 s). That start happened for the
session's ``prefect_test_harness`` of each xdist worker, for each ``python -m flows`` run with a
fresh PREFECT_HOME and for each real ``prefect server``. Instead, the first test that needs one
starts a server once on a template (a SQLite file, a PostgreSQL database), under a lock that the xdist
workers share, and every later server starts on a copy (a file copy; ``CREATE DATABASE ... TEMPLATE``):
its start-up still runs ``alembic upgrade`` and the block registration, which then find little to do.

The templates belong to one test run: they are named after the run's id (``start_run``, by the
controller before the xdist workers start, so all of them see the same one) and removed when the run
ends (``remove_templates``, from ``pytest_sessionfinish`` of the controller); a run that was killed
is cleaned up by the next one, which finds its "alive" lock released.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

RUN_ID_VAR = "ASKFRANK_TEST_RUN_ID"
PREFECT_BIN = str(Path(sys.executable).with_name("prefect"))
SQLITE_NAME = "prefect.db"  # what Prefect calls its database in PREFECT_HOME (its default connection URL)


def ensure_run_id() -> str:
    """The run's id: made by the first process (the xdist controller, or the only one), inherited by workers."""
    return os.environ.setdefault(RUN_ID_VAR, uuid.uuid4().hex[:12])


def _run_path(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"askfrank-tests-{run_id}"


def run_dir() -> Path:
    """A directory shared by every process of this run (the SQLite template and the locks)."""
    path = _run_path(ensure_run_id())
    path.mkdir(exist_ok=True)
    return path


def pg_template_name(run_id: str | None = None) -> str:
    """The PostgreSQL template's name for run ``run_id`` (this run's by default)."""
    return f"prefect_template_{run_id or ensure_run_id()}"


@contextmanager
def _run_lock(name: str) -> Iterator[None]:
    """An exclusive lock across the run's processes (an flock on a file in ``run_dir``)."""
    with open(run_dir() / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prime(database_url: str) -> None:
    """Start ``prefect server start`` on ``database_url`` until it answers, then stop it: the database
    then holds Prefect's schema at its head revision and the block types it registers on its first
    start. A copy of a database that was only migrated (``prefect server database upgrade``) still
    took 42-50 s to start under load, against 15-17 s for a copy of a primed one, measured together."""
    # lazy: prefect_server imports this module (its servers start on the copies made here)
    from prefect_server import running_server

    home = Path(tempfile.mkdtemp(prefix="prefect-template-", dir=run_dir()))
    try:
        with running_server(home, timeout=300, database_url=database_url):
            pass
    finally:
        shutil.rmtree(home, ignore_errors=True)


def sqlite_template() -> Path:
    """The run's migrated SQLite database (made on first use)."""
    path = run_dir() / "prefect-template.db"
    with _run_lock("sqlite-template"):
        if not path.exists():
            building = path.with_suffix(".building")
            building.unlink(missing_ok=True)
            _prime(f"sqlite+aiosqlite:///{building}")
            with sqlite3.connect(building) as db:  # what is still in its write-ahead log goes into the file
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for extra in ("-wal", "-shm"):
                Path(f"{building}{extra}").unlink(missing_ok=True)
            building.rename(path)  # complete or absent, never half-written
    return path


def seed_sqlite(target: Path) -> Path:
    """Copy the migrated template to ``target`` (a file that does not exist yet); returns it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template(), target)
    return target


def seed_prefect_home(home: Path) -> Path:
    """A PREFECT_HOME whose default SQLite database is already migrated (``python -m flows`` with no API)."""
    if not (home / SQLITE_NAME).exists():
        seed_sqlite(home / SQLITE_NAME)
    return home


def create_migrated_database(server_url: str, name: str) -> None:
    """``CREATE DATABASE name`` on ``server_url``'s server as a copy of the run's migrated template."""
    template = pg_template_name()
    with _run_lock("pg-template"), psycopg.connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (template,)).fetchone() is None:
            building = f"{template}_building"
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(building)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
            _prime(asyncpg_url(server_url, building))
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(building),
                                                                         sql.Identifier(template)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))


def asyncpg_url(server_url: str, name: str) -> str:
    """The SQLAlchemy asyncpg URL Prefect takes for database ``name`` on ``server_url``'s server."""
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    auth = str(info.get("user") or "postgres") + (f":{info['password']}" if info.get("password") else "")
    return f"postgresql+asyncpg://{auth}@{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}/{name}"


def start_run(server_url: str) -> None:
    """The controller (or the only process), before any worker starts: this run's id, and a lock held
    until the process ends that tells a later run this one is alive; what killed runs left is removed.
    A pytest run inside a test (its environment has the id already) uses the outer run's templates."""
    if os.environ.get(RUN_ID_VAR):
        return
    for path in Path(tempfile.gettempdir()).glob("askfrank-tests-*"):
        run_id = path.name.removeprefix("askfrank-tests-")
        if not _is_alive(path):
            remove_templates(server_url, run_id)
    ensure_run_id()
    lock = open(run_dir() / "alive.lock", "w")  # noqa: SIM115 - held (open and locked) until the process ends
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _alive.append(lock)


_alive: list[IO[str]] = []


def _is_alive(path: Path) -> bool:
    """Whether the run of ``path`` still holds its alive lock (a process that ended lets go of it)."""
    try:
        with open(path / "alive.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:  # no such directory any more, or not ours
        return True


def end_run(server_url: str) -> None:
    """The controller that started this run (``start_run``), at its end: its templates are removed."""
    if _alive:
        remove_templates(server_url, os.environ[RUN_ID_VAR])


def remove_templates(server_url: str, run_id: str) -> None:
    """Drop the PostgreSQL template of run ``run_id`` and remove its directory."""
    path = _run_path(run_id)
    if (path / "pg-template.lock").exists():  # only then a connection (a unit-only run needs no server)
        name = pg_template_name(run_id)
        try:
            with psycopg.connect(server_url, autocommit=True) as conn:
                for db in (name, f"{name}_building"):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        except psycopg.Error:
            return  # no server now: the directory stays, so that the next run that reaches it drops it
    shutil.rmtree(path, ignore_errors=True)
