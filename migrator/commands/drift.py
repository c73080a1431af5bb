"""``migrator drift``: the live schema against the schema its applied migrations produce.

Exit 0 when they match, 3 on drift (like ``status`` on a dirty database: something a person must
look at), 1 when the check could not run, 2 for a bad option or ignore file.
"""

from __future__ import annotations

import argparse
from typing import Any

from migrator import output
from migrator.commands import Context


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "drift",
        parents=[common],
        help="compare the live schema with what its applied migrations produce; exit 3 on drift",
        description=(
            "Build the schema the applied migrations produce (on a scratch database, cached in .migrator/cache by "
            "the files' hashes) and compare it with the database's catalog: tables, columns, types, defaults, "
            "constraints, indexes (and their validity), sequences, views, functions, triggers, extensions, RLS "
            "policies and grants. One line per difference; exit 0 none, 3 drift."
        ),
    )
    p.add_argument("--ignore", metavar="FILE", default=None,
                   help="objects managed elsewhere, one `[KIND] PATTERN` a line (default: migrations/.driftignore "
                   "when it exists; env MIGRATOR_DRIFT_IGNORE)")
    p.add_argument("--scratch-url", metavar="URL", default=None,
                   help="build the expected schema on this server instead of the database's own (same major "
                   "version; needs CREATEDB)")
    p.set_defaults(func=cmd_drift)


def cmd_drift(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.schema.drift would add 213 modules (psycopg, asyncio, ...)
    from migrator.schema.drift import EXIT_DRIFT, check

    report = check(ctx.settings, ignore=args.ignore, scratch_url=args.scratch_url)
    if ctx.json:
        output.print_json(report.to_dict())
    else:
        for line in report.lines:
            output.write_stdout(line)
        how = "cached expected schema" if report.expected_cached else "expected schema built on a scratch database"
        output.info(f"{report.summary()} ({how}, {report.seconds:.2f}s)")
        if report.drifted:
            output.info("run `migrator drift --json` for both sides of every difference")
    return EXIT_DRIFT if report.drifted else 0
