"""Engine benchmark: apply N generated migrations with migrator and with dbmate, same server, same run.

Each migration is a CREATE TABLE + CREATE INDEX. Both tools run as whole processes from start to
exit on fresh databases, alternating, ``--rounds`` times; the medians and their ratio are printed
(machines here are noisy: read the ratio, not the absolute times). Also prints the start-to-exit
time of ``migrator status`` (target < 0.3 s) and ``migrator status --json``.

    uv run python bench/bench_engine.py [--migrations 1000] [--rounds 3] [--server URL]
"""

from __future__ import annotations

import argparse
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
SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def db_url(server: str, name: str) -> str:
    return server.rsplit("/", 1)[0] + "/" + name


def create_db(server: str, async_commit: bool = False) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if async_commit:  # both tools alike: takes the disk's fsync latency out of the comparison
            conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
    return name


def drop_db(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def generate(n: int, golang_dir: Path, dbmate_dir: Path) -> None:
    golang_dir.mkdir(parents=True)
    dbmate_dir.mkdir(parents=True)
    for i in range(1, n + 1):
        up = (
            f"CREATE TABLE bench_t{i} (id bigserial PRIMARY KEY, name text NOT NULL, "
            f"created_at timestamptz NOT NULL DEFAULT now());\n"
            f"CREATE INDEX idx_bench_t{i}_name ON bench_t{i} (name);\n"
        )
        down = f"DROP TABLE IF EXISTS bench_t{i};\n"
        header = f"-- Business justification: benchmark table {i}\n"
        (golang_dir / f"{i:06d}_create_bench_t{i}.up.sql").write_text(header + up)
        (golang_dir / f"{i:06d}_create_bench_t{i}.down.sql").write_text(header + down)
        (dbmate_dir / f"{i:06d}_create_bench_t{i}.sql").write_text(
            f"-- migrate:up\n{up}\n-- migrate:down\n{down}"
        )


def settle(server: str) -> None:
    """Same starting line for every timed run: flush dirty buffers (a dropped 1,000-table database
    leaves a lot of I/O behind) and let the disk calm down."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    time.sleep(1.0)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--migrations", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server", default=SERVER)
    ap.add_argument("--async-commit", action="store_true",
                    help="synchronous_commit=off on the benchmark databases (both tools): compares the tools, "
                    "not the disk's fsync latency, which dominates and varies a lot on shared machines")
    args = ap.parse_args()

    dbmate = shutil.which("dbmate") or str(Path(sys.executable).parent / "dbmate")
    migrator = [sys.executable, "-m", "migrator"]
    work = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    gdir, ddir = work / "migrations", work / "dbmate"
    generate(args.migrations, gdir, ddir)
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATIONS_PATH")}

    ours: list[float] = []
    theirs: list[float] = []
    status_db = None
    try:
        for round_no in range(args.rounds):
            # alternate who goes first, so neither always runs on a warmer or colder server
            order = ("migrator", "dbmate") if round_no % 2 == 0 else ("dbmate", "migrator")
            for tool in order:
                name = create_db(args.server, args.async_commit)
                url = db_url(args.server, name)
                settle(args.server)
                if tool == "migrator":
                    env = {**base_env, "DATABASE_URL": url, "MIGRATIONS_PATH": str(gdir)}
                    ours.append(timed([*migrator, "up"], env))
                    if status_db:
                        drop_db(args.server, status_db)
                    status_db = name
                else:
                    dbmate_cmd = [dbmate, "--url", url + "?sslmode=disable", "--migrations-dir", str(ddir),
                                  "--no-dump-schema", "up"]
                    try:
                        theirs.append(timed(dbmate_cmd, base_env))
                    finally:
                        drop_db(args.server, name)

        m, d = statistics.median(ours), statistics.median(theirs)
        mode = "synchronous_commit=off" if args.async_commit else "synchronous_commit=on"
        print(f"apply {args.migrations} migrations (CREATE TABLE + CREATE INDEX), {mode}, median of {args.rounds}:")
        print(f"  migrator up : {m:7.2f} s   runs {', '.join(f'{x:.2f}' for x in ours)}")
        print(f"  dbmate up   : {d:7.2f} s   runs {', '.join(f'{x:.2f}' for x in theirs)}")
        pairs = [o / t for o, t in zip(ours, theirs, strict=True)]
        print(f"  ratio of medians migrator/dbmate = {m / d:.2f}")
        print(f"  ratio within each round (adjacent runs, same disk weather): median {statistics.median(pairs):.2f}"
              f"  [{', '.join(f'{x:.2f}' for x in pairs)}]  (target <= 1.00)")

        assert status_db is not None
        real = {**base_env, "DATABASE_URL": db_url(args.server, status_db), "MIGRATIONS_PATH": str(ROOT / "migrations")}
        big = {**real, "MIGRATIONS_PATH": str(gdir)}
        for label, env, extra in (
            ("status (repo migrations)", real, []),
            ("status --json (repo migrations)", real, ["--json"]),
            (f"status ({args.migrations} applied migrations)", big, []),
        ):
            runs = []
            for _ in range(7):
                t0 = time.perf_counter()
                subprocess.run([*migrator, "status", *extra], env=env, cwd=ROOT, capture_output=True)
                runs.append(time.perf_counter() - t0)
            print(f"  migrator {label}: median {statistics.median(runs):.3f} s start-to-exit (target < 0.3 s)")
    finally:
        if status_db:
            drop_db(args.server, status_db)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
