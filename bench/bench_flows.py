"""Flow overhead: the ``migrate`` flow against the engine CLI doing the same, with a running server.

Starts a real ``prefect server`` on 127.0.0.1 (isolated home), then, in one run and alternating,
``--rounds`` times:

* nothing pending: ``migrator up`` vs ``python -m flows migrate`` on an up-to-date database;
* 10 pending: the same on a fresh database with 10 generated migrations
  (each CREATE TABLE + CREATE INDEX).

Both are whole processes from start to exit. The flow does more than the CLI by design (status,
a verified backup, validate with drift, plan, verify, notify, an artifact): the difference is the
price of running through Prefect. Also printed: the flow run's own duration as recorded by the
server (no interpreter start-up, no imports), which is what a warm worker pays.

    uv run python bench/bench_flows.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import SERVER, create_db, db_url, drop_db, timed  # noqa: E402

from prefect_server import running_server  # noqa: E402


def generate(n: int, directory: Path) -> None:
    directory.mkdir(parents=True)
    for i in range(1, n + 1):
        head = f"-- Business justification: benchmark table {i}\n"
        (directory / f"{i:06d}_create_bench_t{i}.up.sql").write_text(
            head + f"CREATE TABLE bench_t{i} (id bigserial PRIMARY KEY, name text);\n"
            f"CREATE INDEX idx_bench_t{i}_name ON bench_t{i} (name);\n"
        )
        (directory / f"{i:06d}_create_bench_t{i}.down.sql").write_text(head + f"DROP TABLE IF EXISTS bench_t{i};\n")


def last_flow_run_seconds(api_url: str) -> float:
    r = httpx.post(f"{api_url}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=10)
    run = r.json()[0]
    return float(run["total_run_time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--migrations", type=int, default=10)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_flows_"))
    migrations = work / "migrations"
    generate(args.migrations, migrations)
    ddir = work / "deployments"
    ddir.mkdir()
    (ddir / "bench.yaml").write_text(
        f"environment: bench\ndatabase_url: {{env: BENCH_DATABASE_URL}}\n"
        f"backup: {{url: 'file://{work / 'backups'}', retries: 0}}\napproval: {{required: false}}\n"
    )
    cli = [sys.executable, "-m", "migrator", "up"]
    flow = [sys.executable, "-m", "flows", "migrate", "--env", "bench"]
    results: dict[str, dict[str, list[float]]] = {
        "nothing pending": {"cli": [], "flow": [], "run": []},
        f"{args.migrations} pending": {"cli": [], "flow": [], "run": []},
    }
    dbs: list[str] = []
    try:
        with running_server(work / "prefect") as server:
            base = server.client_env(MIGRATOR_DEPLOYMENTS_DIR=str(ddir), MIGRATIONS_PATH=str(migrations))
            base.pop("DATABASE_URL", None)
            for _ in range(args.rounds):
                for label in results:
                    pending = label != "nothing pending"
                    for kind, cmd in (("cli", cli), ("flow", flow)):
                        name = create_db(SERVER)
                        dbs.append(name)
                        url = db_url(SERVER, name)
                        env = {**base, "DATABASE_URL": url, "BENCH_DATABASE_URL": url}
                        if not pending:
                            timed(cli, env)  # bring it up to date first
                        results[label][kind].append(timed(cmd, env))
                        if kind == "flow":
                            results[label]["run"].append(last_flow_run_seconds(server.api_url))
                        drop_db(SERVER, name)
                        dbs.remove(name)
        print(f"migrate flow vs engine CLI, running Prefect server, median of {args.rounds} (whole processes):")
        for label, r in results.items():
            c, f, run = (statistics.median(r[k]) for k in ("cli", "flow", "run"))
            print(f"  {label:16s} CLI {c:6.2f} s | flow {f:6.2f} s | ratio {f / c:5.1f}x | "
                  f"overhead {f - c:5.2f} s (target < 3 s) | flow run itself {run:5.2f} s")
    finally:
        for name in dbs:
            drop_db(SERVER, name)
        shutil.rmtree(work, ignore_errors=True)
        os.environ.pop("BENCH_DATABASE_URL", None)


if __name__ == "__main__":
    main()
