"""``migrator rehearse`` against real PostgreSQL: a source database with a 1M-row ``patients`` table
(built once per module with one generate_series INSERT, backed up once to a file:// store), then
each test rehearses its own pending migrations on a restored copy.

Proves: the ALTER COLUMN TYPE rewrite under ACCESS EXCLUSIVE with a hold > 0 (and validate's
MIG005 next to it), CREATE INDEX CONCURRENTLY without ACCESS EXCLUSIVE, a UNIQUE constraint over
duplicate rows caught with file:line, the source database unchanged every time, the scratch
database dropped (or kept with --keep), the same-server refusals, and the size-limit skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import SERVER_URL, create_database, drop_database, reap, url_for, write_migration

JUST = "-- Business justification: test\n"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> Iterator[dict[str, Any]]:
    """A database at version 1 with 1,000,000 patients (mrn has duplicates), and one backup of it."""
    from migrator.backup import create_backup
    from migrator.config import Settings
    from migrator.engine import Migrator

    root = tmp_path_factory.mktemp("rehearse")
    base = root / "base"
    base.mkdir()
    write_migration(base, 1, "create_patients",
                    JUST + "CREATE TABLE patients (id int PRIMARY KEY, mrn int NOT NULL, name text NOT NULL);",
                    JUST + "DROP TABLE IF EXISTS patients;")
    name = create_database(SERVER_URL, "rehearse_src")
    url = url_for(SERVER_URL, name)
    backups = f"file://{root / 'backups'}"
    try:
        Migrator(Settings(database_url=url, migrations_path=base)).up()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO patients SELECT i, i % 700000, 'patient ' || i "
                         "FROM generate_series(1, 1000000) AS i")
        create_backup(Settings(database_url=url, backup_url=backups, environment="local"))
        yield {"url": url, "name": name, "base": base, "backups": backups, "root": root}
    finally:
        drop_database(SERVER_URL, name)


@pytest.fixture
def migrations(source: dict[str, Any], tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    shutil.copytree(source["base"], d)
    return d


@pytest.fixture
def env(source: dict[str, Any], migrations: Path) -> dict[str, str]:
    return {"DATABASE_URL": source["url"], "MIGRATIONS_PATH": str(migrations), "BACKUP_URL": source["backups"],
            "MIGRATOR_ENV": "local", "MIGRATOR_DEPLOYMENTS_DIR": str(migrations.parent)}


def snapshot(url: str) -> dict[str, Any]:
    """What a rehearsal must never change on the source."""
    with psycopg.connect(url) as conn:
        return {
            "state": conn.execute("SELECT version, dirty FROM schema_migrations").fetchall(),
            "id_type": conn.execute("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = "
                                    "'patients'::regclass AND attname = 'id'").fetchone(),
            "filenode": conn.execute("SELECT pg_relation_filenode('patients')").fetchone(),
            "indexes": conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'patients' ORDER BY 1")
            .fetchall(),
            "constraints": conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'patients'::regclass "
                                        "ORDER BY 1").fetchall(),
            "rows": conn.execute("SELECT count(*) FROM patients").fetchone(),
        }


def databases(prefix: str = "migrator_scratch_rehearsal_", pid: int | None = None) -> set[str]:
    """The databases named ``prefix...`` of process ``pid`` (this one by default; the name carries it):
    other pytest workers and other runs on the same server make their own at the same time."""
    with psycopg.connect(SERVER_URL) as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s AND split_part(datname, '_', 5) = %s",
            (prefix.replace("_", r"\_") + "%", str(pid or os.getpid())))}


def test_rewrite_under_access_exclusive_and_concurrent_index(cli: Any, source: dict[str, Any], migrations: Path,
                                                             env: dict[str, str]) -> None:
    import json

    write_migration(migrations, 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    write_migration(migrations, 3, "index_patients_mrn",
                    JUST + "CREATE INDEX CONCURRENTLY IF NOT EXISTS patients_mrn_idx ON patients (mrn);",
                    JUST + "DROP INDEX CONCURRENTLY IF EXISTS patients_mrn_idx;")
    before, dbs_before = snapshot(source["url"]), databases()
    scratch_url = SERVER_URL.replace("postgres@", "postgres:Scratch-Sentinel-pw-9@")  # trust auth ignores it
    r = cli("rehearse", "--json", "--scratch-url", scratch_url, "--allow-same-server", env=env)
    assert r.code == 0, r.err
    assert "Scratch-Sentinel-pw-9" not in r.out + r.err
    report = json.loads(r.out)
    assert report["ok"] and report["version_before"] == 1 and report["version_after"] == 3
    assert report["backup_key"].endswith("_v1.dump") and report["restore_seconds"] > 0
    widen, index = report["migrations"]

    assert widen["transactional"] and not widen["failed"]
    table_ae = [lk for lk in widen["locks"] if lk["relation"] == "public.patients" and lk["mode"] == "ACCESS EXCLUSIVE"]
    assert len(table_ae) == 1
    lock = table_ae[0]
    assert lock["held_ms"] > 0 and lock["statement"] == 1 and lock["kind"] == "table"
    assert lock["size_bytes"] > 30 * 1024 * 1024 and lock["large"] and lock["blocks"] == "reads and writes"
    assert lock["held_ms"] >= widen["statements"][0]["duration_ms"] - 1  # held from the statement to commit
    (rewrite,) = [rw for rw in widen["rewrites"] if rw["kind"] == "table"]
    assert rewrite["relation"] == "public.patients" and rewrite["size_before"] == lock["size_bytes"]
    assert rewrite["size_after"] > 0
    (pred,) = widen["predictions"]
    assert pred["rule"] == "MIG005" and pred["statement"] == 1
    assert "ACCESS EXCLUSIVE on public.patients held" in pred["measured"] and "rewritten" in pred["measured"]

    assert not index["transactional"] and not index["failed"]
    assert all(lk["mode"] != "ACCESS EXCLUSIVE" for lk in index["locks"])
    assert any(lk["relation"] == "public.patients" and lk["mode"] == "SHARE UPDATE EXCLUSIVE"
               for lk in index["locks"])  # sampled while CREATE INDEX CONCURRENTLY ran
    assert not [rw for rw in index["rewrites"] if rw["kind"] == "table"]
    assert report["estimate_seconds"] > 0 and "rehearsal's own time" in report["estimate_label"]

    assert snapshot(source["url"]) == before  # the source is untouched: version 1, int id, same file, no index
    assert before["id_type"] == ("integer",) and before["state"] == [(1, False)]
    assert report["scratch_database"] not in databases() and databases() <= dbs_before  # dropped


def test_failure_on_real_data_caught_nothing_reaches_source(cli: Any, source: dict[str, Any], migrations: Path,
                                                           env: dict[str, str]) -> None:
    write_migration(migrations, 2, "unique_mrn",
                    JUST + "-- one patient per medical record number\nALTER TABLE patients "
                    "ADD CONSTRAINT patients_mrn_key UNIQUE (mrn);",
                    JUST + "ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_mrn_key;")
    before = snapshot(source["url"])
    r = cli("rehearse", "--scratch-url", SERVER_URL, "--allow-same-server", "--keep", env=env)
    assert r.code == 1
    assert "WOULD FAIL" in r.out and "could not create unique index" in r.out
    err = r.err.strip().splitlines()[-1]
    assert err.startswith("error: rehearsal: migration 2 (unique_mrn) would fail at ")
    assert "000002_unique_mrn.up.sql:3:1" in err and "is duplicated" in err
    assert "nothing was applied to the source database" in err
    assert "MIG014" in r.out  # validate predicted the lock; the measurement says it failed
    # the aborted transaction's locks are gone at the error: the sampler saw what the statement held
    held = next(ln for ln in r.out.splitlines() if "ACCESS EXCLUSIVE" in ln and "public.patients (table" in ln)
    assert "(until the failure)" in held and "LARGE TABLE" in held
    assert snapshot(source["url"]) == before
    kept = [d for d in databases("migrator_kept_rehearsal_") if d in r.out]
    assert len(kept) == 1, "--keep keeps the scratch database (named as kept: no sweep drops it) and names it"
    try:
        with psycopg.connect(url_for(SERVER_URL, kept[0])) as conn:  # rolled back on the copy, still version 1
            assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(1, False)]
            assert conn.execute("SELECT count(*) FROM patients").fetchone() == (1000000,)
    finally:
        drop_database(SERVER_URL, kept[0])


def test_refuses_the_source_database_and_its_server(cli: Any, source: dict[str, Any], env: dict[str, str],
                                                    migrations: Path) -> None:
    write_migration(migrations, 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    dbs_before = databases()
    same = cli("rehearse", "--scratch-url", source["url"].replace("127.0.0.1", "localhost"), env=env)
    assert same.code == 2 and "is the source database itself" in same.err
    assert len(same.err.strip().splitlines()) == 1
    # another spelling of the same server and database (Unix socket): caught by the cluster identity
    socket_url = f"postgresql://postgres@/{source['name']}?host=/var/run/postgresql&port=5432"
    alias = cli("rehearse", "--scratch-url", socket_url, "--allow-same-server", env=env)
    assert alias.code == 2 and "on the same server" in alias.err
    # another database on the source's server: refused outside the local environment
    other = cli("rehearse", "--scratch-url", SERVER_URL, env={**env, "MIGRATOR_ENV": "prod"})
    assert other.code == 2 and "on the source's own server" in other.err
    assert databases() == dbs_before  # refused before creating anything
    assert snapshot(source["url"])["state"] == [(1, False)]


def test_size_limit_skips_with_a_warning(source: dict[str, Any], migrations: Path) -> None:
    from migrator.config import Settings
    from migrator.rehearse.report import to_markdown
    from migrator.rehearse.run import RehearsalOptions, rehearse

    write_migration(migrations, 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    dbs_before = databases()
    settings = Settings(database_url=source["url"], migrations_path=migrations, backup_url=source["backups"])
    report = rehearse(settings, RehearsalOptions(scratch_url=SERVER_URL, allow_same_server=True,
                                                 max_backup_bytes=1024))
    assert report.skipped and "max_backup_bytes" in report.skipped and report.ok and not report.migrations
    assert report.warnings == [w for w in report.warnings if w]  # the skip is a warning, not an error
    md = to_markdown(report)
    assert md.startswith("## Rehearsal skipped") and "Warning" in md
    assert databases() == dbs_before


def test_bad_settings_are_one_line_errors(cli: Any, env: dict[str, str], migrations: Path) -> None:
    no_server = cli("rehearse", env={**env, "MIGRATOR_ENV": "prod"})
    assert no_server.code == 2 and "no rehearsal server for environment 'prod'" in no_server.err
    bad_size = cli("rehearse", "--scratch-url", SERVER_URL, "--max-backup-bytes", "lots", env=env)
    assert bad_size.code == 2 and "--max-backup-bytes='lots' is not a size" in bad_size.err
    unreachable = cli("rehearse", "--scratch-url", "postgresql://postgres@127.0.0.1:1/postgres", env=env)
    assert unreachable.code == 2 and "error: rehearsal server: cannot connect" in unreachable.err
    assert "--scratch-url" in unreachable.err and "DATABASE_URL" not in unreachable.err
    for res in (no_server, bad_size, unreachable):
        assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err


def test_local_rehearses_on_the_embedded_server(cli: Any, embedded_server_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATABASE_URL, environment local: the source is the embedded server's askfrank database and
    the rehearsal runs in a scratch database beside it, with no --scratch-url."""
    from migrator import embedded

    with psycopg.connect(embedded_server_url) as conn:
        data_dir = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write_migration(migrations, 1, "create_patients",
                    JUST + "CREATE TABLE patients (id int PRIMARY KEY, mrn int NOT NULL, name text NOT NULL);",
                    JUST + "DROP TABLE IF EXISTS patients;")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    env = {"MIGRATOR_EMBEDDED_DIR": data_dir, "MIGRATOR_ENV": "local", "MIGRATIONS_PATH": str(migrations),
           "BACKUP_URL": f"file://{tmp_path / 'backups'}", "MIGRATOR_DEPLOYMENTS_DIR": str(tmp_path)}
    source_url = embedded.server_url(Path(data_dir), database=embedded.DEFAULT_DATABASE)
    try:
        assert cli("up", env=env).code == 0
        with psycopg.connect(source_url, autocommit=True) as conn:
            conn.execute("INSERT INTO patients SELECT i, i, 'p' || i FROM generate_series(1, 20000) i")
        assert cli("backup", env=env).code == 0
        write_migration(migrations, 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                        JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
        import json

        r = cli("rehearse", "--json", env=env)
        assert r.code == 0, r.err
        report = json.loads(r.out)
        assert report["ok"] and report["version_after"] == 2 and report["server_version"].startswith("18")
        assert any("own server" in w for w in report["warnings"])
        assert any(lk["mode"] == "ACCESS EXCLUSIVE" and lk["relation"] == "public.patients"
                   for lk in report["migrations"][0]["locks"])
        with psycopg.connect(source_url) as conn:
            assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(1, False)]
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        assert report["scratch_database"] not in names
    finally:
        drop_database(embedded_server_url, embedded.DEFAULT_DATABASE)


@pytest.mark.parametrize(("signame", "code", "line"), [
    ("SIGTERM", 143, "error: rehearsal stopped by SIGTERM"),
    ("SIGINT", 130, "error: rehearsal interrupted: its scratch database was dropped"),
])
def test_a_signal_stops_and_drops_the_scratch_database(source: dict[str, Any], migrations: Path, env: dict[str, str],
                                                       signame: str, code: int, line: str) -> None:
    """Stopping means stopping: SIGTERM (or Ctrl-C) while a migration runs on the copy ends the
    command (exit 143 / 130, one line) and leaves no scratch database behind; the source is untouched."""
    import os
    import signal
    import subprocess
    import sys
    import time

    write_migration(migrations, 2, "slow_backfill", JUST + "SELECT pg_sleep(600);\nALTER TABLE patients ADD COLUMN x int;",
                    JUST + "ALTER TABLE patients DROP COLUMN IF EXISTS x;")
    before = snapshot(source["url"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "rehearse", "--scratch-url", SERVER_URL, "--allow-same-server"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell may ignore SIGINT
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(SERVER_URL) as conn:
                row = conn.execute(r"SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%%' "
                                   r"AND datname LIKE 'migrator\_scratch\_rehearsal\_%%' "
                                   "AND split_part(datname, '_', 5) = %s", (str(proc.pid),)).fetchone()
                if row:
                    scratch = row[0]
                    break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the migration never started on the copy")
        stopped = time.monotonic()
        proc.send_signal(getattr(signal, signame))
        _out, err = proc.communicate(timeout=120)
    finally:
        reap(proc)
    assert proc.returncode == code, err
    assert time.monotonic() - stopped < 60  # not the 600 s the statement would have taken
    assert err.strip().splitlines()[-1].startswith(line)
    assert "Traceback" not in err
    assert scratch not in databases(pid=proc.pid) and databases(pid=proc.pid) == set()  # the scratch database was dropped
    assert snapshot(source["url"]) == before


def test_rehearsal_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deployments/<env>.yaml rehearsal keys: sizes parsed, prod on by default, mistakes named."""
    from migrator.errors import ConfigError
    from migrator.rehearse.run import parse_bytes
    from tasks.environment import load_environment
    from tasks.rehearse import rehearsal_config

    assert parse_bytes("500MB", "x") == 500 * 1024**2 and parse_bytes("1.5GiB", "x") == int(1.5 * 1024**3)
    assert parse_bytes(4096, "x") == 4096 and parse_bytes("10 kB", "x") == 10240
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(tmp_path))
    monkeypatch.setenv("REHEARSAL_URL_FOR_TEST", "postgresql://rehearser@rehearsal.example:5432/postgres")
    monkeypatch.setenv("DB_URL_FOR_TEST", "postgresql://app@db.example:5432/askfrank")
    db = "database_url: {env: DB_URL_FOR_TEST}\n"
    (tmp_path / "prod.yaml").write_text("environment: prod\n" + db +
                                        "rehearsal: {server_url: {env: REHEARSAL_URL_FOR_TEST}, max_backup_bytes: 2GB}\n")
    conf = rehearsal_config(load_environment("prod"))
    assert conf.enabled and conf.max_backup_bytes == 2 * 1024**3 and conf.server_url and "rehearsal.example" in conf.server_url
    (tmp_path / "dev.yaml").write_text("environment: dev\n" + db)
    assert not rehearsal_config(load_environment("dev")).enabled
    for bad, message in (("{enabled: yes please}", "rehearsal.enabled must be true or false"),
                         ("{enabled: true, max_backup_bytes: huge}", "rehearsal.max_backup_bytes='huge' is not a size"),
                         ("{enabeld: true}", "unknown rehearsal key(s) enabeld"),
                         ("[1, 2]", "rehearsal must be a mapping")):
        (tmp_path / "staging.yaml").write_text(f"environment: staging\n{db}rehearsal: {bad}\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            rehearsal_config(load_environment("staging"))
