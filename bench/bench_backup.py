"""Benchmark: plain ``pg_dump -Fc > /dev/null`` vs ``migrator backup`` to file:// and to a local S3 server.

    .venv/bin/python bench/bench_backup.py [--scale 70] [--repeat 1] [--keep]

Generates a database of at least 1 GB with ``pgbench -i -s SCALE`` (in a dedicated database on
127.0.0.1:5432, dropped at the end unless ``--keep``), then times each variant in one run and
prints wall time, ratio to plain pg_dump, and peak RSS. Peak RSS is measured per process as the
kernel's high-water mark ``VmHWM`` (/proc/PID/status), sampled every 20 ms for the process tree
and read by the migrator process itself just before it exits: the migrator Python process and the
pg_dump it runs are reported separately. (getrusage's ru_maxrss is not used: on Linux it carries
the parent's RSS over fork+exec, so it would report this benchmark's own size.) The S3 server
(moto, in this benchmark's own process) is not counted. Targets: file:// within 1.10x of plain
pg_dump, migrator's peak RSS under 100 MB. ``--random-mb`` adds incompressible data so the dump
itself is large (pgbench data compresses to ~2% of its size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SERVER = "postgresql://postgres@127.0.0.1:5432"
PY = str(ROOT / ".venv" / "bin" / "python")

# Runs ``migrator backup`` in a child and reports its own peak RSS (VmHWM) just before exiting.
CHILD = """
import json, re, sys, time
from migrator.cli import run
t = time.monotonic()
rc = run(sys.argv[1:])
elapsed = time.monotonic() - t
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
sys.stderr.write("BENCH " + json.dumps({"rc": rc, "self_kb": hwm, "inner": elapsed}) + "\\n")
sys.exit(rc)
"""


class PeakRSS(threading.Thread):
    """Samples VmHWM of a process and its descendants; peak per command name, in kB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()

    def _tree(self, pid: int) -> list[int]:
        pids = [pid]
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    for child in f.read().split():
                        pids.extend(self._tree(int(child)))
        except OSError:
            pass
        return pids

    def sample(self) -> None:
        for pid in self._tree(self.pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    status = f.read()
            except OSError:
                continue
            name = re.search(r"Name:\s+(\S+)", status)
            hwm = re.search(r"VmHWM:\s+(\d+)", status)
            if name and hwm:
                self.peaks[name.group(1)] = max(self.peaks.get(name.group(1), 0), int(hwm.group(1)))

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            time.sleep(0.02)


def find_pgbench() -> str:
    for candidate in (shutil.which("pgbench"), "/usr/lib/postgresql/15/bin/pgbench"):
        if candidate and Path(candidate).exists():
            return candidate
    from migrator.embedded import bin_dir

    return str(bin_dir() / "pgbench")


def psql_scalar(sql: str, db: str = "postgres") -> str:
    import psycopg

    with psycopg.connect(f"{SERVER}/{db}", autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return "" if row is None else str(row[0])


def ensure_database(name: str, scale: int, random_mb: int) -> int:
    import psycopg
    from psycopg import sql

    exists = psql_scalar(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"
    if exists and random_mb:
        exists = psql_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'random_blobs'", name) == "1"
    if exists:
        size = int(psql_scalar("SELECT pg_database_size(current_database())", name))
        if size >= 10**9:
            print(f"reusing database {name} ({size / 1e9:.2f} GB)")
            return size
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    pgbench = find_pgbench()
    print(f"generating {name} with {pgbench} -i -s {scale} ...", flush=True)
    t = time.monotonic()
    subprocess.run([pgbench, "-i", "-s", str(scale), "-q", f"{SERVER}/{name}"], check=True, capture_output=True)
    with psycopg.connect(f"{SERVER}/{name}", autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (42, false)")
        if random_mb:
            conn.execute("CREATE TABLE random_blobs (id int PRIMARY KEY, data bytea NOT NULL)")
            conn.execute("ALTER TABLE random_blobs ALTER data SET STORAGE EXTERNAL")
            with conn.cursor() as cur:
                for i in range(random_mb):
                    cur.execute("INSERT INTO random_blobs VALUES (%s, %s)", (i, os.urandom(1024 * 1024)))
        conn.execute("VACUUM ANALYZE")
    size = int(psql_scalar("SELECT pg_database_size(current_database())", name))
    print(f"generated {size / 1e9:.2f} GB in {time.monotonic() - t:.0f}s")
    if size < 10**9:
        raise SystemExit(f"database is only {size / 1e9:.2f} GB; raise --scale")
    return size


def run_plain(name: str, pg_dump: str) -> dict[str, float]:
    t = time.monotonic()
    proc = subprocess.Popen([pg_dump, "-Fc", f"--dbname={SERVER}/{name}"], stdout=subprocess.DEVNULL)
    sampler = PeakRSS(proc.pid)
    sampler.start()
    rc = proc.wait()
    elapsed = time.monotonic() - t
    sampler.done.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"pg_dump failed with exit code {rc}")
    return {"seconds": elapsed, "migrator_rss_mb": 0.0, "pg_dump_rss_mb": sampler.peaks.get("pg_dump", 0) / 1024}


def run_migrator(name: str, dest: str, env: dict[str, str]) -> dict[str, float]:
    args = ["backup", "--to", dest, "--json", "--database-url", f"{SERVER}/{name}", "--env", "bench"]
    t = time.monotonic()
    proc = subprocess.Popen(
        [PY, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    sampler = PeakRSS(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    elapsed = time.monotonic() - t
    sampler.done.set()
    sampler.join()
    report = None
    for line in stderr.splitlines():
        if line.startswith("BENCH "):
            report = json.loads(line[6:])
    if proc.returncode != 0 or report is None:
        raise SystemExit(f"migrator backup to {dest} failed: {stderr.strip()[-2000:]}")
    result = json.loads(stdout)
    return {
        "seconds": elapsed,
        "inner_seconds": report["inner"],
        "migrator_rss_mb": max(report["self_kb"], sampler.peaks.get("python", 0)) / 1024,
        "pg_dump_rss_mb": sampler.peaks.get("pg_dump", 0) / 1024,
        "size_mb": result["size"] / 1e6,
        "parts": result["parts"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=70, help="pgbench scale (70 = ~1.05 GB)")
    ap.add_argument("--dbname", default="migrator_bench")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant; the fastest counts")
    ap.add_argument("--random-mb", type=int, default=0, help="add N MiB of incompressible data (large dump)")
    ap.add_argument("--keep", action="store_true", help="keep the generated database for the next run")
    opts = ap.parse_args()

    from migrator.backup.pgtools import find_tool
    from s3_server import S3Server

    size = ensure_database(opts.dbname, opts.scale, opts.random_mb)
    major = int(psql_scalar("SHOW server_version_num")) // 10000
    pg_dump = find_tool("pg_dump", major)
    print(f"database {opts.dbname}: {size / 1e9:.2f} GB; {pg_dump.describe()}")

    out = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    server = S3Server().start()
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=server.endpoint,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.pop("DATABASE_URL", None)
    bucket = server.create_bucket("bench-backups")
    results: dict[str, dict[str, float]] = {}
    try:
        for _ in range(opts.repeat):
            runs = {
                "pg_dump -Fc > /dev/null": lambda: run_plain(opts.dbname, str(pg_dump.path)),
                "migrator backup file://": lambda: run_migrator(opts.dbname, f"file://{out}", env),
                "migrator backup s3:// (moto)": lambda: run_migrator(opts.dbname, f"s3://{bucket}/bench", env),
            }
            for label, fn in runs.items():
                r = fn()
                print(f"  {label}: {r['seconds']:.1f}s", flush=True)
                if label not in results or r["seconds"] < results[label]["seconds"]:
                    results[label] = r
    finally:
        server.stop()
        shutil.rmtree(out, ignore_errors=True)
        if not opts.keep:
            import psycopg
            from psycopg import sql

            with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(opts.dbname)))
            print(f"dropped {opts.dbname} (use --keep to reuse it)")

    base = results["pg_dump -Fc > /dev/null"]["seconds"]
    print()
    print(f"{'variant':<30} {'seconds':>8} {'ratio':>6} {'migrator RSS':>13} {'pg_dump RSS':>12} {'dump MB':>8}")
    for label, r in results.items():
        migr = f"{r['migrator_rss_mb']:.0f} MB" if r["migrator_rss_mb"] else "-"
        size_mb = f"{r['size_mb']:.0f}" if "size_mb" in r else "-"
        print(
            f"{label:<30} {r['seconds']:>8.1f} {r['seconds'] / base:>5.2f}x {migr:>13} "
            f"{r['pg_dump_rss_mb']:>9.0f} MB {size_mb:>8}"
        )
    file_ratio = results["migrator backup file://"]["seconds"] / base
    peak = max(r["migrator_rss_mb"] for r in results.values())
    print()
    print(f"file:// vs plain pg_dump: {file_ratio:.2f}x (target <= 1.10x) {'OK' if file_ratio <= 1.10 else 'MISSED'}")
    print(f"migrator peak RSS: {peak:.0f} MB (target < 100 MB) {'OK' if peak < 100 else 'MISSED'}")
    print(json.dumps({"database_bytes": size, "results": results}, indent=None))


if __name__ == "__main__":
    main()
