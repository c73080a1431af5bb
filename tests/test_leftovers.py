"""Issue 19, "a kill leaves nothing behind": a rehearsal or a backup killed with -9 leaves its scratch
database or ``.partial`` dump, named after the process that made it; the next rehearsal / backup (and
``backups prune``) removes it once that process is gone and says how much it freed, and never removes
what a live process (or an open session) still uses. A truncated newest backup is reported by
``rehearse``, which says which backup it restored instead. Real kills of real processes, against a
PostgreSQL server of the module's own (see ``server``) and a file:// store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, SERVER_URL, create_database, drop_database, embedded_server, reap, url_for, write_migration
from migrator import leftover

pytestmark = pytest.mark.db

JUST = "-- Business justification: test\n"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A PostgreSQL server of this module's own: a rehearsal sweeps its whole scratch server, so on
    the shared one another xdist worker's rehearsal would drop this module's leftovers before the
    sweep under test could find and report them."""
    with embedded_server("migrator-leftovers-") as url:
        yield url


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, server: str) -> Iterator[dict[str, Any]]:
    """A database at version 1 with ~15 MB of rows, and one file:// backup of it."""
    from migrator.backup import create_backup
    from migrator.config import Settings
    from migrator.engine import Migrator

    root = tmp_path_factory.mktemp("leftovers")
    base = root / "base"
    base.mkdir()
    write_migration(base, 1, "create_notes", JUST + "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);",
                    JUST + "DROP TABLE IF EXISTS notes;")
    name = create_database(server, "leftover_src")
    url = url_for(server, name)
    backups = root / "backups"
    try:
        Migrator(Settings(database_url=url, migrations_path=base)).up()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO notes SELECT i, md5(i::text) || md5((i + 1)::text) "
                         "FROM generate_series(1, 100000) AS i")
        backup = create_backup(Settings(database_url=url, backup_url=f"file://{backups}", environment="local"))
        yield {"url": url, "base": base, "backups": backups, "backup": backup}
    finally:
        drop_database(server, name)


@pytest.fixture
def env(source: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "migrations"
    d.mkdir()
    for f in source["base"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return {"DATABASE_URL": source["url"], "MIGRATIONS_PATH": str(d), "BACKUP_URL": f"file://{source['backups']}",
            "MIGRATOR_ENV": "local", "MIGRATOR_DEPLOYMENTS_DIR": str(tmp_path)}


def child_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}


def one(server: str, query: str, *params: object) -> Any:
    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    """Poll ``check()`` until it returns something truthy (the kill points and the server's clean-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:g} s")


def scratch_exists(server: str, name: str) -> bool:
    return one(server, "SELECT 1 FROM pg_database WHERE datname = %s", name) == 1


# ----------------------------------------------------------------------------------------- rehearsal


def test_a_rehearsal_killed_with_sigkill_leaves_a_scratch_database_the_next_one_removes(
    cli: Any, env: dict[str, str], server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_migration(Path(env["MIGRATIONS_PATH"]), 2, "slow", JUST + "SELECT pg_sleep(3);",
                    JUST + "SELECT 1;")
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "rehearse", "--scratch-url", server, "--allow-same-server"],
        env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        scratch = wait_for("the migration starting on the copy", lambda: one(
            server,
            r"SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%%' "
            r"AND datname LIKE 'migrator\_scratch\_rehearsal\_%%' AND split_part(datname, '_', 5) = %s",
            str(proc.pid)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL
    assert scratch_exists(server, scratch)  # kill -9 ran no clean-up: the full copy is still there
    size = one(server, "SELECT pg_database_size(%s)", scratch)
    assert size > 10 * MiB
    # the killed process's session ends when its statement does (nothing tells the server sooner)
    wait_for("the killed rehearsal's session ending",
             lambda: one(server, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", scratch) == 0)

    write_migration(Path(env["MIGRATIONS_PATH"]), 2, "slow", JUST + "SELECT 1;", JUST + "SELECT 1;")
    r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)
    assert r.code == 0, r.err
    expected = (f"removed 1 leftover scratch database ({scratch}, {leftover.human_size(size)}) of a process that "
                f"is gone (pid {proc.pid} on this host)")
    assert expected in r.err
    assert not scratch_exists(server, scratch)
    with capsys.disabled():  # the measurement, shown with -s
        print(f"\nfreed by the next rehearsal: {size} bytes ({leftover.human_size(size)}) in {scratch}")

    r = cli("rehearse", "--json", "--scratch-url", server, "--allow-same-server", env=env)
    assert r.code == 0 and json.loads(r.out)["cleanup"] is None  # nothing left to remove


def test_a_scratch_database_of_a_live_process_or_with_a_session_is_kept(cli: Any, env: dict[str, str],
                                                                        server: str) -> None:
    """Never removed: one whose process still runs, one whose process is gone but that a session
    still uses, one of another host younger than 24 h. Removed: another host's older than 24 h, and
    one whose PID now belongs to a process started after the name was made (PIDs are reused)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = leftover.host_tag()
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 1))
    old = "20200101000000"
    live = f"migrator_scratch_rehearsal_{host}_{sleeper.pid}_{now}_aaaa"
    in_use = f"migrator_scratch_rehearsal_{host}_{dead.pid}_{now}_bbbb"
    young_other = f"migrator_scratch_rehearsal_0badc0de_{sleeper.pid}_{now}_cccc"
    old_other = f"migrator_scratch_rehearsal_0badc0de_{sleeper.pid}_{old}_dddd"
    reused = f"migrator_scratch_rehearsal_{host}_{sleeper.pid}_{old}_eeee"  # the sleeper started after 2020
    names = [live, in_use, young_other, old_other, reused]
    try:
        for name in names:
            create_database(server, name=name)
        with psycopg.connect(url_for(server, in_use)):  # a session on the dead process's database
            r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)
            assert r.code == 0, r.err
            assert all(scratch_exists(server, n) for n in (live, in_use, young_other))
            assert not any(scratch_exists(server, n) for n in (old_other, reused))
            assert "removed 2 leftover scratch databases" in r.err
            assert f"{old_other} (" in r.err and "older than 24 h" in r.err
            assert f"{reused} (" in r.err and f"of a process that is gone (pid {sleeper.pid} on this host)" in r.err
        r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)  # the session closed
        assert r.code == 0, r.err
        assert f"removed 1 leftover scratch database ({in_use}, " in r.err
        assert not scratch_exists(server, in_use) and all(scratch_exists(server, n) for n in (live, young_other))
        sleeper.kill()
        sleeper.wait()
        r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)
        assert r.code == 0 and f"removed 1 leftover scratch database ({live}, " in r.err
        assert scratch_exists(server, young_other)
    finally:
        sleeper.kill()
        sleeper.wait()  # reaped here: a failure above must not surface as another test's ResourceWarning
        for name in names:
            drop_database(server, name)


def test_a_truncated_newest_backup_is_reported_not_skipped(cli: Any, env: dict[str, str], source: dict[str, Any],
                                                          server: str, tmp_path: Path) -> None:
    """The newest backup fails verification (its dump is shorter than its metadata says): rehearse
    says so (warning line, report, JSON), restores the newest complete one, and names it."""
    good = source["backup"]
    backups = tmp_path / "backups"
    src = source["backups"]
    for p in src.rglob("*"):
        if p.is_file():
            dst = backups / p.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    newer = backups / good.key.replace(good.key.rsplit("/", 1)[1], "29991231T235959.000Z_v1.dump")
    data = (backups / good.key).read_bytes()
    newer.write_bytes(data[: len(data) // 2])  # truncated: a disk that filled, a copy cut short
    meta = json.loads((backups / (good.key + ".json")).read_text())
    (newer.parent / (newer.name + ".json")).write_text(json.dumps(meta))
    env = {**env, "BACKUP_URL": f"file://{backups}"}

    r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)
    assert r.code == 0, r.err
    warning = next(line for line in r.err.splitlines() if line.startswith("warning: the newest backup"))
    newer_key = newer.relative_to(backups).as_posix()
    assert f"the newest backup {newer_key}, taken 2999-12-31 23:59:59 UTC, is INCOMPLETE" in warning
    assert f"its metadata records {len(data)} bytes, the stored object has {len(data) // 2}" in warning
    assert f"rehearsed on the newest complete one instead, {good.key}" in warning and "migrator backup" in warning
    assert f"restoring backup {good.key} (taken " in r.err  # which backup, and when it was taken
    assert f"backup {good.key} (" in r.out and ", taken " in r.out
    assert "warning: the newest backup" in r.out  # repeated with the report's warnings

    r = cli("rehearse", "--json", "--scratch-url", server, "--allow-same-server", env=env)
    report = json.loads(r.out)
    assert report["backup_key"] == good.key and report["backup_created_at"].startswith(good.created_at[:19])
    assert "INCOMPLETE" in report["backup_problem"] and report["warnings"][0] == report["backup_problem"]

    from migrator.rehearse.model import RehearsalReport
    from migrator.rehearse.report import to_markdown

    fields = {k: v for k, v in report.items() if k in RehearsalReport.__dataclass_fields__ and k != "migrations"}
    md = to_markdown(RehearsalReport(**fields))
    assert md.split("\n")[2].startswith("> ⚠ **Warning:** the newest backup")  # under the headline, for the approver
    assert md.count("the newest backup") == 1 and ", taken " in md

    newer.unlink()
    (newer.parent / (newer.name + ".json")).unlink()
    only_bad = backups / good.key
    only_bad.write_bytes(data[:100])
    r = cli("rehearse", "--scratch-url", server, "--allow-same-server", env=env)
    assert r.code == 1 and r.err.strip().splitlines()[-1].startswith(
        f"error: no complete backup of 'local' to rehearse on: the newest, {good.key}, is INCOMPLETE")


# ------------------------------------------------------------------------------------------- backups


def test_a_backup_killed_with_sigkill_leaves_a_partial_file_the_next_backup_removes(
    cli: Any, source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "b"
    env = {"DATABASE_URL": source["url"], "BACKUP_URL": f"file://{dest}", "MIGRATOR_ENV": "local"}
    # the backup stops writing after 1 MiB, so the kill lands mid-write whatever the machine's speed
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path[:0] = sys.argv[1:]; "
         "import migrator.backup.stores as s; w = s.FileUpload.write\n"
         "def stall(self, part):\n    w(self, part)\n    self.file.flush()\n"
         "    if self.partial.stat().st_size >= 2**20: time.sleep(600)\n"
         "s.FileUpload.write = stall\nfrom migrator.cli import run; run(['backup'])", str(ROOT)],
        env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        partial = wait_for("the dump being written", lambda: next(
            (p for p in dest.glob(".incoming-*.dump.partial") if p.stat().st_size >= MiB), None))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL
    assert partial.exists() and f"-{proc.pid}-" in partial.name  # who made it, in its name
    size = partial.stat().st_size

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        now = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 1))
        live = dest / f".incoming-{leftover.host_tag()}-{sleeper.pid}-{now}-cccc.dump.partial"
        live.write_bytes(b"x" * 1000)  # a backup still being written by a live process
        r = cli("backup", env=env)
        assert r.code == 0, r.err
        expected = (f"removed 1 leftover of an interrupted backup ({partial.name}, {leftover.human_size(size)}) "
                    f"of a process that is gone (pid {proc.pid} on this host)")
        assert expected in r.err
        assert not partial.exists() and live.exists()
        with capsys.disabled():
            print(f"\nfreed by the next backup: {size} bytes ({leftover.human_size(size)}) in {partial.name}")

        r = cli("backups", "prune", "--keep-last", "5", "--keep-days", "0", "--orphan-grace", "0", "--yes", env=env)
        assert r.code == 0, r.err  # even with no grace period at all
        assert live.exists() and f"left alone: partial file {live.name} (1000 B): its process {sleeper.pid} " \
                                 "is still running" in r.err
    finally:
        sleeper.kill()
        sleeper.wait()
    r = cli("backups", "prune", "--keep-last", "5", "--keep-days", "0", "--yes", env=env)  # default 24 h grace
    assert r.code == 0 and f"removed partial file {live.name}" in r.err and "of a process that is gone" in r.err
    assert not live.exists()


def test_two_scratch_databases_with_the_same_name_tag_get_two_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two scratch databases of one process in one second whose random parts collide: the second
    one draws again instead of failing with 'already exists' (or blaming CREATEDB)."""
    from migrator.config import prepare_url
    from migrator.scratch import scratch_database

    tag = f"{leftover.host_tag()}_{os.getpid()}_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    suffixes = iter(["a1a1", "a1a1", "b2b2"])
    monkeypatch.setattr(leftover, "maker_tag", lambda sep="_", now=None: tag)
    monkeypatch.setattr(leftover, "random_suffix", lambda: next(suffixes))
    server = prepare_url(SERVER_URL)
    with scratch_database(server, "roundtrip", sweep=False) as first, \
            scratch_database(server, "roundtrip", sweep=False) as second:
        names = [psycopg.conninfo.conninfo_to_dict(c)["dbname"] for c in (first, second)]
        assert names == [f"migrator_scratch_roundtrip_{tag}_a1a1", f"migrator_scratch_roundtrip_{tag}_b2b2"]
        assert all(scratch_exists(SERVER_URL, str(n)) for n in names)
    assert not any(scratch_exists(SERVER_URL, str(n)) for n in names)
