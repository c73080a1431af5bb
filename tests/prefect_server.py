"""A real Prefect server and process worker for tests, on 127.0.0.1 only, with an isolated PREFECT_HOME.

    with running_server(tmp_path / "prefect") as server:          # `prefect server start` on PostgreSQL
        with running_worker(server, pool="tests", cwd=project):   # `prefect worker start --type process`
            ...  # server.api_url, server.client_env() for subprocesses

As a pytest fixture: ``from prefect_server import prefect_server`` in ``conftest.py`` or a test
module (session scope: one server per test session, however many modules import it). Analytics and telemetry are off (PREFECT_SERVER_ANALYTICS_ENABLED=false,
DO_NOT_TRACK=1); inherited PREFECT_* variables (a developer's API key or profile) are dropped.

The server's database is a database of its own on the machine's PostgreSQL (``TEST_PG_URL``,
default postgresql://postgres@127.0.0.1:5432/postgres), created before the server starts as a copy of
the run's migrated template (``prefect_templates``) and dropped after it stops: SQLite under a server, a worker and flow runs writing at once answered
"database is locked" and the UI showed "Failed to schedule flow run".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import drop_database
from prefect_templates import PREFECT_BIN, asyncpg_url, create_migrated_database

START_TIMEOUT = 120.0  # a server starts on a migrated copy (prefect_templates); the template is made first
PG_SERVER_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def prefect_database(server_url: str = PG_SERVER_URL) -> Iterator[str]:
    """A PostgreSQL database for a Prefect server, already migrated (a copy of the run's template, see
    ``prefect_templates``); yields its SQLAlchemy asyncpg URL, drops it after."""
    name = f"prefect_{uuid.uuid4().hex[:12]}"
    create_migrated_database(server_url, name)
    try:
        yield asyncpg_url(server_url, name)
    finally:
        drop_database(server_url, name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """os.environ without PREFECT_*, plus an isolated PREFECT_HOME, no telemetry, loopback only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group we started (the worker spawns flow-run processes), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@dataclass
class PrefectServer:
    """A running ``prefect server start``; ``api_url`` ends in /api."""

    api_url: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    database_url: str = field(default="", repr=False)  # postgresql+asyncpg://... of the server's own database

    @property
    def ui_url(self) -> str:
        return self.api_url[: -len("/api")]

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a client subprocess (CLI, worker, deploy script) talking to this server."""
        client_home = self.home / "client"
        client_home.mkdir(exist_ok=True)
        return isolated_env(client_home, self.api_url, **extra)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)


@contextmanager
def running_server(home: Path, *, ui: bool = False, timeout: float = START_TIMEOUT,
                   database_url: str | None = None) -> Iterator[PrefectServer]:
    """Start ``prefect server start`` on 127.0.0.1:<free port>, on PostgreSQL: ``database_url``
    (postgresql+asyncpg://...) or else a database of its own, created here and dropped afterwards."""
    with contextlib.ExitStack() as stack:
        db_url = database_url or stack.enter_context(prefect_database())
        yield stack.enter_context(_server_process(home, ui=ui, timeout=timeout, database_url=db_url))


@contextmanager
def _server_process(home: Path, *, ui: bool, timeout: float, database_url: str) -> Iterator[PrefectServer]:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = isolated_env(
        home,
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT_BIN, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"]
            + ([] if ui else ["--no-ui"]),
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    server = PrefectServer(api_url=api_url, home=home, log=log, process=proc, database_url=database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server not healthy after {timeout:.0f}s at {api_url}:\n{server.log_tail()}"
                )
            time.sleep(0.3)
        yield server
    finally:
        _stop(proc)


@dataclass
class PrefectWorker:
    """A running ``prefect worker start --type process``; its output is in ``log``."""

    pool: str
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)


def wait_for_pool(api_url: str, pool: str, timeout: float = 60.0) -> None:
    """Block until the work pool exists (a worker creates its pool when it is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{api_url}/work_pools/{pool}", timeout=5).status_code == 200:
            return
        time.sleep(0.3)
    raise RuntimeError(f"work pool {pool!r} did not appear on {api_url} within {timeout:.0f}s")


@contextmanager
def running_worker(
    server: PrefectServer,
    pool: str,
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    query_seconds: float = 1.0,
    wait_ready: bool = True,
    limit: int | None = None,
    name: str | None = None,
) -> Iterator[PrefectWorker]:
    """Start a process worker polling ``pool`` (created when missing) every ``query_seconds``.

    ``limit`` caps the flow runs it runs at once; ``name`` names it (and its log file).
    ``env`` is added to the worker's environment, which flow-run processes inherit (e.g.
    DATABASE_URL, WEBHOOK_URL for end-to-end tests).
    """
    log = server.home / f"worker-{name or pool}.log"
    worker_env = server.client_env(
        PREFECT_WORKER_QUERY_SECONDS=str(query_seconds),
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    worker_env.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT_BIN, "worker", "start", "--pool", pool, "--type", "process", "--install-policy", "never"]
            + (["--limit", str(limit)] if limit else []) + (["--name", name] if name else []),
            env=worker_env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    worker = PrefectWorker(pool=pool, log=log, process=proc)
    try:
        if wait_ready:
            try:
                wait_for_pool(server.api_url, pool)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; worker log:\n{worker.log_tail()}") from None
            if proc.poll() is not None:
                raise RuntimeError(f"prefect worker exited with code {proc.returncode}:\n{worker.log_tail()}")
        yield worker
    finally:
        _stop(proc)


# pytest ------------------------------------------------------------------------------------------
_shared_lock = threading.Lock()
_shared: dict[str, object] = {"refs": 0, "cm": None, "server": None}


def _acquire(home: Path) -> PrefectServer:
    with _shared_lock:
        if _shared["server"] is None:
            cm = running_server(home)
            _shared["server"] = cm.__enter__()
            _shared["cm"] = cm
        _shared["refs"] = int(_shared["refs"]) + 1  # type: ignore[call-overload]
        server = _shared["server"]
        assert isinstance(server, PrefectServer)
        return server


def _release() -> None:
    with _shared_lock:
        _shared["refs"] = int(_shared["refs"]) - 1  # type: ignore[call-overload]
        if int(_shared["refs"]) <= 0 and _shared["cm"] is not None:  # type: ignore[call-overload]
            cm = _shared["cm"]
            _shared.update(cm=None, server=None, refs=0)
            cm.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server for the whole session (started on first use, ~15 s)."""
    server = _acquire(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        _release()
