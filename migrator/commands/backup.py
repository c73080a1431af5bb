"""``migrator backup``, ``backup verify``, ``restore`` and ``backups list|prune``.

Only stdlib and light ``migrator`` modules at import time: the backup package (and boto3, rich)
are imported when one of these commands runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from migrator import output
from migrator.commands import Context
from migrator.errors import ConfigError
from migrator.output import info, print_json
from migrator.redact import redact


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the backup commands to the CLI."""
    p = sub.add_parser(
        "backup",
        parents=[common],
        help="stream pg_dump into S3 or a folder (encrypted, checksummed)",
        description="Back up the configured database (pg_dump --format=custom) to BACKUP_URL / --to.",
    )
    p.add_argument(
        "--to", metavar="URL", help="s3://bucket/prefix or file:///dir (env BACKUP_URL; default file://./backups)"
    )
    p.set_defaults(func=run_backup)
    bsub = p.add_subparsers(dest="backup_command", metavar="SUBCOMMAND")
    v = bsub.add_parser("verify", parents=[common], help="download a backup, check its sha256 and pg_restore --list")
    v.add_argument("key", metavar="KEY", help="backup key as listed by `migrator backups list`, or latest")
    _source_options(v)
    v.set_defaults(func=run_verify)

    r = sub.add_parser(
        "restore",
        parents=[common],
        help="restore a backup (KEY or latest) into a database",
        description="Stream a backup into pg_restore (one transaction); the sha256 is checked before it commits.",
    )
    r.add_argument("key", metavar="KEY|latest", help="backup key, or latest for the newest of the configured database")
    r.add_argument("--target-url", metavar="URL", help="database to restore into (default: the configured database)")
    r.add_argument("--clean", action="store_true", help="drop and recreate the backup's objects in a non-empty target")
    r.add_argument("--yes", action="store_true", help="confirm --clean")
    r.add_argument("--no-owner", action="store_true", help="do not restore ownership and privileges")
    _source_options(r)
    r.set_defaults(func=run_restore)

    g = sub.add_parser("backups", parents=[common], help="list or prune backups")
    gsub = g.add_subparsers(dest="backups_command", metavar="SUBCOMMAND", required=True)
    ls = gsub.add_parser("list", parents=[common], help="backups of the configured database, newest first")
    ls.add_argument("--all", action="store_true", help="every environment and database under the destination")
    _source_options(ls)
    ls.set_defaults(func=run_list)
    pr = gsub.add_parser(
        "prune",
        parents=[common],
        help="delete backups outside the retention policy (dry run unless --yes)",
        description=(
            "Keep the newest N complete backups and every one younger than D days (never the newest); delete the "
            "rest. Also remove incomplete objects and unfinished uploads of interrupted backups older than "
            "--orphan-grace hours."
        ),
    )
    pr.add_argument("--keep-last", metavar="N", type=int, required=True, help="always keep the newest N backups")
    pr.add_argument("--keep-days", metavar="D", type=float, required=True, help="keep every backup younger than D days")
    pr.add_argument(
        "--orphan-grace",
        metavar="HOURS",
        type=float,
        default=None,
        help="also remove incomplete backups and unfinished uploads older than this (default 24)",
    )
    pr.add_argument("--all", action="store_true", help="every environment and database under the destination")
    pr.add_argument("--yes", action="store_true", help="really delete (default: only show what would be deleted)")
    _source_options(pr)
    pr.set_defaults(func=run_prune)


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="s3://bucket/prefix or file:///dir (env BACKUP_URL; default file://./backups)",
    )
    p.add_argument("--db-name", metavar="NAME", help="database whose backups to use (default: the configured one)")


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar (bytes, rate) on stderr, only when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    # lazy: `migrator --help` loads this module; rich.console and rich.progress would add 72 modules
    from rich.console import Console
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done: bar.update(task, completed=done)


def run_backup(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import create_backup

    settings = ctx.settings
    with _progress("pg_dump", not ctx.json) as progress:
        result = create_backup(settings, destination=getattr(args, "to", None), progress=progress)
    if ctx.json:
        print_json(result.to_dict())
        return 0
    tool = result.pg_dump
    info(f"used {tool['name']} {tool['version']} ({tool['source']}: {tool['path']})")
    version = "no version" if result.schema_version < 0 else f"version {result.schema_version}"
    if result.cleanup:
        info(result.cleanup)
    info(
        f"backup of {result.database} ({version}{', DIRTY' if result.dirty else ''}) written to {result.url}: "
        f"{_human_size(result.size)}, sha256 {result.sha256}, {result.parts} part(s), encryption {result.encryption}"
    )
    return 0


def run_verify(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import verify_backup

    result = verify_backup(
        ctx.settings, args.key, getattr(args, "source", None), database=getattr(args, "db_name", None)
    )
    if ctx.json:
        print_json(result.to_dict())
    else:
        info(
            f"backup {result.url} verified: sha256 {result.sha256} and {_human_size(result.size)} match, "
            f"pg_restore {result.pg_restore['version']} lists {result.toc_entries} entries"
        )
    return 0


def run_restore(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import restore_backup

    if args.clean and not args.yes:
        raise ConfigError("--clean drops and recreates objects in the target database; add --yes to confirm")
    with _progress("restore", not ctx.json) as progress:
        result = restore_backup(
            ctx.settings,
            args.key,
            getattr(args, "target_url", None),
            clean=args.clean,
            destination=getattr(args, "source", None),
            database=getattr(args, "db_name", None),
            no_owner=args.no_owner,
            progress=progress,
        )
    if ctx.json:
        print_json(result.to_dict())
        return 0
    version = "no version" if result.schema_version < 0 else f"version {result.schema_version}"
    info(
        f"restored {result.url} into {result.target} (sha256 checked): schema {version}"
        f"{', DIRTY' if result.dirty else ''}; used pg_restore {result.pg_restore['version']}"
    )
    return 0


def _table(
    title: str, columns: list[str], rows: list[list[str]], red: Callable[[list[str]], bool] | None = None
) -> None:
    """Like ``output.table`` but keys are folded, never cut with an ellipsis, so they can be copied.

    Into a pipe or a file: plain columns, as every other table (no boxes for grep/awk to step around).
    """
    if not output.is_terminal():
        output.plain_table(title, columns, rows)
        return
    # lazy: `migrator --help` loads this module; rich.console and rich.table would add 54 modules
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold", no_wrap=True)
    for row in rows:
        t.add_row(*(redact(v) for v in row), style="red" if red and red(row) else None)
    Console(highlight=False).print(t)


def _rows(backups: list[Any]) -> list[list[str]]:
    return [
        [
            b.key if b.complete else f"{b.key} INCOMPLETE: {b.problem}",
            _human_size(b.size),
            "-" if b.version is None else str(b.version),
            _human_age(b.age_seconds),
            b.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") if b.created_at else "?",
        ]
        for b in backups
    ]


def run_list(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import list_backups

    backups = list_backups(
        ctx.settings,
        destination=getattr(args, "source", None),
        database=getattr(args, "db_name", None),
        all_groups=args.all,
    )
    if ctx.json:
        print_json([b.to_dict() for b in backups])
        return 0
    if not backups:
        info("no backups found")
    else:
        _table(
            "Backups (newest first)", ["key", "size", "version", "age", "created"], _rows(backups), red=_incomplete_row
        )
    incomplete = [b for b in backups if not b.complete]
    if incomplete:
        info(
            f"{len(incomplete)} INCOMPLETE object(s) (no verified sha256): never used as latest, restored or "
            "kept by retention; `migrator backups prune --keep-last N --keep-days D --yes` deletes them"
        )
    _report_leftovers(ctx, args)
    return 0


def _incomplete_row(row: list[str]) -> bool:
    return "INCOMPLETE" in row[0]


def _report_leftovers(ctx: Context, args: argparse.Namespace) -> None:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import find_leftovers

    found = find_leftovers(
        ctx.settings,
        destination=getattr(args, "source", None),
        database=getattr(args, "db_name", None),
        all_groups=args.all,
    )
    if found:
        size = sum(x.size or 0 for x in found)
        info(
            f"{len(found)} unfinished upload(s) ({_human_size(size)}) left by interrupted backups; "
            "`migrator backups prune --keep-last N --keep-days D --yes` removes those older than --orphan-grace (24 h)"
        )


def run_prune(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.backup would add 307 modules (psycopg, asyncio, ...)
    from migrator.backup import DEFAULT_ORPHAN_GRACE_HOURS, prune_backups

    grace = DEFAULT_ORPHAN_GRACE_HOURS if args.orphan_grace is None else args.orphan_grace
    result = prune_backups(
        ctx.settings,
        keep_last=args.keep_last,
        keep_days=args.keep_days,
        destination=getattr(args, "source", None),
        database=getattr(args, "db_name", None),
        all_groups=args.all,
        yes=args.yes,
        orphan_grace_hours=grace,
    )
    if ctx.json:
        print_json(result.to_dict())
        return 0
    verb = "would delete" if result.dry_run else "deleted"
    rows = [[verb, *r] for r in _rows(result.deleted)] + [["keep", *r] for r in _rows(result.kept)]
    rows.sort(key=lambda r: r[5], reverse=True)
    _table(
        f"Retention: keep the last {result.keep_last} and everything younger than {result.keep_days:g} days",
        ["action", "key", "size", "version", "age", "created"],
        rows,
        red=lambda r: r[0] != "keep",
    )
    if result.dry_run and result.deleted:
        info(f"dry run: {len(result.deleted)} backup(s) would be deleted; add --yes to delete them")
    elif not result.deleted:
        info(f"nothing to delete; kept {len(result.kept)} backup(s)")
    else:
        info(f"deleted {len(result.deleted)} backup(s), kept {len(result.kept)}")
    _report_removed(result)
    return 0


def _report_removed(result: Any) -> None:
    """One line per incomplete object / upload leftover removed (or that would be), then what waits."""
    verb = "would remove" if result.dry_run else "removed"
    for b in result.incomplete:
        info(f"{verb} incomplete backup {b.url} ({_human_size(b.size)}): {b.problem}")
    for x in result.leftovers:
        why = f": {x.reason}" if x.reason else ""
        info(f"{verb} {x.kind} {x.key} ({_human_size(x.size or 0)}, {_human_age(x.age_seconds())} old){why}")
    if result.dry_run and (result.incomplete or result.leftovers):
        info("dry run: add --yes to remove them")
    running = [x for x in result.waiting if getattr(x, "reason", None) and "still running" in x.reason]
    if len(result.waiting) > len(running):
        info(
            f"left alone: {len(result.waiting) - len(running)} incomplete object(s)/unfinished upload(s) younger "
            f"than {result.grace_hours:g} h (a backup may still be running; --orphan-grace HOURS)"
        )
    for x in running:
        info(f"left alone: {x.kind} {x.key} ({_human_size(x.size or 0)}): {x.reason}")
