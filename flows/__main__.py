"""Run a flow directly (Prefect's ephemeral API when no server is configured).

    uv run python -m flows migrate [--env local] [--target N] [--dry-run]
    uv run python -m flows status-monitor --env dev
    uv run python -m flows migrate-fleet --env tenants [--dry-run] [--max-parallel 8] [--max-failures 2]
    uv run python -m flows fleet-status --env tenants
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

# A HIPAA product's local runs phone nobody: no Prefect telemetry from the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("flow", choices=["migrate", "rollback", "status-monitor", "backup", "restore-drill",
                                    "migrate-fleet", "fleet-status"])
    p.add_argument("--env", default="local", help="environment (deployments/<env>.yaml)")
    p.add_argument("--target", type=int, default=None, help="migrate: target version")
    p.add_argument("--steps", type=int, default=1, help="rollback: migrations to revert")
    p.add_argument("--dry-run", action="store_true", help="migrate: validate and plan only")
    p.add_argument("--canary", type=int, default=None, help="migrate-fleet: canary databases (fleet: canary)")
    p.add_argument("--max-parallel", type=int, default=None, help="migrate-fleet: databases at a time")
    p.add_argument("--max-failures", type=int, default=None, help="migrate-fleet: failure budget")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="platformdirs")

    from migrator.errors import MigratorError
    from migrator.output import error

    try:
        if args.flow == "migrate":
            from flows.migrate import migrate

            result = migrate(environment=args.env, target_version=args.target, dry_run=args.dry_run)
        elif args.flow == "migrate-fleet":
            from flows.fleet import migrate_fleet

            result = migrate_fleet(environment=args.env, target_version=args.target, dry_run=args.dry_run,
                                   canary=args.canary, max_parallel=args.max_parallel,
                                   max_failures=args.max_failures, children="subflow")
        elif args.flow == "fleet-status":
            from flows.fleet import fleet_status

            result = fleet_status(environment=args.env)
        elif args.flow == "rollback":
            from flows.rollback import rollback

            result = rollback(environment=args.env, steps=args.steps)
        elif args.flow == "status-monitor":
            from flows.status_monitor import status_monitor

            result = status_monitor(environment=args.env)
        elif args.flow == "backup":
            from flows.backup import backup

            result = backup(environment=args.env)
        else:
            from flows.restore_drill import restore_drill

            result = restore_drill(environment=args.env)
    except MigratorError as exc:
        error(str(exc))
        return 1
    except Exception as exc:  # the flow run failed: Prefect has logged the details above
        error(f"{args.flow} flow run failed ({type(exc).__name__}): {exc}")
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
