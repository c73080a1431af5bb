"""Benchmark: ``migrator drift`` on a 500-table schema, cold and warm, against plain pg_dump + diff.

The schema: ``--tables`` tables (default 500) in migrations of 10 tables each; every table has an
identity key, six columns with defaults and checks, a foreign key to the table before it, two
indexes; every 10th table a view, a plpgsql function and trigger, a policy and a grant. The
database is migrated with ``migrator up`` on the machine's PostgreSQL (``--server-url``).

Measured as whole processes (what a person or cron pays), in one run:

- ``migrator drift`` cold: empty cache, so the expected schema is built on a scratch database by
  the engine (create, apply every migration, read the catalog, drop), then compared;
- ``migrator drift`` warm: the cached expected schema and one catalog read of the live database
  (best and median of ``--repeat``); target < 5 s;
- the baseline a team would script without us: ``pg_dump --schema-only`` of the live database and
  of a database built from the same files, then ``diff``. Warm = the two dumps and the diff on an
  already-built expected database; cold = also CREATE DATABASE, ``migrator up`` and DROP;
- a drifted run (a hand-run ``CREATE INDEX`` and ``ALTER COLUMN TYPE``) to show both are reported.

    .venv/bin/python bench/bench_drift.py [--tables 500] [--repeat 5] [--server-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIGRATOR = str(Path(sys.executable).parent / "migrator")
HEADER = "-- Business justification: BENCH-{v} generated for the drift benchmark.\n"


def table_sql(i: int, role: str) -> str:
    fk = f",\n    parent_id bigint REFERENCES t{i - 1} (id)" if i > 0 else ""
    out = f"""CREATE TABLE t{i} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_ref text NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'done')),
    amount numeric(12, 2) DEFAULT 0,
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz{fk}
);
CREATE INDEX t{i}_patient_ref_idx ON t{i} (patient_ref);
CREATE INDEX t{i}_created_idx ON t{i} (created_at) WHERE status = 'new';
"""
    if i % 10 == 0:
        out += f"""CREATE VIEW t{i}_open AS SELECT id, patient_ref FROM t{i} WHERE status = 'new';
CREATE FUNCTION t{i}_touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE TRIGGER t{i}_touch BEFORE UPDATE ON t{i} FOR EACH ROW EXECUTE FUNCTION t{i}_touch();
ALTER TABLE t{i} ENABLE ROW LEVEL SECURITY;
CREATE POLICY t{i}_open ON t{i} FOR SELECT USING (status = 'new');
GRANT SELECT ON t{i} TO {role};
"""
    return out


def write_migrations(folder: Path, tables: int, role: str) -> int:
    per = 10
    count = 0
    for m in range(0, tables, per):
        v = m // per + 1
        body = "".join(table_sql(i, role) for i in range(m, min(m + per, tables)))
        (folder / f"{v:06d}_tables_{m}.up.sql").write_text(HEADER.format(v=v) + body)
        drops = "".join(f"DROP TABLE IF EXISTS t{i} CASCADE;\n" for i in reversed(range(m, min(m + per, tables))))
        (folder / f"{v:06d}_tables_{m}.down.sql").write_text(HEADER.format(v=v) + drops)
        count += 1
    return count


def url_for(server_url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(server_url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def run(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--server-url", default=os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()

    from migrator.lint.roundtrip import choose_pg_dump, normalize_dump

    work = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    folder = work / "migrations"
    folder.mkdir()
    tag = uuid.uuid4().hex[:8]
    role = f"bench_drift_reader_{tag}"
    live_db, peer_db = f"bench_drift_live_{tag}", f"bench_drift_peer_{tag}"
    migrations = write_migrations(folder, args.tables, role)
    admin = psycopg.connect(args.server_url, autocommit=True)
    admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    server_major = admin.info.server_version // 10000
    pg_dump, dump_major = choose_pg_dump(server_major)
    env = {**os.environ, "MIGRATIONS_PATH": str(folder), "MIGRATOR_CACHE_DIR": str(work / "cache")}
    live_env = {**env, "DATABASE_URL": url_for(args.server_url, live_db)}
    peer_env = {**env, "DATABASE_URL": url_for(args.server_url, peer_db)}
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(live_db)))
        up_s, _ = run([MIGRATOR, "up"], live_env)
        with psycopg.connect(live_env["DATABASE_URL"]) as c:
            objects = c.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()
        print(f"schema: {args.tables} tables in {migrations} migrations ({objects[0] if objects else '?'} relations "
              f"in public), PostgreSQL {server_major}, pg_dump {dump_major}; migrator up {up_s:.2f}s")

        cold_s, proc = run([MIGRATOR, "drift", "--json"], live_env)
        cold = json.loads(proc.stdout)
        assert not cold["drift"] and not cold["expected_cached"], cold["summary"]
        warm = []
        for _ in range(args.repeat):
            t, proc = run([MIGRATOR, "drift", "--json"], live_env)
            assert json.loads(proc.stdout)["expected_cached"]
            warm.append(t)

        def dump(url: str) -> list[str]:
            out = subprocess.run([pg_dump, "--schema-only", "--no-owner", f"--dbname={url}"], capture_output=True,
                                 text=True, check=True).stdout
            return normalize_dump(out)

        def baseline_warm() -> float:
            started = time.perf_counter()
            a, b = work / "live.sql", work / "peer.sql"
            a.write_text("\n".join(dump(live_env["DATABASE_URL"])))
            b.write_text("\n".join(dump(peer_env["DATABASE_URL"])))
            subprocess.run(["diff", str(a), str(b)], capture_output=True)
            return time.perf_counter() - started

        def baseline_cold() -> float:
            started = time.perf_counter()
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(peer_db)))
            run([MIGRATOR, "up"], peer_env)
            baseline_warm()
            return time.perf_counter() - started

        base_cold = baseline_cold()  # leaves the peer database for the warm baseline
        base_warm = [baseline_warm() for _ in range(args.repeat)]

        with psycopg.connect(live_env["DATABASE_URL"], autocommit=True) as c:
            c.execute("CREATE INDEX t7_note_idx ON t7 (note)")
            c.execute("ALTER TABLE t3 ALTER COLUMN status TYPE text")
        drift_s, proc = run([MIGRATOR, "drift"], live_env, ok=(3,))

        best, median = min(warm), statistics.median(warm)
        bbest, bmedian = min(base_warm), statistics.median(base_warm)
        print(f"migrator drift cold (scratch build + compare): {cold_s:.2f}s")
        print(f"migrator drift warm: best {best:.2f}s, median {median:.2f}s of {args.repeat} "
              f"({cold['objects']} objects compared); target < 5 s: {'met' if median < 5 else 'NOT met'}")
        print(f"baseline pg_dump x2 + diff: warm best {bbest:.2f}s, median {bmedian:.2f}s; cold (create + up + "
              f"dumps + diff) {base_cold:.2f}s")
        print(f"ratio migrator/baseline: warm {median / bmedian:.2f}x (medians), cold {cold_s / base_cold:.2f}x")
        print(f"drifted run ({drift_s:.2f}s, exit 3):")
        for line in proc.stdout.splitlines():
            print(f"  {line}")
    finally:
        for name in (live_db, peer_db):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
