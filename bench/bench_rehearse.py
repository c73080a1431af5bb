"""Benchmark: ``migrator rehearse`` vs the plain work it cannot avoid (restore + up) on a >= 1 GB database.

    .venv/bin/python bench/bench_rehearse.py [--rows 10000000] [--keep]

Builds a source database on 127.0.0.1:5432 with a ``patients`` table of at least 1 GB (one
``generate_series`` INSERT, then a primary key), backs it up once to a temporary file:// store,
and times in one run:

* peer (plain): CREATE DATABASE, ``restore_backup`` into it, ``Migrator.up()`` of the pending
  migrations, DROP DATABASE;
* ours: ``rehearse()`` on the same backup and migrations (the same steps plus the same-server
  check, the relation snapshots, a pg_locks read after every statement, the lock sampler during
  the non-transactional file, and lint's predictions).

The pending migrations are the issue's two: ``ALTER TABLE patients ALTER COLUMN id TYPE bigint``
(a rewrite under ACCESS EXCLUSIVE) and ``CREATE INDEX CONCURRENTLY`` on ``mrn``. Target: rehearsal
<= 1.2x plain restore + apply. Everything it created is dropped at the end (unless ``--keep``).
Run it once: it rewrites 1 GB several times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
JUST = "-- Business justification: benchmark\n"


def write(directory: Path, version: int, name: str, up: str, down: str) -> None:
    (directory / f"{version:06d}_{name}.up.sql").write_text(JUST + up)
    (directory / f"{version:06d}_{name}.down.sql").write_text(JUST + down)


def main() -> None:
    from migrator.backup import create_backup, restore_backup
    from migrator.config import Settings
    from migrator.engine import Migrator
    from migrator.rehearse.run import RehearsalOptions, human_bytes, rehearse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="patients rows (10M is about 1.2 GB)")
    ap.add_argument("--server", default=SERVER)
    ap.add_argument("--keep", action="store_true", help="keep the source database and the backup")
    args = ap.parse_args()

    admin_url = f"{args.server}/postgres"
    name = f"bench_rehearse_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-rehearse-"))
    base, full = work / "base", work / "migrations"
    base.mkdir()
    write(base, 1, "create_patients", "CREATE TABLE patients (id int, mrn int NOT NULL, name text NOT NULL, "
          "notes text NOT NULL);", "DROP TABLE IF EXISTS patients;")
    source_url = f"{args.server}/{name}"
    backups = f"file://{work / 'backups'}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        Migrator(Settings(database_url=source_url, migrations_path=base)).up()
        t0 = time.perf_counter()
        with psycopg.connect(source_url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO patients SELECT i, i % 700000, 'patient ' || i, repeat('x', 40) "
                         f"FROM generate_series(1, {int(args.rows)}) AS i")
            conn.execute("ALTER TABLE patients ADD PRIMARY KEY (id)")
            conn.execute("VACUUM ANALYZE patients")
            size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
        print(f"source database: {human_bytes(size)} ({args.rows:,} patients), built in {time.perf_counter() - t0:.0f} s")
        if size < 1024**3:
            print("warning: the database is below 1 GB; raise --rows")
        settings = Settings(database_url=source_url, migrations_path=base, backup_url=backups)
        t0 = time.perf_counter()
        backup = create_backup(settings)
        print(f"backup: {human_bytes(backup.size)} in {time.perf_counter() - t0:.0f} s")

        shutil.copytree(base, full)
        write(full, 2, "widen_patient_id", "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
              "ALTER TABLE patients ALTER COLUMN id TYPE int;")
        write(full, 3, "index_patients_mrn", "CREATE INDEX CONCURRENTLY IF NOT EXISTS patients_mrn_idx ON patients (mrn);",
              "DROP INDEX CONCURRENTLY IF EXISTS patients_mrn_idx;")
        settings = Settings(database_url=source_url, migrations_path=full, backup_url=backups)

        # peer: what a person would do by hand
        scratch = f"bench_plain_{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            restored = restore_backup(settings, backup.key, f"{args.server}/{scratch}", no_owner=True)
            t_restore = time.perf_counter() - t0
            up = Migrator(Settings(database_url=f"{args.server}/{scratch}", migrations_path=full)).up()
            assert up.version_after == 3, up
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
        plain = time.perf_counter() - t0
        print(f"plain restore + up: {plain:.1f} s (restore {t_restore:.1f} s, up {plain - t_restore:.1f} s; "
              f"restored version {restored.schema_version})")

        # ours
        t0 = time.perf_counter()
        report = rehearse(settings, RehearsalOptions(backup=backup.key, scratch_url=admin_url, allow_same_server=True))
        ours = time.perf_counter() - t0
        assert report.ok and report.version_after == 3, report.failure_message()
        print(f"migrator rehearse:  {ours:.1f} s (restore {report.restore_seconds:.1f} s, apply "
              f"{report.apply_seconds:.1f} s)")
        for m in report.migrations:
            ae = [lk for lk in m.locks if lk.mode == "ACCESS EXCLUSIVE" and lk.kind == "table"]
            print(f"  {m.version} {m.name}: {m.duration_ms / 1000:.1f} s"
                  + (f", ACCESS EXCLUSIVE on {ae[0].relation} held {ae[0].held_ms / 1000:.1f} s" if ae else
                     ", no ACCESS EXCLUSIVE")
                  + "".join(f", rewrote {r.relation} ({human_bytes(r.size_before)})" for r in m.rewrites
                            if r.kind == "table"))
        ratio = ours / plain
        print(f"ratio rehearse / (restore + up): {ratio:.2f}x (target <= 1.20x) -> {'OK' if ratio <= 1.2 else 'MISSED'}")
    finally:
        if not args.keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept database {name} and backups in {work}")


if __name__ == "__main__":
    main()
