"""Fleet benchmark: ``migrate-fleet`` over many databases against plain ``migrator up`` on each.

Part 1 (``--databases`` 100): fresh tenant databases discovered from a catalogue, the platform's
migrations (migrations/), migrated by the migrate-fleet flow (in-process subflows on Prefect's
ephemeral API, a verified file:// backup per database) with max_parallel 1, 4 and 8; the peer is
``migrator up`` (a whole CLI process, no backup) run on each database one after another. Printed:
wall time, per-database time, speed-up over max_parallel 1, and the fleet's per-database overhead
over ``migrator up``.

Part 2 (``--scale`` 1000): that many small databases; time discovery + survey (core), a
``migrate-fleet`` dry run (flow), ``migrator fleet-status`` (CLI process), and the wave plan +
summary artifact markdown for that many outcomes. Databases are created here and dropped at the end.

    uv run python bench/bench_fleet.py [--databases 100] [--scale 1000] [--parallel 1,4,8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = f"benchfleet_{os.getpid()}"


def url_for(name: str) -> str:
    return SERVER.rsplit("/", 1)[0] + "/" + name


def admin(statements: Iterable[sql.Composable], parallel: int = 4) -> None:
    def run(stmt: sql.Composable) -> None:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(stmt)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, statements))


def create(names: list[str]) -> None:
    admin([sql.SQL("CREATE DATABASE {}").format(sql.Identifier(n)) for n in names])


def drop(names: list[str]) -> None:
    admin([sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(n)) for n in names])


def catalogue(name: str, tenants: list[str]) -> None:
    with psycopg.connect(url_for(name), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS tenants; CREATE TABLE tenants (name text PRIMARY KEY)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO tenants VALUES (%s)", [(t,) for t in tenants])


def write_env(ddir: Path, cat: str, backups: Path) -> None:
    (ddir / "bench.yaml").write_text(
        f"""environment: bench
discover:
  catalogue_url: "{url_for(cat)}"
  query: SELECT name FROM tenants ORDER BY name
  url_template: "postgresql://postgres@127.0.0.1:5432/{{name}}"
fleet: {{canary: 1, max_parallel: 4, max_failures: 0, survey_parallel: 16}}
backup: {{url: "file://{backups}", retries: 0}}
approval: {{required: false}}
timeouts: {{lock_timeout: 10s, statement_timeout: 5min, lock_wait_seconds: 60}}
"""
    )


def fleet_run(max_parallel: int) -> float:
    from flows.fleet import migrate_fleet

    t0 = time.perf_counter()
    result = migrate_fleet(environment="bench", max_parallel=max_parallel, children="subflow")
    elapsed = time.perf_counter() - t0
    assert result["outcome"] == "succeeded", result.get("counts")
    return elapsed


def cli_up_all(names: list[str]) -> float:
    env = {**os.environ, "MIGRATIONS_PATH": str(ROOT / "migrations")}
    t0 = time.perf_counter()
    for n in names:
        r = subprocess.run([sys.executable, "-m", "migrator", "up", "--database-url", url_for(n)], env=env,
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            sys.exit(f"migrator up failed on {n}: {r.stderr[-2000:]}")
    return time.perf_counter() - t0


def part1(n: int, parallels: list[int], tmp: Path) -> None:
    names = [f"{PREFIX}_{i:04d}" for i in range(n)]
    cat = f"{PREFIX}_cat"
    create([cat])
    catalogue(cat, names)
    write_env(tmp / "deployments", cat, tmp / "backups")
    rows: list[tuple[str, float]] = []
    try:
        for mp in parallels:
            drop(names)
            create(names)
            shutil.rmtree(tmp / "backups", ignore_errors=True)
            elapsed = fleet_run(mp)
            rows.append((f"migrate-fleet max_parallel {mp}", elapsed))
            print(f"  migrate-fleet max_parallel {mp}: {elapsed:.1f} s", flush=True)
        drop(names)
        create(names)
        peer = cli_up_all(names)
        print(f"  migrator up x {n} (one after another): {peer:.1f} s", flush=True)
    finally:
        drop([*names, cat])
    print(f"\n{n} databases x {len(list((ROOT / 'migrations').glob('*.up.sql')))} migrations "
          f"(each fleet child: backup + validate + apply + verify)")
    print(f"{'run':<34} {'wall s':>8} {'per db s':>9} {'speed-up':>9}")
    base = rows[0][1]
    for label, t in rows:
        print(f"{label:<34} {t:8.1f} {t / n:9.2f} {base / t:8.2f}x")
    print(f"{'migrator up (CLI, no backup)':<34} {peer:8.1f} {peer / n:9.2f}")
    print(f"per-database overhead of the fleet flow (max_parallel 1) over migrator up: "
          f"{(base - peer) / n:+.2f} s ({base / peer:.2f}x)")


def part2(n: int, tmp: Path) -> None:
    from migrator import fleet
    from tasks.fleet import load_fleet, resolve_members, target_versions

    names = [f"{PREFIX}_s{i:04d}" for i in range(n)]
    cat = f"{PREFIX}_scat"
    t0 = time.perf_counter()
    create([cat])
    create(names)
    print(f"\ncreated {n} databases in {time.perf_counter() - t0:.1f} s (setup, not measured)", flush=True)
    try:
        catalogue(cat, names)
        write_env(tmp / "deployments", cat, tmp / "backups")
        env, spec = load_fleet("bench")
        t0 = time.perf_counter()
        members = resolve_members(env, spec)
        t_disc = time.perf_counter() - t0
        versions = target_versions(env, None)
        t0 = time.perf_counter()
        states = fleet.survey(members, env.settings, versions, parallel=spec.survey_parallel)
        t_survey = time.perf_counter() - t0
        assert len(states) == n and not any(s.error for s in states)
        from prefect import flow

        from flows.fleet import migrate_fleet

        flow(name="bench-warm-up")(lambda: None)()  # the ephemeral API starts outside the timing
        t0 = time.perf_counter()
        result = migrate_fleet(environment="bench", dry_run=True)
        t_dry = time.perf_counter() - t0
        assert len(result["to_run"]) == n
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "migrator", "fleet-status", "--env", "bench"], capture_output=True,
                           text=True, cwd=ROOT, env={**os.environ, "MIGRATOR_DEPLOYMENTS_DIR": str(tmp / "deployments")})
        t_cli = time.perf_counter() - t0
        assert r.returncode == 0 and len(r.stdout.splitlines()) == n, r.stderr
        from flows.fleet import summary_markdown

        t0 = time.perf_counter()
        waves = fleet.plan_waves([s.name for s in states], 1, 8)
        outcomes = [fleet.Outcome(s.name, "succeeded", -1, 9, False, 1.0, f"bench/{s.name}/x.dump",
                                  f"http://127.0.0.1/runs/flow-run/{i}", str(i), None, i // 8)
                    for i, s in enumerate(states)]
        md = summary_markdown("bench", outcomes, 9, None)
        t_md = time.perf_counter() - t0
        print(f"\n{n} databases:")
        print(f"  discovery (catalogue query)        {t_disc * 1000:8.0f} ms")
        print(f"  survey (version/dirty of each)     {t_survey * 1000:8.0f} ms  "
              f"({t_survey / n * 1000:.1f} ms/db, {spec.survey_parallel} connections)")
        print(f"  migrate-fleet dry run (flow)       {t_dry * 1000:8.0f} ms  (incl. validate; after warm-up)")
        print(f"  migrator fleet-status (CLI proc)   {t_cli * 1000:8.0f} ms")
        print(f"  waves + summary markdown           {t_md * 1000:8.0f} ms  ({len(waves)} waves, {len(md)} chars)")
    finally:
        drop([*names, cat])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--databases", type=int, default=100)
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--parallel", default="1,4,8")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    (tmp / "deployments").mkdir()
    # an isolated, ephemeral Prefect (no server of anyone else's, no telemetry)
    os.environ.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                      MIGRATOR_DEPLOYMENTS_DIR=str(tmp / "deployments"), PREFECT_LOGGING_LEVEL="WARNING")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("MIGRATIONS_PATH", None)
    sys.path.insert(0, str(ROOT))
    try:
        if args.databases:
            part1(args.databases, [int(p) for p in args.parallel.split(",")], tmp)
        if args.scale:
            part2(args.scale, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
