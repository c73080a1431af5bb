"""Backups against the real PostgreSQL and a real S3 protocol server (moto's server mode on 127.0.0.1):
multipart streaming, encryption and metadata, verification, a server dying mid-upload, missing
bucket and credentials, restore round trips, retention and the file:// destination."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import SERVER_URL, create_database, dbname_of, drop_database, url_for
from migrator.backup import (
    BackupError,
    BackupIntegrityError,
    StorageError,
    create_backup,
    list_backups,
    make_key,
    parse_key,
    prune_backups,
    restore_backup,
    verify_backup,
)
from migrator.backup.pgtools import find_tool
from migrator.backup.stores import open_store
from migrator.config import Settings
from s3_server import S3Server, serve

SENTINEL = "S3nt1nel-Pw-7731"
MiB = 1024 * 1024


def with_password(url: str) -> str:
    """The test server trusts local connections; the password is only there to prove it never leaks."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SENTINEL}@")


def settings(url: str, dest: str, **kw: Any) -> Settings:
    return Settings.from_env(database_url=with_password(url), backup_url=dest, environment="test", **kw)


def fill(url: str, random_mib: int) -> None:
    """schema_migrations at version 7, a patients table, and ``random_mib`` MiB of incompressible bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (7, false)")
        conn.execute("CREATE TABLE patients (id int PRIMARY KEY, name text NOT NULL, born date, note text)")
        conn.execute(
            """INSERT INTO patients SELECT g, 'patient ' || g, date '1950-01-01' + g, md5(g::text)
               FROM generate_series(1, 3000) g"""
        )
        conn.execute("CREATE INDEX patients_name ON patients (name)")
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL)")
        conn.execute("ALTER TABLE blobs ALTER data SET STORAGE EXTERNAL")
        with conn.cursor() as cur:
            for i in range(random_mib):
                cur.execute("INSERT INTO blobs VALUES (%s, %s)", (i, os.urandom(MiB)))


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            "state": conn.execute("SELECT version, dirty FROM schema_migrations").fetchall(),
            "patients": conn.execute("SELECT * FROM patients ORDER BY id").fetchall(),
            "blobs": conn.execute("SELECT id, md5(data), length(data) FROM blobs ORDER BY id").fetchall(),
        }


@pytest.fixture(scope="module")
def big_db(pg_server: str) -> Iterator[str]:
    """~20 MiB of random data: its dump needs several 5 MiB parts."""
    name = create_database(SERVER_URL, prefix="bkbig")
    url = url_for(SERVER_URL, name)
    try:
        fill(url, 20)
        yield url
    finally:
        drop_database(SERVER_URL, name)


@pytest.fixture
def small_db(db_url: str) -> str:
    fill(db_url, 1)
    return db_url


@pytest.fixture
def target_db(pg_server: str) -> Iterator[str]:
    name = create_database(SERVER_URL, prefix="bkdst")
    try:
        yield url_for(SERVER_URL, name)
    finally:
        drop_database(SERVER_URL, name)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    yield from serve(monkeypatch)


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PART_SIZE", "5MiB")  # S3's minimum for every part but the last
    monkeypatch.delenv("BACKUP_KMS_KEY_ID", raising=False)
    monkeypatch.delenv("BACKUP_SSE", raising=False)


def assert_no_sentinel(*texts: object) -> None:
    for t in texts:
        assert SENTINEL not in str(t)


# --------------------------------------------------------------------------------------------- S3


def test_multipart_upload_with_encryption_and_metadata(s3: S3Server, big_db: str, small_parts: None) -> None:
    bucket = s3.create_bucket()
    client = s3.client()
    parts_seen: list[int] = []

    def progress(done: int) -> None:  # between parts: what does the server hold so far?
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            listed = client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            parts_seen.append(len(listed.get("Parts", [])))

    result = create_backup(settings(big_db, f"s3://{bucket}/prod-backups"), run_id="run-42", progress=progress)

    assert max(parts_seen) >= 2, "the dump was not streamed as a multipart upload"
    assert result.parts >= 4 and result.size > 20 * MiB
    db = dbname_of(big_db)
    assert result.key.startswith(f"prod-backups/test/{db}/") and result.key.endswith("_v7.dump")
    head = client.head_object(Bucket=bucket, Key=result.key)
    assert head["ServerSideEncryption"] == "AES256"
    meta = head["Metadata"]
    body = client.get_object(Bucket=bucket, Key=result.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.sha256 == meta["sha256"]
    assert int(meta["size"]) == len(body) == head["ContentLength"] == result.size
    assert meta["database"] == db and meta["environment"] == "test" and meta["run-id"] == "run-42"
    assert meta["schema-version"] == "7" and meta["dirty"] == "false"
    assert meta["server-version"].startswith("15.") and meta["tool-version"].startswith("migrator ")
    assert body[:5] == b"PGDMP"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert_no_sentinel(head, result.to_dict())

    verified = verify_backup(settings(big_db, f"s3://{bucket}/prod-backups"), "latest")
    assert verified.ok and verified.toc_entries > 5


def test_kms_encryption_when_configured(s3: S3Server, small_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.create_bucket()
    key_id = "arn:aws:kms:us-east-1:123456789012:key/0b6f2a5e-backup"
    monkeypatch.setenv("BACKUP_KMS_KEY_ID", key_id)
    result = create_backup(settings(small_db, f"s3://{bucket}"))
    head = s3.client().head_object(Bucket=bucket, Key=result.key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_id
    assert result.parts == 1 and result.encryption == "aws:kms"


def test_verify_and_restore_catch_a_corrupted_object(s3: S3Server, small_db: str, target_db: str, cli: Any) -> None:
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/b"
    result = create_backup(settings(small_db, dest))
    client = s3.client()
    head = client.head_object(Bucket=bucket, Key=result.key)
    body = bytearray(client.get_object(Bucket=bucket, Key=result.key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped byte, same size, same metadata
    client.put_object(Bucket=bucket, Key=result.key, Body=bytes(body), Metadata=head["Metadata"])

    env = {"DATABASE_URL": with_password(small_db), "MIGRATOR_ENV": "test"}
    r = cli("backup", "verify", result.key, "--from", dest, env=env)
    assert r.code == 1
    assert "failed verification" in r.err and "corrupted" in r.err and result.key in r.err
    with pytest.raises(BackupIntegrityError, match="corrupted"):
        verify_backup(settings(small_db, dest), result.key)

    r = cli("restore", result.key, "--from", dest, "--target-url", with_password(target_db), env=env)
    assert r.code == 1 and "corrupted" in r.err and "rolled back" in r.err
    with psycopg.connect(target_db) as conn:  # nothing half-restored
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    assert_no_sentinel(r.out, r.err)


def _crash_later(server: S3Server) -> None:
    t = threading.Thread(target=server.stop, name="crash-s3")
    t.start()
    t.join(timeout=20)


def test_server_dying_mid_upload_leaves_no_object(s3: S3Server, big_db: str, small_parts: None) -> None:
    bucket = s3.create_bucket()
    calls: list[int] = []

    def progress(done: int) -> None:
        calls.append(done)
        if len(calls) == 2:  # the first part is on the server, more are coming
            _crash_later(s3)

    with pytest.raises(StorageError) as info:
        create_backup(settings(big_db, f"s3://{bucket}/x"), progress=progress)
    msg = str(info.value)
    assert "cannot reach the S3 endpoint" in msg and "AWS_ENDPOINT_URL_S3" in msg
    assert "could not abort multipart upload" in msg  # the server was gone: says so, and what cleans it up
    assert "\n" not in msg
    assert_no_sentinel(msg)

    s3.start()  # same port, same data: nothing that looks like a backup was left
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_pg_dump_dying_mid_stream_aborts_the_upload(s3: S3Server, big_db: str, small_parts: None) -> None:
    bucket = s3.create_bucket()
    client = s3.client()
    calls: list[int] = []

    def progress(done: int) -> None:
        calls.append(done)
        if len(calls) == 2:  # parts are on the server; now pg_dump's session dies
            with psycopg.connect(big_db, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'pg_dump' AND datname = current_database()"
                )

    with pytest.raises(BackupError) as info:
        create_backup(settings(big_db, f"s3://{bucket}/x"), progress=progress)
    msg = str(info.value)
    assert "pg_dump (15." in msg and "failed with exit code 1" in msg and "no backup was stored" in msg
    assert "terminat" in msg  # pg_dump's own stderr explains it
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted: no parts kept


def test_server_dying_mid_upload_through_the_cli(s3: S3Server, big_db: str, small_parts: None, cli: Any) -> None:
    bucket = s3.create_bucket()
    watcher_client = s3.client()
    stop = threading.Event()

    def watch() -> None:  # another thread stops the server once the multipart upload has begun
        while not stop.is_set():
            try:
                if watcher_client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
                    s3.stop()
                    return
            except Exception:
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = cli("backup", "--to", f"s3://{bucket}/x", env={"DATABASE_URL": with_password(big_db)})
    finally:
        stop.set()
        watcher.join()
    assert r.code != 0
    assert r.err.startswith("error: ") and "cannot reach the S3 endpoint" in r.err
    assert_no_sentinel(r.out, r.err)
    s3.start()
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_missing_bucket(s3: S3Server, small_db: str, cli: Any) -> None:
    r = cli("backup", "--to", "s3://no-such-bucket-here/p", env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 1
    assert "S3 bucket 'no-such-bucket-here' does not exist" in r.err and "BACKUP_URL" in r.err
    assert_no_sentinel(r.out, r.err)


def test_missing_credentials(s3: S3Server, small_db: str, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.create_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = cli("backup", "--to", f"s3://{bucket}", env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 1 and "no usable S3 credentials" in r.err and "AWS_ACCESS_KEY_ID" in r.err


def test_unreachable_endpoint(small_db: str, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    S3Server().env(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    r = cli("backup", "--to", "s3://bucket/p", env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 1 and f"cannot reach the S3 endpoint at http://127.0.0.1:{port}" in r.err


def test_unreachable_database(tmp_path: Path, cli: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres:{SENTINEL}@127.0.0.1:{port}/askfrank"
    r = cli("backup", "--to", f"file://{tmp_path}", env={"DATABASE_URL": url})
    assert r.code == 2 and f"cannot connect to postgresql://postgres:****@127.0.0.1:{port}/askfrank" in r.err
    assert "DATABASE_URL" in r.err and r.err.count("\n") == 1
    assert_no_sentinel(r.out, r.err)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_credentials_in_the_destination_url_are_refused(small_db: str, cli: Any) -> None:
    r = cli("backup", "--to", f"s3://AKIA:{SENTINEL}@bucket/p", env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 2 and "must not contain credentials" in r.err
    assert_no_sentinel(r.out, r.err)


def test_restore_round_trip_from_s3(s3: S3Server, big_db: str, target_db: str, small_parts: None, cli: Any) -> None:
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/rt"
    backup = create_backup(settings(big_db, dest))
    env = {"DATABASE_URL": with_password(big_db), "MIGRATOR_ENV": "test", "BACKUP_URL": dest}

    r = cli("restore", "latest", "--target-url", with_password(target_db), "--json", env=env)
    assert r.code == 0, r.err
    restored = json.loads(r.out)
    assert restored["key"] == backup.key and restored["sha256"] == backup.sha256
    assert restored["schema_version"] == 7 and restored["backup_schema_version"] == 7
    assert rows(target_db) == rows(big_db)  # row for row, including the random bytes
    assert_no_sentinel(r.out, r.err)

    r = cli("restore", "latest", "--target-url", with_password(target_db), env=env)
    assert r.code == 1 and "is not empty" in r.err and "--clean --yes" in r.err
    r = cli("restore", "latest", "--target-url", with_password(target_db), "--clean", env=env)
    assert r.code == 2 and "--yes" in r.err

    with psycopg.connect(target_db, autocommit=True) as conn:  # drift the target, then replace it
        conn.execute("DELETE FROM patients WHERE id > 10")
        conn.execute("UPDATE schema_migrations SET version = 99")
    r = cli("restore", backup.key, "--target-url", with_password(target_db), "--clean", "--yes", env=env)
    assert r.code == 0, r.err
    assert "schema version 7" in r.err
    assert rows(target_db) == rows(big_db)


# ---------------------------------------------------------------------------------------- file://


def test_file_destination_through_the_cli(small_db: str, target_db: str, tmp_path: Path, cli: Any) -> None:
    dest = f"file://{tmp_path}/backups"
    env = {"DATABASE_URL": with_password(small_db), "MIGRATOR_ENV": "test"}
    r = cli("backup", "--to", dest, "--json", "--run-id", "flow-9", env=env)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    path = tmp_path / "backups" / out["key"]
    data = path.read_bytes()
    assert out["size"] == len(data) and out["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["pg_dump"]["source"] == "machine" and out["schema_version"] == 7
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["sha256"] == out["sha256"] and sidecar["run-id"] == "flow-9" and sidecar["schema-version"] == "7"
    assert not list(tmp_path.rglob("*.partial"))

    r = cli("backup", "verify", out["key"], "--from", dest, env=env)
    assert r.code == 0 and "verified" in r.err
    r = cli("backups", "list", "--from", dest, "--json", env=env)
    listed = json.loads(r.out)
    assert [b["key"] for b in listed] == [out["key"]] and listed[0]["version"] == 7
    r = cli("restore", "latest", "--from", dest, "--target-url", with_password(target_db), env=env)
    assert r.code == 0, r.err
    assert rows(target_db) == rows(small_db)
    assert_no_sentinel(r.out, r.err, sidecar, listed, out)


def test_pg_dump_failure_stores_nothing(small_db: str, tmp_path: Path) -> None:
    role = f"bk_limited_{os.getpid()}"
    with psycopg.connect(small_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON schema_migrations TO {role}")  # but not on patients / blobs
    try:
        url = small_db.replace("postgresql://postgres@", f"postgresql://{role}:{SENTINEL}@")
        s = Settings.from_env(database_url=url, backup_url=f"file://{tmp_path}", environment="test")
        with pytest.raises(BackupError) as info:
            create_backup(s)
        msg = str(info.value)
        assert "pg_dump (15." in msg and "failed with exit code 1" in msg and "permission denied" in msg
        assert "no backup was stored" in msg and "\n" not in msg
        assert_no_sentinel(msg)
        assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    finally:
        with psycopg.connect(small_db, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


# ------------------------------------------------------------------------------------------ prune


def _plant(
    dest: str, s3_client: Any, template_key: str, environment: str, database: str, ages_days: list[float]
) -> list[str]:
    """Copies of a real backup under keys dated ``ages_days`` ago (time comes from the key)."""
    store = open_store(dest)
    now = datetime.now(UTC)
    keys = []
    for age in ages_days:
        key = make_key(store, environment, database, now - timedelta(days=age), 7)
        if s3_client is not None:
            bucket = dest.split("/")[2]
            s3_client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": template_key})
        else:
            root = Path(dest.removeprefix("file://"))
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / template_key, root / key)
            shutil.copy(root / (template_key + ".json"), root / (key + ".json"))
        keys.append(key)
    return keys


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_prune_keeps_exactly_what_the_policy_says(
    kind: str, small_db: str, tmp_path: Path, cli: Any, request: pytest.FixtureRequest
) -> None:
    client = None
    if kind == "s3":
        server: S3Server = request.getfixturevalue("s3")
        dest = f"s3://{server.create_bucket()}/retention"
        client = server.client()
    else:
        dest = f"file://{tmp_path}/b"
    s = settings(small_db, dest)
    db = dbname_of(small_db)
    newest = create_backup(s).key
    old = _plant(dest, client, newest, "test", db, [2, 5, 10, 20, 40, 60])
    other = _plant(dest, client, newest, "test", "otherdb", [90])  # another database: out of scope

    # keep the last 4 (newest, 2d, 5d, 10d) and all younger than 7 days (newest, 2d, 5d)
    dry = prune_backups(s, keep_last=4, keep_days=7)
    assert dry.dry_run and sorted(b.key for b in dry.deleted) == sorted(old[3:])
    assert sorted(b.key for b in dry.kept) == sorted([newest, *old[:3]])
    assert len(list_backups(s)) == 7

    env = {"DATABASE_URL": with_password(small_db), "MIGRATOR_ENV": "test"}
    r = cli("backups", "prune", "--from", dest, "--keep-last", "4", "--keep-days", "7", "--yes", env=env)
    assert r.code == 0, r.err
    assert all(k in r.out for k in [newest, *old]) and "deleted 3 backup(s), kept 4" in r.err
    assert [b.key for b in list_backups(s)] == [newest, *old[:3]]
    assert [b.key for b in list_backups(s, database="otherdb")] == other

    # younger-than wins over keep-last, and the newest is never deleted
    prune_backups(s, keep_last=1, keep_days=3, yes=True)
    assert [b.key for b in list_backups(s)] == [newest, old[0]]
    result = prune_backups(s, keep_last=0, keep_days=0, yes=True)
    assert [b.key for b in result.kept] == [newest] and [b.key for b in list_backups(s)] == [newest]
    assert_no_sentinel(r.out, r.err)


# ------------------------------------------------------------------------------------ tools, keys


def test_tool_choice_machine_or_embedded() -> None:
    machine = find_tool("pg_dump", 15)
    assert machine.source == "machine" and machine.major >= 15
    newer = find_tool("pg_dump", 18)  # the machine has 15: pg_dump 15 refuses a PostgreSQL 18 server
    assert newer.source == "embedded" and newer.major >= 18
    with pytest.raises(BackupError, match="no pg_restore of PostgreSQL 99 or newer"):
        find_tool("pg_restore", 99)


def test_keys_sort_by_time_and_parse_back(tmp_path: Path) -> None:
    store = open_store("s3://bucket/pre/fix")
    t1 = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    key = make_key(store, "prod", "ask/frank", t1, 12)
    assert key == "pre/fix/prod/ask_frank/20260102T030405.006Z_v12.dump"
    assert parse_key(key) == ("prod", "ask_frank", t1, 12)
    assert make_key(store, "prod", "db", t1, -1).endswith("_vnone.dump")
    later = make_key(store, "prod", "db", t1 + timedelta(milliseconds=1), 1)
    assert sorted([later, make_key(store, "prod", "db", t1, 99)])[-1] == later


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "use s3://bucket/prefix or file:///dir"),
        ("s3:///prefix", "has no bucket"),
    ],
)
def test_bad_destination_urls(small_db: str, cli: Any, url: str, message: str) -> None:
    r = cli("backup", "--to", url, env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 2 and message in r.err


def test_part_size_setting_is_checked(s3: S3Server, small_db: str, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PART_SIZE", "1MiB")
    r = cli("backup", "--to", f"s3://{s3.create_bucket()}", env={"DATABASE_URL": with_password(small_db)})
    assert r.code == 2 and "BACKUP_PART_SIZE='1MiB' is below S3's minimum part size of 5MiB" in r.err


def test_restore_of_a_missing_key(tmp_path: Path, small_db: str) -> None:
    s = settings(small_db, f"file://{tmp_path}")
    with pytest.raises(BackupError, match="no backups of database"):
        restore_backup(s, "latest")
    with pytest.raises(StorageError, match="not found"):
        verify_backup(s, "test/x/20260101T000000.000Z_v1.dump")


# ------------------------------------------------------------------------------------------ embedded


def test_embedded_default_uses_the_embedded_tools(
    embedded_server_url: str, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DATABASE_URL and no BACKUP_URL: the embedded PostgreSQL 18 is dumped with the wheel's pg_dump 18
    (the machine's pg_dump 15 refuses a newer server) into ./backups; verify needs pg_restore 18 too."""
    from urllib.parse import parse_qs, urlsplit

    data_dir = parse_qs(urlsplit(embedded_server_url).query)["host"][0]
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BACKUP_URL", "MIGRATOR_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIGRATOR_EMBEDDED_DIR", data_dir)

    r = cli("backup", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["pg_dump"]["source"] == "embedded" and out["pg_dump"]["version"].startswith("18")
    assert out["server_version"].startswith("18") and out["database"] == "askfrank"
    assert (tmp_path / "backups" / out["key"]).is_file() and out["key"].startswith("local/askfrank/")

    r = cli("backup", "verify", "latest", "--json")
    assert r.code == 0, r.err
    verified = json.loads(r.out)
    assert verified["ok"] and verified["pg_restore"]["source"] == "embedded"
