"""``migrator schema dump|check``: ``migrations/schema.sql``, the whole schema as review should see it.

``dump`` writes it from the configured database (or, ``--from-files``, from a scratch database the
engine migrates to the latest version); ``check`` rebuilds it from the files and compares (exit 1
when it is not current, with the diff). After ``up``/``down`` in the local environment the CLI
rewrites an existing schema file by itself (``migrator.commands.engine``).
"""

from __future__ import annotations

import argparse
from typing import Any

from migrator import output
from migrator.commands import Context


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "schema", parents=[common], help="migrations/schema.sql: dump it, or check it is current",
        description="migrations/schema.sql is pg_dump --schema-only of the migrated schema, normalised, with the "
        "schema_migrations row; commit it so review sees the whole schema change.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = actions.add_parser("dump", parents=[common], help="write migrations/schema.sql from the database")
    d.add_argument("--output", metavar="FILE", default=None, help="where to write (default: migrations/schema.sql)")
    d.add_argument("--from-files", action="store_true",
                   help="dump a scratch database migrated to the latest version instead of the configured database")
    d.add_argument("--scratch-url", metavar="URL", default=None, help="server for the scratch database")
    d.set_defaults(func=cmd_dump)
    c = actions.add_parser("check", parents=[common],
                           help="rebuild schema.sql from the files on a scratch database; exit 1 if it differs")
    c.add_argument("--file", metavar="FILE", default=None, help="the file to check (default: migrations/schema.sql)")
    c.add_argument("--scratch-url", metavar="URL", default=None, help="server for the scratch database")
    c.set_defaults(func=cmd_check)


def cmd_dump(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.schema.dumpfile would add 18 modules
    from migrator.schema.dumpfile import dump

    result = dump(ctx.settings, args.output, from_files=args.from_files, scratch_url=args.scratch_url)
    if ctx.json:
        output.print_json({"file": str(result.path), "version": result.version, "changed": result.changed})
    else:
        what = "wrote" if result.changed else "unchanged:"
        output.info(f"{what} {result.path} (schema at version {result.version})")
    return 0


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.schema.dumpfile would add 18 modules
    from migrator.schema.dumpfile import check

    result = check(ctx.settings, args.file, scratch_url=args.scratch_url)
    if ctx.json:
        output.print_json({"file": str(result.path), "ok": result.ok, "message": result.message, "diff": result.diff})
    else:
        if result.diff:
            output.write_stdout(result.diff)
        output.info(("ok: " if result.ok else "FAILED: ") + result.message)
    return 0 if result.ok else 1
