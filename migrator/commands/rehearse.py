"""``migrator rehearse``: restore a backup into a scratch database on a rehearsal server, apply the
pending migrations there, and report per statement the time, the locks and how long they were
held, the table rewrites, and whether it would fail. Only stdlib at import time."""

from __future__ import annotations

import argparse
import os
from typing import Any

from migrator.commands import Context
from migrator.errors import ConfigError
from migrator.output import error, info, print_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rehearse",
        parents=[common],
        help="apply the pending migrations to a restored backup first: locks, hold times, rewrites, failures",
        description=(
            "Restore a backup (default: the newest complete one) into a scratch database on a rehearsal server "
            "(never the source's database), apply the pending migrations there as `up` would, and report per "
            "statement the wall time, the locks taken and how long each was held until commit, the tables "
            "rewritten and any failure. The scratch database is dropped afterwards unless --keep. Exit 1 when a "
            "migration would fail."
        ),
    )
    p.add_argument("--backup", metavar="KEY|latest", default="latest",
                   help="backup to restore (default: latest, the newest complete backup of the database)")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="where the backups are: s3://bucket/prefix or file:///dir (env BACKUP_URL)")
    p.add_argument("--scratch-url", metavar="URL",
                   help="rehearsal server (env MIGRATOR_REHEARSAL_URL, else rehearsal.server_url in "
                        "deployments/<env>.yaml; the embedded server for local)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database afterwards (to inspect it)")
    p.add_argument("--large-table", metavar="SIZE",
                   help="mark blocking locks on tables this big or bigger (default 10MB; rehearsal.large_table_bytes)")
    p.add_argument("--max-backup-bytes", metavar="SIZE",
                   help="skip (with a warning) when the backup is bigger (rehearsal.max_backup_bytes)")
    p.add_argument("--allow-same-server", action="store_true",
                   help="allow a rehearsal server that is the source's server (another database on it)")
    p.add_argument("--target", metavar="VERSION", type=int, help="rehearse up to this version (default: latest)")
    p.set_defaults(func=run_rehearse)


def options_from(ctx: Context, args: argparse.Namespace) -> Any:
    """RehearsalOptions from the command line, then MIGRATOR_REHEARSAL_URL, then the deployment YAML."""
    # lazy: `migrator --help` loads this module; migrator.rehearse.run would add 342 modules (psycopg, yaml, ...)
    from migrator.rehearse.run import DEFAULT_LARGE_TABLE_BYTES, RehearsalOptions, deployment_rehearsal, parse_bytes

    settings = ctx.settings
    conf = deployment_rehearsal(settings.environment)
    server = conf.get("server_url")
    if isinstance(server, dict):  # {secret_block, env}: the CLI reads only the environment variable
        server = os.environ.get(str(server.get("env") or "")) or None
    elif server is not None and not isinstance(server, str):
        raise ConfigError(f"deployments/{settings.environment}.yaml: rehearsal.server_url must be a string or "
                          "{secret_block, env}")
    scratch = getattr(args, "scratch_url", None) or os.environ.get("MIGRATOR_REHEARSAL_URL") or server
    large = getattr(args, "large_table", None) or conf.get("large_table_bytes")
    limit = getattr(args, "max_backup_bytes", None) or conf.get("max_backup_bytes")
    allow = True if getattr(args, "allow_same_server", False) else conf.get("allow_same_server")
    return RehearsalOptions(
        backup=args.backup,
        scratch_url=scratch,
        backup_destination=getattr(args, "source", None),
        keep=args.keep,
        large_table_bytes=parse_bytes(large, "--large-table") if large is not None else DEFAULT_LARGE_TABLE_BYTES,
        max_backup_bytes=parse_bytes(limit, "--max-backup-bytes") if limit is not None else None,
        allow_same_server=bool(allow) if allow is not None else None,
        target_version=getattr(args, "target", None),
    )


def run_rehearse(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.rehearse.report and 1 more would add 342 modules
    from migrator.rehearse.report import print_human
    from migrator.rehearse.run import rehearse

    options = options_from(ctx, args)
    try:
        report = rehearse(ctx.settings, options, progress=None if ctx.json else info)
    except KeyboardInterrupt:  # the scratch database was dropped on the way out; the source never touched
        error("rehearsal interrupted: its scratch database was dropped and nothing was applied to the source "
              "database")
        return 130
    if ctx.json:
        print_json(report.to_dict())
    else:
        print_human(report)
    if not report.ok:
        error(report.failure_message() or "rehearsal failed")
        return 1
    return 0
