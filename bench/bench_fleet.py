"""Fleet benchmark: ``migrate-fleet`` over many databases against ``migrator up`` on each, in one run.

Part 1 (``--databases`` 100): fresh tenant databases discovered from a catalogue, 10 migrations
(the platform's migrations/ plus one synthetic 10th, in a temporary folder). Each run starts from
fresh, empty databases (created outside the timing); runs are interleaved, peer and ours:

- shell loop: ``for url in ...; do migrator up; done`` (bash, one CLI process per database, no backup)
- ``xargs -P4``: the same command, 4 at a time
- shell loop with backup: ``migrator backup && migrator up`` per database (the like-for-like peer
  of a fleet child, which backs up before it applies)
- migrate-fleet with ``max_parallel`` 1, 2, 4 (``--parallel``): in-process on Prefect's ephemeral
  API; each database is ONE ``migrate-member`` task run (``migrator.fleet.migrate_member``): file
  drift check, a verified file:// backup, apply (advisory lock, audited, through the engine),
  verify (version, dirty, file and schema drift); the fleet validates (lint) once and reads every
  database's state back itself.

Printed: wall time, per-database time, the fleet's per-database cost over each peer (fleet
max_parallel 1 vs the shell loops, max_parallel 4 vs ``xargs -P4``) and the speed-up over
max_parallel 1.

Part 2 (``--workers`` 1,2,4, ``--worker-databases`` 12): the deployment mode on a real
``prefect server`` (PostgreSQL-backed, tests/prefect_server.py) with 1, 2, 4 process workers, each
running one flow run at a time; the fleet run is itself a deployment run (``max_parallel`` 4), its
children ``migrate/bench`` deployment runs, each in a process of its own.

Part 3 (``--scale`` 1000): that many small databases; time discovery + survey (core), a
``migrate-fleet`` dry run (flow), ``migrator fleet-status`` (CLI process), and the wave plan +
summary artifact markdown for that many outcomes. Databases are created here and dropped at the end.

    uv run python bench/bench_fleet.py [--databases 100] [--parallel 1,2,4] [--workers 1,2,4]
                                       [--worker-databases 12] [--scale 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
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


TENTH = """-- Migration: 000010_add_tenant_settings
-- Business justification: per-tenant settings for the fleet benchmark (synthetic 10th migration).
-- Patient data affected: no

CREATE TABLE tenant_settings (
    key VARCHAR(100) PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""
TENTH_DOWN = """-- Migration: 000010_add_tenant_settings (rollback)
-- Business justification: reverts 000010.

DROP TABLE IF EXISTS tenant_settings;
"""


def migrations_folder(tmp: Path) -> Path:
    """The platform's migrations plus a synthetic 10th: 10 migrations."""
    folder = tmp / "migrations"
    folder.mkdir(exist_ok=True)
    for f in (ROOT / "migrations").glob("[0-9]*.sql"):  # not schema.sql: it is the schema at the 9th
        shutil.copy(f, folder / f.name)
    (folder / "000010_add_tenant_settings.up.sql").write_text(TENTH)
    (folder / "000010_add_tenant_settings.down.sql").write_text(TENTH_DOWN)
    return folder


def write_env(ddir: Path, cat: str, backups: Path, migrations: Path | None = None, name: str = "bench",
              max_parallel: int = 4) -> None:
    path_line = f"migrations_path: {migrations}\n" if migrations else ""
    (ddir / f"{name}.yaml").write_text(
        f"""environment: {name}
discover:
  catalogue_url: "{url_for(cat)}"
  query: SELECT name FROM tenants ORDER BY name
  url_template: "postgresql://postgres@127.0.0.1:5432/{{name}}"
fleet: {{canary: 1, max_parallel: {max_parallel}, max_failures: 0, survey_parallel: 16}}
backup: {{url: "file://{backups}", retries: 0}}
approval: {{required: false}}
timeouts: {{lock_timeout: 10s, statement_timeout: 5min, lock_wait_seconds: 60}}
{path_line}"""
    )


def fleet_run(max_parallel: int) -> float:
    from flows.fleet import migrate_fleet

    t0 = time.perf_counter()
    result = migrate_fleet(environment="bench", max_parallel=max_parallel, children="in-process")
    elapsed = time.perf_counter() - t0
    assert result["outcome"] == "succeeded", result.get("counts")
    return elapsed


def migrator_bin() -> str:
    exe = Path(sys.executable).with_name("migrator")
    return str(exe) if exe.exists() else "migrator"


# The peers, as a person would type them: a bash loop, and xargs -P4; one CLI process per database.
SHELL_LOOP = 'for u in "$@"; do "$M" --path "$P" --database-url "$u" up >/dev/null || exit 1; done'
SHELL_LOOP_BACKUP = ('for u in "$@"; do "$M" --database-url "$u" backup --to "$B" >/dev/null && '
                     '"$M" --path "$P" --database-url "$u" up >/dev/null || exit 1; done')
XARGS = 'printf "%s\\n" "$@" | xargs -P4 -I{} "$M" --path "$P" --database-url {} up >/dev/null'


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def shell_peer(script: str, urls: list[str], migrations: Path, backups: Path) -> float:
    env = {**os.environ, "M": migrator_bin(), "P": str(migrations), "B": f"file://{backups}"}
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-c", script, "_", *urls], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"peer failed ({script[:40]}...): {r.stderr[-2000:]}")
    return elapsed


def applied_everywhere(names: list[str], version: int) -> None:
    """Every database really is at ``version``, clean (what each side did, checked the same way)."""
    def read(n: str) -> tuple[int, bool]:
        with psycopg.connect(url_for(n)) as conn:
            row = conn.execute("SELECT version, dirty FROM schema_migrations").fetchone()
            return (int(row[0]), bool(row[1])) if row else (-1, False)

    with ThreadPoolExecutor(8) as pool:
        bad = [(n, s) for n, s in zip(names, pool.map(read, names), strict=True) if s != (version, False)]
    assert not bad, f"not at version {version}, clean: {bad[:5]}"


def part1(n: int, parallels: list[int], tmp: Path) -> None:
    names = [f"{PREFIX}_{i:04d}" for i in range(n)]
    urls = [url_for(x) for x in names]
    cat = f"{PREFIX}_cat"
    migrations = migrations_folder(tmp)
    latest = max(int(f.name.split("_")[0]) for f in migrations.glob("*.up.sql"))
    create([cat])
    catalogue(cat, names)
    write_env(tmp / "deployments", cat, tmp / "backups", migrations)
    from prefect import flow

    flow(name="bench-warm-up")(lambda: None)()  # the ephemeral API starts outside the timing
    peers = {
        "shell loop: migrator up": lambda: shell_peer(SHELL_LOOP, urls, migrations, tmp / "backups"),
        "xargs -P4: migrator up": lambda: shell_peer(XARGS, urls, migrations, tmp / "backups"),
        "shell loop: migrator backup + up": lambda: shell_peer(SHELL_LOOP_BACKUP, urls, migrations,
                                                               tmp / "backups"),
    }
    ours = {f"migrate-fleet max_parallel {mp}": (lambda mp=mp: fleet_run(mp)) for mp in parallels}
    # interleaved, peer then ours, so that a change of the machine's load hits both sides
    order: list[str] = []
    for pair in zip(list(peers) + [None] * len(ours), list(ours) + [None] * len(peers), strict=False):
        order.extend(x for x in pair if x)
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        for label in order:
            drop(names)
            create(names)
            shutil.rmtree(tmp / "backups", ignore_errors=True)
            before = cpu_seconds()
            times[label] = (peers.get(label) or ours[label])()
            cpu[label] = cpu_seconds() - before
            applied_everywhere(names, latest)
            print(f"  {label}: {times[label]:.1f} s (client CPU {cpu[label]:.1f} s, load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    finally:
        drop([*names, cat])
    print(f"\n{n} databases x {latest} migrations, one run, interleaved (load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("  each fleet database: one task run: file drift check, verified backup, apply (lock, audited), verify "
          "(version, dirty, file + schema drift); the fleet: survey, validate once, read-back, one artifact")
    print("  each peer database: one `migrator up` process (lock, apply, audit); '+ backup': a `migrator "
          "backup` process first (pg_dump, sha256; not restore-listed)")
    print("  client CPU: user + sys of this process and its children (bash, migrator, pg_dump; not PostgreSQL's, "
          "not the ephemeral Prefect server's)")
    print(f"{'run':<36} {'wall s':>8} {'per db s':>9} {'speed-up':>9} {'CPU/db s':>9}")
    base_label = f"migrate-fleet max_parallel {parallels[0]}"
    for label in order:
        t = times[label]
        speed = f"{times[base_label] / t:8.2f}x" if label in ours else ""
        print(f"{label:<36} {t:8.1f} {t / n:9.3f} {speed:>9} {cpu[label] / n:9.3f}")
    print("\nratios (fleet per database / peer per database; target <= 1.5):")
    pairs = [(base_label, "shell loop: migrator up"), (base_label, "shell loop: migrator backup + up")]
    top = f"migrate-fleet max_parallel {max(parallels)}"
    pairs.append((top, "xargs -P4: migrator up"))
    for ours_label, peer_label in pairs:
        o, p = times[ours_label], times[peer_label]
        print(f"  {ours_label} vs {peer_label}: {o / p:.2f}x ({(o - p) / n:+.3f} s per database)")
    for mp in parallels[1:]:
        print(f"  speed-up max_parallel {mp} over {parallels[0]}: "
              f"{times[base_label] / times[f'migrate-fleet max_parallel {mp}']:.2f}x")


FLEET_IN_PROCESS = """
import sys, time
from flows.fleet import migrate_fleet
t0 = time.perf_counter()
state = migrate_fleet(environment="tenants", children="deployment", max_parallel=int(sys.argv[1]),
                      return_state=True)
print("FLEET", state.type.value, round(time.perf_counter() - t0, 2))
if not state.is_completed():
    print(state.message, file=sys.stderr)
"""


def part2(n: int, workers: list[int], tmp: Path) -> None:
    """Deployment mode: the fleet's children are ``migrate/tenants`` runs picked up by process workers."""
    sys.path.insert(0, str(ROOT / "tests"))
    from prefect_server import PREFECT_BIN, running_server, running_worker

    names = [f"{PREFIX}_w{i:04d}" for i in range(n)]
    cat = f"{PREFIX}_wcat"
    migrations = migrations_folder(tmp)
    latest = max(int(f.name.split("_")[0]) for f in migrations.glob("*.up.sql"))
    ddir = tmp / "deployments-workers"
    ddir.mkdir(exist_ok=True)
    max_parallel = max(workers)
    create([cat])
    catalogue(cat, names)
    write_env(ddir, cat, tmp / "backups", migrations, name="tenants", max_parallel=max_parallel)
    times: dict[int, float] = {}
    try:
        with running_server(tmp / "prefect-server") as server:
            env = server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT), MIGRATOR_DEPLOYMENTS_DIR=str(ddir))
            for cmd in ([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"],
                        [PREFECT_BIN, "--no-prompt", "deploy", "--name", "migrate/tenants"]):
                r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
                if r.returncode:
                    sys.exit(f"{' '.join(cmd[1:3])} failed: {r.stdout[-1000:]}{r.stderr[-1000:]}")
            worker_env = {"MIGRATOR_DEPLOYMENTS_DIR": str(ddir), "MIGRATOR_PROJECT_DIR": str(ROOT)}
            for count in workers:
                drop(names)
                create(names)
                with contextlib.ExitStack() as stack:
                    for i in range(count):  # each worker runs ONE child at a time: throughput is the workers'
                        stack.enter_context(running_worker(server, "migrations", cwd=ROOT, env=worker_env, limit=1,
                                                           name=f"bench-w{count}-{i}"))
                    r = subprocess.run([sys.executable, "-c", FLEET_IN_PROCESS, str(max_parallel)], env=env,
                                       cwd=ROOT, capture_output=True, text=True, timeout=3600)
                line = next((x for x in r.stdout.splitlines() if x.startswith("FLEET ")), "")
                if not line.startswith("FLEET COMPLETED"):
                    sys.exit(f"fleet with {count} worker(s) did not complete: {line}\n{r.stderr[-3000:]}")
                times[count] = float(line.split()[-1])
                applied_everywhere(names, latest)
                print(f"  migrate-fleet, deployment children, {count} worker(s): {times[count]:.1f} s", flush=True)
    finally:
        drop([*names, cat])
    print(f"\n{n} databases x {latest} migrations, deployment mode (a real prefect server on PostgreSQL; "
          f"max_parallel {max_parallel}; each worker one child run at a time, each child a process)")
    print(f"{'workers':<10} {'wall s':>8} {'per db s':>9} {'speed-up':>9}")
    for count in workers:
        print(f"{count:<10} {times[count]:8.1f} {times[count] / n:9.3f} {times[workers[0]] / times[count]:8.2f}x")


def part3(n: int, tmp: Path) -> None:
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
    ap.add_argument("--parallel", default="1,2,4")
    ap.add_argument("--workers", default="1,2,4", help="process worker counts for part 2 (empty: skip)")
    ap.add_argument("--worker-databases", type=int, default=12)
    ap.add_argument("--scale", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    (tmp / "deployments").mkdir()
    # an isolated, ephemeral Prefect (no server of anyone else's, no telemetry)
    os.environ.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                      MIGRATOR_DEPLOYMENTS_DIR=str(tmp / "deployments"), PREFECT_LOGGING_LEVEL="WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a busy machine
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("MIGRATIONS_PATH", None)
    sys.path.insert(0, str(ROOT))
    try:
        if args.databases:
            part1(args.databases, [int(p) for p in args.parallel.split(",")], tmp)
        if args.workers and args.worker_databases:
            part2(args.worker_databases, [int(w) for w in args.workers.split(",")], tmp)
        if args.scale:
            part3(args.scale, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
