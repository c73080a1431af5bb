"""Restoring across PostgreSQL versions (issue 11.7): a dump of the embedded PostgreSQL 18 restored into
the machine's PostgreSQL 15 is refused before the target is touched, in one line saying why and what
to do (pg_restore itself failed half-way with `unrecognized configuration parameter "transaction_timeout"`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import SERVER_URL, create_database, drop_database, url_for
from migrator.backup import BackupError, create_backup, restore_backup
from migrator.backup.archive import read_header
from migrator.backup.stores import open_store
from migrator.config import Settings


@pytest.fixture
def pg18_db(embedded_server_url: str) -> Iterator[str]:
    name = create_database(embedded_server_url, prefix="v18")
    url = url_for(embedded_server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (4, false)")
        conn.execute("CREATE TABLE patients (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO patients SELECT g, 'p' || g FROM generate_series(1, 100) g")
    try:
        yield url
    finally:
        drop_database(embedded_server_url, name)


@pytest.fixture
def pg15_target(pg_server: str) -> Iterator[str]:
    name = create_database(SERVER_URL, prefix="v15")
    try:
        yield url_for(SERVER_URL, name)
    finally:
        drop_database(SERVER_URL, name)


def public_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_a_pg18_dump_into_pg15_is_refused_before_touching_the_target(
    pg18_db: str, pg15_target: str, tmp_path: Path, cli: Any
) -> None:
    dest = f"file://{tmp_path}/b"
    s = Settings.from_env(database_url=pg18_db, backup_url=dest, environment="test")
    backup = create_backup(s)
    assert backup.server_version.startswith("18")

    with pytest.raises(BackupError) as info:
        restore_backup(s, "latest", pg15_target)
    msg = str(info.value)
    assert f"is a dump of PostgreSQL {backup.server_version}" in msg and "runs PostgreSQL 15." in msg
    assert "restore into PostgreSQL 18 or newer" in msg and "nothing was restored" in msg and "\n" not in msg
    assert public_tables(pg15_target) == []

    r = cli(
        "restore",
        "latest",
        "--target-url",
        pg15_target,
        env={"DATABASE_URL": pg18_db, "BACKUP_URL": dest, "MIGRATOR_ENV": "test"},
    )
    assert r.code == 1 and r.err.count("\n") == 1 and r.err.startswith("error: ")
    assert "PostgreSQL 18 or newer" in r.err and "transaction_timeout" not in r.err
    assert public_tables(pg15_target) == []


def test_a_pg15_dump_restores_into_pg18(pg15_target: str, embedded_server_url: str, tmp_path: Path) -> None:
    """The supported direction still works (older dump, newer server)."""
    with psycopg.connect(pg15_target, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (2, false)")
    s = Settings.from_env(database_url=pg15_target, backup_url=f"file://{tmp_path}", environment="test")
    backup = create_backup(s)
    name = create_database(embedded_server_url, prefix="into18")
    try:
        result = restore_backup(s, backup.key, url_for(embedded_server_url, name))
        assert result.schema_version == 2
    finally:
        drop_database(embedded_server_url, name)


def test_archive_header_names_the_server_and_pg_dump(pg18_db: str, pg15_target: str, tmp_path: Path) -> None:
    for url, server, dump in ((pg18_db, "18", "18"), (pg15_target, "15", None)):
        s = Settings.from_env(database_url=url, backup_url=f"file://{tmp_path}", environment="test")
        backup = create_backup(s)
        head = next(open_store(f"file://{tmp_path}").read(backup.key))
        header = read_header(head)
        assert header is not None and header.server_major == int(server)
        assert header.server_version and header.server_version.split(" ")[0] == backup.server_version
        assert header.pg_dump_version and header.pg_dump_version.startswith(dump or backup.pg_dump["version"])
    assert read_header(b"-- plain SQL dump\n") is None and read_header(b"PGDMP\x01") is None
