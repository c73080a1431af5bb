"""``migrator validate`` (the deploy gate) and ``migrator verify-roundtrip``.

validate never starts the embedded database: drift is checked only when a database URL is
configured (--database-url / DATABASE_URL). Exit codes: 0 clean, 1 errors, 2 warnings with --strict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from migrator import output
from migrator import validate_cache as cache
from migrator.commands import Context
from migrator.errors import ConfigError

FORMATS = ("human", "text", "json", "sarif", "github", "markdown")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "validate",
        parents=[common],
        help="parse and lint every migration (structure, safety, HIPAA, drift); exit 1 on errors",
        description=(
            "Parse every migration with PostgreSQL's parser and check structure, production safety, HIPAA "
            "rules and, when a database URL is given, drift. Exit 0 clean, 1 errors, 2 warnings with --strict."
        ),
    )
    p.add_argument("--list-rules", action="store_true", help="print the rule catalogue (with --format markdown: "
                   "the tables of docs/validation.md) and exit")
    p.add_argument("--strict", action="store_true", help="exit 2 when there are warnings (and no errors)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="human (tables; the default on a terminal), text (file:line:col: severity: message [rule]; the "
        "default into a pipe or file), json, sarif (2.1.0) or github (annotations)",
    )
    p.add_argument(
        "--require-justification",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require a '-- Business justification:' header in up files (default on; env "
        "MIGRATOR_REQUIRE_JUSTIFICATION=0 turns it off)",
    )
    p.add_argument("--no-drift", action="store_true", help="skip the drift check even when a database is configured")
    p.add_argument("--no-cache", action="store_true",
                   help="validate every file again instead of reusing the findings of an unchanged folder "
                   "(.migrator/cache; env MIGRATOR_NO_CACHE=1)")
    p.set_defaults(func=cmd_validate)

    r: argparse.ArgumentParser = sub.add_parser(
        "verify-roundtrip",
        parents=[common],
        help="on a scratch database, check that every down restores exactly the schema before its up",
        description=(
            "Create a scratch database on the configured server (or the embedded one), apply every up, then walk "
            "down and up one migration at a time comparing pg_dump --schema-only output; report the first "
            "migration whose down does not restore the schema, with a diff. The scratch database is always dropped."
        ),
    )
    r.set_defaults(func=cmd_roundtrip)


def cmd_validate(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.lint.report would add 3 modules
    from migrator.lint import report, validate_folder

    if args.list_rules:
        # lazy: `migrator --help` loads this module; migrator.lint.catalogue would add 4 modules
        from migrator.lint.catalogue import rules_json, rules_markdown

        if args.format == "markdown":
            output.write_stdout(rules_markdown())
        elif ctx.json or args.format == "json":
            output.print_json(rules_json())
        else:
            rows = [(r["id"], r["name"], r["severity"], r["summary"]) for r in rules_json()]
            output.table("validate rules", ["id", "name", "severity", "what"], rows)
        return 0
    if args.format == "markdown":
        raise ConfigError("--format markdown is for --list-rules; findings use human, text, json, sarif or github")
    fmt = args.format or ("json" if ctx.json else ("human" if output.is_terminal() else "text"))
    settings = ctx.settings
    show_info = bool(getattr(args, "verbose", False))
    drift = bool(settings.database_url) and not args.no_drift
    if drift or not cache.enabled(args.no_cache):  # drift depends on the database: never cached
        report_ = validate_folder(settings.migrations_path, require_justification=args.require_justification,
                                  settings=settings, drift=drift)
        report.write(report_, fmt, show_info=show_info)
        return report_.exit_code(args.strict)
    return _cached_validate(settings.migrations_path, args, fmt, show_info)


def _cached_validate(folder: Path, args: argparse.Namespace, fmt: str, show_info: bool) -> int:
    """validate through the content-hash cache: an unchanged folder is not parsed again."""
    justification = args.require_justification
    if justification is None:
        justification = cache.require_justification_default()
    options = {"justification": justification, "base": str(Path.cwd().resolve())}
    keys = cache.folder_key(folder, options)
    base = cache.slot(folder, options)
    index = cache.load_index(base, keys[0]) if keys else None
    rendered_name = f"{fmt}:{int(show_info)}"
    report_ = None
    if index is not None:
        counts = index["counts"]
        text = cache.load_rendered(base, index, rendered_name) if fmt != "human" else None
        if text is not None:  # the whole answer, as printed last time
            if keys and index.get("signature") != keys[1]:
                index["signature"] = keys[1]
                cache.store(base, index)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            return _exit_code(counts["errors"], counts["warnings"], args.strict)
        stored = cache.load_report(base)
        # lazy: `migrator --help` loads this module; migrator.lint would add 3 modules
        from migrator.lint import ValidationReport

        if stored is not None:
            report_ = ValidationReport.from_dict(stored)
    # lazy: `migrator --help` loads this module; migrator.lint.report would add 3 modules
    from migrator.lint import report, validate_folder

    new_report = report_ is None
    if report_ is None:
        report_ = validate_folder(folder, require_justification=justification)
        index = {"counts": {"errors": report_.errors, "warnings": report_.warnings}}
    assert index is not None
    rendered = None
    if fmt == "human":
        report.write(report_, fmt, show_info=show_info)
    else:
        text = report.render(report_, fmt, show_info)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        rendered = (rendered_name, text)
    if keys is not None:
        index.update(key=keys[0], signature=keys[1])
        cache.store(base, index, report_.to_dict() if new_report else None, rendered)
    return report_.exit_code(args.strict)


def _exit_code(errors: int, warnings: int, strict: bool) -> int:
    if errors:
        return 1
    return 2 if strict and warnings else 0


def cmd_roundtrip(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.lint.roundtrip would add 218 modules (psycopg, asyncio, ...)
    from migrator.lint.roundtrip import verify_roundtrip

    progress = (lambda _m: None) if ctx.json else output.info
    result = verify_roundtrip(ctx.settings, progress=progress)
    if ctx.json:
        output.print_json(result.to_dict())
    else:
        if result.ok:
            output.line(f"ok: {result.message} (scratch database {result.scratch_database} dropped)", style="green")
        else:
            output.line(f"FAILED: {result.message}", style="red")
            if result.diff:
                output.line(result.diff)
    return 0 if result.ok else 1
