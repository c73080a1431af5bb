"""A backup is ``latest`` only when complete (issue 10.4), proven with real kill -9s of real backups
against moto's S3 server and a folder: after CompleteMultipartUpload (before the sha256 is recorded),
mid-upload, and mid-write of a file:// backup. ``list`` marks what is incomplete, ``latest``, prune and
the restore drill use only complete backups, and ``backups prune`` removes interrupted uploads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, SERVER_URL, create_database, dbname_of, drop_database, url_for
from migrator.backup import (
    BackupError,
    create_backup,
    find_leftovers,
    list_backups,
    make_key,
    prune_backups,
    restore_backup,
    verify_backup,
)
from migrator.backup.stores import open_store
from migrator.config import Settings
from s3_server import S3Server, serve

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def db(pg_server: str) -> Iterator[str]:
    """schema_migrations at version 3 and ~12 MiB of incompressible rows: three 5 MiB parts."""
    name = create_database(SERVER_URL, prefix="bkint")
    url = url_for(SERVER_URL, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
            conn.execute("INSERT INTO schema_migrations VALUES (3, false)")
            conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL)")
            conn.execute("ALTER TABLE blobs ALTER data SET STORAGE EXTERNAL")
            with conn.cursor() as cur:
                for i in range(12):
                    cur.execute("INSERT INTO blobs VALUES (%s, %s)", (i, os.urandom(MiB)))
        yield url
    finally:
        drop_database(SERVER_URL, name)


@pytest.fixture
def target_db(pg_server: str) -> Iterator[str]:
    name = create_database(SERVER_URL, prefix="bkitg")
    try:
        yield url_for(SERVER_URL, name)
    finally:
        drop_database(SERVER_URL, name)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    monkeypatch.setenv("BACKUP_PART_SIZE", "5MiB")
    monkeypatch.delenv("BACKUP_KMS_KEY_ID", raising=False)
    monkeypatch.delenv("BACKUP_SSE", raising=False)
    yield from serve(monkeypatch)


def settings(url: str, dest: str) -> Settings:
    return Settings.from_env(database_url=url, backup_url=dest, environment="test")


def child_env(db_url: str, dest: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "BACKUP_URL": dest, "MIGRATOR_ENV": "test", "BACKUP_PART_SIZE": "5MiB"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    return env


def kill_when(proc: subprocess.Popen[bytes], ready: Any, timeout: float = 60) -> None:
    """kill -9 ``proc`` as soon as ``ready()`` is true (polled), as an operator or the OOM killer would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the backup ended (exit {proc.returncode}) before the kill point")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("kill point not reached")


# ---------------------------------------------------------------------------------------------- S3


def test_kill_right_after_complete_multipart_upload(s3: S3Server, db: str, target_db: str, cli: Any) -> None:
    """The field case: killed between CompleteMultipartUpload and recording the sha256. The good backup
    taken before stays `latest`, for verify, restore (the drill) and prune alike."""
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/b"
    s = settings(db, dest)
    good = create_backup(s)
    time.sleep(0.01)  # the killed backup's key is newer

    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "killpoint.py"), "CompleteMultipartUpload", "backup"],
        env=child_env(db, dest),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()

    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == 2 and keys[0] == good.key  # the good backup and the killed one's staging object
    listed = list_backups(s)
    assert [(b.key, b.complete) for b in listed] == [(good.key, True)]  # no second .dump: never final
    (left,) = find_leftovers(s)
    assert left.kind == "staging object" and left.size and left.size > 10 * MiB

    assert verify_backup(s, "latest").key == good.key
    assert restore_backup(s, "latest", target_db).key == good.key  # what the restore drill does

    env = {"DATABASE_URL": db, "MIGRATOR_ENV": "test", "BACKUP_URL": dest}
    r = cli("backups", "list", env=env)
    assert r.code == 0 and good.key in r.out and "1 unfinished upload(s)" in r.err
    # within the 24 h grace, but its name says which process wrote it, on this host, and it is gone (issue 19)
    r = cli("backups", "prune", "--keep-last", "1", "--keep-days", "0", "--yes", env=env)
    assert r.code == 0, r.err
    assert f"removed staging object {left.key}" in r.err and "of a process that is gone" in r.err
    assert "nothing to delete; kept 1 backup(s)" in r.err and "left alone" not in r.err
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [good.key]


@pytest.mark.parametrize("operation", ["UploadPart", "CompleteMultipartUpload", "CopyObject", "DeleteObject"])
def test_kill_at_every_step_of_an_s3_backup(s3: S3Server, db: str, operation: str) -> None:
    """kill -9 right after each S3 call of a backup: whatever is listed is complete, ``latest`` is a
    complete backup, and prune (grace 0) leaves only complete backups and no unfinished upload."""
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/k"
    s = settings(db, dest)
    good = create_backup(s)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "killpoint.py"), operation, "backup"],
        env=child_env(db, dest),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    listed = list_backups(s)
    assert all(b.complete for b in listed) and good.key in [b.key for b in listed]
    assert len(listed) == (2 if operation in ("CopyObject", "DeleteObject") else 1)  # final only after the copy
    assert verify_backup(s, "latest").key == listed[0].key

    prune_backups(s, keep_last=10, keep_days=0, yes=True, orphan_grace_hours=0)
    client = s3.client()
    assert [b.key for b in list_backups(s)] == [b.key for b in listed]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(b.key for b in listed)


def test_the_next_backup_removes_what_a_killed_s3_backup_left(s3: S3Server, db: str) -> None:
    """Issue 19: killed after uploading a part, the backup leaves an unfinished multipart upload at a
    staging key naming its pid; the next backup aborts it (the process is gone) and says what it freed."""
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/n"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "killpoint.py"), "UploadPart", "backup"],
        env=child_env(db, dest),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.wait(timeout=300) == -signal.SIGKILL
    client = s3.client()
    (up,) = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert f"-{proc.pid}-" in up["Key"] and up["Key"].endswith(".partial")

    result = create_backup(settings(db, dest))
    assert result.cleanup is not None
    assert result.cleanup.startswith(f"removed 1 leftover of an interrupted backup ({up['Key']}, 5.0 MB) ")
    assert result.cleanup.endswith(f"of a process that is gone (pid {proc.pid} on this host)")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [b.key for b in list_backups(settings(db, dest))] == [result.key]
    assert create_backup(settings(db, dest)).cleanup is None  # nothing left to remove


def test_kill_mid_upload_leaves_an_unfinished_upload_that_prune_aborts(s3: S3Server, db: str, cli: Any) -> None:
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/m"
    client = s3.client()

    def parts_uploaded() -> bool:
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            if client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts"):
                return True
        return False

    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "backup"],
        env=child_env(db, dest),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when(proc, parts_uploaded)

    s = settings(db, dest)
    assert list_backups(s) == [] and client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(BackupError, match="no backups of database"):
        restore_backup(s, "latest")
    env = {"DATABASE_URL": db, "MIGRATOR_ENV": "test", "BACKUP_URL": dest}
    r = cli("backups", "list", env=env)
    assert "no backups found" in r.err and "1 unfinished upload(s)" in r.err

    r = cli("backups", "prune", "--keep-last", "1", "--keep-days", "0", "--orphan-grace", "0", "--json", env=env)
    (would,) = json.loads(r.out)["leftovers"]  # a dry run names it
    assert would["kind"] == "unfinished multipart upload" and would["size"] >= 5 * MiB
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    r = cli("backups", "prune", "--keep-last", "1", "--keep-days", "0", "--orphan-grace", "0", "--yes", env=env)
    assert r.code == 0 and f"removed unfinished multipart upload {would['key']}" in r.err
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_object_without_sha256_is_marked_and_never_latest_or_kept(s3: S3Server, db: str, cli: Any) -> None:
    """What the old code left after that kill: the newest object, no sha256. With 15 good backups,
    `prune --keep-last 1` kept it and deleted all 15; now it keeps the newest complete one."""
    bucket = s3.create_bucket()
    dest = f"s3://{bucket}/l"
    s = settings(db, dest)
    client = s3.client()
    template = create_backup(s)
    store = open_store(dest)
    dbname = dbname_of(db)
    now = datetime.now(UTC)
    good = [make_key(store, "test", dbname, now - timedelta(days=d), 3) for d in range(1, 15)]
    for key in good:
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": template.key})
    bad = make_key(store, "test", dbname, now + timedelta(minutes=1), 3)
    head = client.head_object(Bucket=bucket, Key=template.key)
    meta = {k: v for k, v in head["Metadata"].items() if k not in ("sha256", "size")}
    client.copy_object(
        Bucket=bucket,
        Key=bad,
        CopySource={"Bucket": bucket, "Key": template.key},
        Metadata=meta,
        MetadataDirective="REPLACE",
    )

    listed = list_backups(s)
    assert listed[0].key == bad and not listed[0].complete and "no sha256" in (listed[0].problem or "")
    assert all(b.complete for b in listed[1:]) and len(listed) == 16
    env = {"DATABASE_URL": db, "MIGRATOR_ENV": "test", "BACKUP_URL": dest}
    r = cli("backups", "list", env=env)
    assert f"{bad} INCOMPLETE" in r.out.replace("\n", "") or "INCOMPLETE" in r.out
    assert "1 INCOMPLETE object(s)" in r.err
    r = cli("backups", "list", "--json", env=env)
    assert [b["complete"] for b in json.loads(r.out)][:2] == [False, True]

    assert verify_backup(s, "latest").key == template.key
    result = prune_backups(s, keep_last=1, keep_days=0, yes=True)
    assert [b.key for b in result.kept] == [template.key] and len(result.deleted) == 14
    assert [b.key for b in result.waiting] == [bad]  # younger than the grace period: left alone
    result = prune_backups(s, keep_last=1, keep_days=0, yes=True, orphan_grace_hours=0)
    assert [b.key for b in result.incomplete] == [bad]
    assert [(b.key, b.complete) for b in list_backups(s)] == [(template.key, True)]


# ------------------------------------------------------------------------------------------ file://


def test_kill_mid_write_of_a_file_backup(db: str, tmp_path: Path, cli: Any) -> None:
    dest = f"file://{tmp_path}/b"
    s = settings(db, dest)
    good = create_backup(s)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "backup"],
        env=child_env(db, dest),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = tmp_path / "b"
    kill_when(proc, lambda: any(p.stat().st_size > 2 * MiB for p in root.glob(".incoming-*.partial")))
    (partial,) = root.glob(".incoming-*.partial")

    assert [(b.key, b.complete) for b in list_backups(s)] == [(good.key, True)]
    env = {"DATABASE_URL": db, "MIGRATOR_ENV": "test", "BACKUP_URL": dest}
    r = cli("backups", "list", env=env)
    assert "1 unfinished upload(s)" in r.err
    # a sidecar without its dump (killed between the two renames) and a dump without a sidecar
    orphan = root / "test" / "x" / "20260101T000000.000Z_v1.dump.json"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}")
    lonely = root / good.key.replace(".dump", "9.dump")
    lonely.write_bytes(b"PGDMP")
    old = time.time() - 3 * 3600
    for p in (partial, orphan, lonely):
        os.utime(p, (old, old))
    listed = list_backups(s)
    assert [b.complete for b in listed] == [False, True] and listed[0].key.endswith("9.dump")

    r = cli(
        "backups", "prune", "--all", "--keep-last", "5", "--keep-days", "0", "--orphan-grace", "2", "--yes", env=env
    )
    assert r.code == 0, r.err
    assert f"removed partial file {partial.name}" in r.err and "removed metadata without its dump" in r.err
    assert "removed incomplete backup" in r.err and "kept 1 backup(s)" in r.err
    assert not partial.exists() and not orphan.exists() and not lonely.exists()
    assert [b.key for b in list_backups(s)] == [good.key] and verify_backup(s, "latest").ok


@pytest.mark.parametrize("grace", ["-1", "nan", "inf"])
def test_a_bad_grace_period_is_one_line_exit_2(grace: str, tmp_path: Path, cli: Any) -> None:
    r = cli(
        "backups",
        "prune",
        "--keep-last",
        "1",
        "--keep-days",
        "1",
        "--orphan-grace",
        grace,
        "--yes",
        "--from",
        f"file://{tmp_path}",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x"},
    )
    assert r.code == 2 and r.err == "error: --orphan-grace must be a number of hours >= 0\n"
