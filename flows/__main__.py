"""Run a flow directly (Prefect's ephemeral API when no server is configured).

    uv run python -m flows migrate [--env local] [--target N] [--dry-run] [--json]
    uv run python -m flows status-monitor --env dev
    uv run python -m flows migrate-fleet --env tenants [--dry-run] [--max-parallel 8] [--max-failures 2]
    uv run python -m flows fleet-status --env tenants

Prints a short summary (the run's result as JSON with --json); a failed run ends with one
``error:`` line (Prefect's own log lines stay on stderr, without tracebacks unless MIGRATOR_DEBUG=1;
the Prefect API keeps the full tracebacks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from migrator import argtypes

# A HIPAA product's local runs phone nobody: no Prefect telemetry from the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The ephemeral API creates its database on first use; on a busy 2-core machine that exceeds
# Prefect's 20 s default and the fresh-machine command would fail for no reason of its own.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def main(argv: list[str] | None = None) -> int:
    from migrator.cli import Parser  # one-line argument errors, as the migrator CLI

    p = Parser(prog="python -m flows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("flow", choices=["migrate", "rollback", "status-monitor", "backup", "restore-drill",
                                    "migrate-fleet", "fleet-status"])
    p.add_argument("--env", default="local", help="environment (deployments/<env>.yaml)")
    p.add_argument("--target", type=argtypes.version, default=None, help="migrate: target version")
    p.add_argument("--steps", type=argtypes.count, default=1, help="rollback: migrations to revert")
    p.add_argument("--dry-run", action="store_true", help="migrate: validate and plan only")
    p.add_argument("--canary", type=int, default=None, help="migrate-fleet: canary databases (fleet: canary)")
    p.add_argument("--max-parallel", type=int, default=None, help="migrate-fleet: databases at a time")
    p.add_argument("--max-failures", type=int, default=None, help="migrate-fleet: failure budget")
    p.add_argument("--json", action="store_true", help="print the run's result as JSON on stdout")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="platformdirs")
    if not os.environ.get("MIGRATOR_DEBUG"):
        _console_logs_without_tracebacks()

    from migrator.errors import MigratorError
    from migrator.output import error

    # With Prefect's ephemeral API (no PREFECT_API_URL) there is no UI to answer the recovery form a
    # dirty failure pauses for: don't wait an hour for nobody; the run ends dirty and says so, and
    # `migrator status` / `migrator recover` take it from there.
    recovery_wait = None if os.environ.get("PREFECT_API_URL") else 1
    try:
        if args.flow == "migrate":
            from flows.migrate import migrate

            result = migrate(environment=args.env, target_version=args.target, dry_run=args.dry_run,
                             recovery_timeout_seconds=recovery_wait)
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

            result = rollback(environment=args.env, steps=args.steps, recovery_timeout_seconds=recovery_wait)
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
        message = str(exc)
        if recovery_wait is not None:  # the 1 s "wait" above was not a person's silence
            message = message.replace(f"no recovery action chosen within {recovery_wait}s",
                                      "no Prefect UI to pause in (local run)")
        error(message)
        return 1
    except Exception as exc:  # the flow run failed: Prefect has logged the details above
        error(f"{args.flow} flow run failed ({type(exc).__name__}): {exc}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(summary_line(args.flow, args.env, result))
    return 0


def summary_line(flow: str, env: str, result: object) -> str:
    """One or two lines a person reads: what happened to which database, and where the backup is."""
    from migrator.redact import redact

    if not isinstance(result, dict):
        return redact(f"{flow} {env}: {result}")
    r: dict[str, object] = result

    def v(x: object) -> str:
        return "none" if x in (None, -1) else str(x)

    parts = [f"{flow} {env}: {r.get('outcome', 'done')}"]
    if "database" in r:
        before, after = r.get("version_before"), r.get("version_after")
        parts.append(f"{r['database']} version {v(before)}" + (f" -> {v(after)}" if after != before else ""))
    steps = r.get("steps")
    if isinstance(steps, list) and steps:
        names = ", ".join(f"{s.get('version')}_{s.get('name')}" for s in steps[:3] if isinstance(s, dict))
        parts.append(f"{len(steps)} migration(s) ({names}{', ...' if len(steps) > 3 else ''})")
    plan = r.get("plan")
    if r.get("outcome") == "dry run" and isinstance(plan, list):
        parts.append(f"{len(plan)} migration(s) would run")
    counts = r.get("counts")
    if isinstance(counts, dict):  # migrate-fleet: how many databases ended how
        parts.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + " databases")
    if r.get("duration_seconds") is not None:
        parts.append(f"{r['duration_seconds']} s")
    text = "; ".join(parts)
    key = r.get("backup_key") or r.get("key")
    if key:
        text += f"\nbackup: {key}"
    return redact(text + "\n(--json prints the full result)")


def _console_logs_without_tracebacks() -> None:
    """Prefect's console handler prints a traceback per failed task and flow; keep the line, drop the trace.

    The record is copied so the API log handler (the UI) still gets the traceback.
    """
    import copy
    import logging

    import prefect.main  # noqa: F401  - configures Prefect's logging handlers
    from prefect.logging.handlers import PrefectConsoleHandler

    seen: set[int] = set()
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, PrefectConsoleHandler) and id(handler) not in seen:
                seen.add(id(handler))
                original = handler.format

                def format_line(record: logging.LogRecord, _original=original) -> str:  # type: ignore[no-untyped-def]
                    if record.exc_info or record.exc_text:
                        record = copy.copy(record)
                        record.exc_info, record.exc_text = None, None
                    return _original(record)

                handler.format = format_line  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
