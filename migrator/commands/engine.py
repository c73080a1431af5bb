"""Engine commands: up, down, down-all, reset, goto, force, status, version, list, create, history."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from migrator import output
from migrator.commands import Context
from migrator.errors import DirtyDatabaseError, MigrationFailedError, MigratorError

if TYPE_CHECKING:
    from migrator.engine import Migrator, RunResult, Status

EXIT_DIRTY = 3
EXIT_PENDING = 4


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("up", "apply all pending migrations, or the next N", cmd_up)
    p.add_argument("n", nargs="?", type=int, help="number of migrations to apply (default: all)")
    p = add("down", "revert the last migration, or the last N", cmd_down)
    p.add_argument("n", nargs="?", type=int, default=1, help="number of migrations to revert (default: 1)")
    p = add("down-all", "revert ALL migrations (destructive; asks unless --yes)", cmd_down_all)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = add("reset", "down-all then up (development databases; asks unless --yes)", cmd_reset)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = add("goto", "migrate up or down to version V", cmd_goto)
    p.add_argument("version", type=int, metavar="V")
    p = add("force", "set version V and clear the dirty flag without running anything (-1: no version)", cmd_force)
    p.add_argument("version", type=int, metavar="V")
    p.add_argument("--expect", type=int, metavar="CUR", help="refuse unless the recorded version is CUR")
    p = add(
        "status", "version, dirty flag, applied and pending migrations (exit 3 when dirty)", cmd_status
    )
    p.add_argument("--check", action="store_true", help="exit 4 when migrations are pending")
    p.add_argument("--alert", action="store_true", help="send a database.dirty alert when dirty")
    p.add_argument("--all", action="store_true", help=f"list every applied migration, not the last {STATUS_RECENT}")
    add("version", "print the current version as golang-migrate does", cmd_version)
    add("list", "every migration file, applied or pending", cmd_list)
    p = add("history", "the audit trail of applied, reverted and forced migrations", cmd_history)
    p.add_argument("--limit", type=int, default=50)
    p = add("create", "create the next migration pair NNNNNN_NAME.{up,down}.sql", cmd_create)
    p.add_argument("name", help="descriptive snake_case name, e.g. add_patient_table")
    p.add_argument("--justification", default="", help="business justification for the header comment")


def _migrator(ctx: Context) -> Migrator:
    from migrator.engine import Migrator

    progress = output.info if not ctx.json else (lambda _msg: None)
    return Migrator(ctx.settings, progress=progress)


def _alert_failure(ctx: Context, m: Migrator, command: str, exc: MigratorError) -> None:
    """Send migration.failed when a webhook is configured; never changes the command's outcome."""
    if not ctx.settings.webhook_url:
        return
    from migrator.notify import failure_fields, send_event

    fields: dict[str, Any] = {"command": command}
    if isinstance(exc, MigrationFailedError):
        fields.update(failure_fields(exc))
    elif isinstance(exc, DirtyDatabaseError):
        fields.update(error=str(exc), failing_version=exc.version, dirty=True)
    else:
        fields["error"] = str(exc)
    if m.database:
        fields.setdefault("database", m.database)
    send_event(ctx.settings, "migration.failed", **fields)


def _run_change(ctx: Context, command: str, action: Any) -> int:
    m = _migrator(ctx)
    try:
        result: RunResult = action(m)
    except MigratorError as exc:
        _alert_failure(ctx, m, command, exc)
        if ctx.json and isinstance(exc, MigrationFailedError):
            output.print_json({"ok": False, **exc.to_dict()})
        raise
    if ctx.json:
        output.print_json({"ok": True, **result.to_dict()})
    else:
        for w in result.warnings:
            output.info(f"warning: {w}")
        if result.changed:
            output.info(
                f"{result.database}: version {result.version_before} -> {result.version_after} "
                f"({len(result.steps)} migration{'s' if len(result.steps) != 1 else ''})"
            )
    return 0


def _confirm(ctx: Context, args: argparse.Namespace, question: str) -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise MigratorError(f"{question.rstrip('?')}: refusing without confirmation; add --yes to proceed")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise MigratorError("aborted: nothing was changed")


def cmd_up(ctx: Context, args: argparse.Namespace) -> int:
    return _run_change(ctx, "up", lambda m: m.up(args.n))


def cmd_down(ctx: Context, args: argparse.Namespace) -> int:
    return _run_change(ctx, "down", lambda m: m.down(args.n))


def cmd_down_all(ctx: Context, args: argparse.Namespace) -> int:
    _confirm(ctx, args, "Revert ALL migrations? This drops every table they created")
    return _run_change(ctx, "down-all", lambda m: m.down_all())


def cmd_reset(ctx: Context, args: argparse.Namespace) -> int:
    _confirm(ctx, args, "Reset the database (revert ALL migrations, then apply them again)?")
    return _run_change(ctx, "reset", lambda m: m.reset())


def cmd_goto(ctx: Context, args: argparse.Namespace) -> int:
    return _run_change(ctx, "goto", lambda m: m.goto(args.version))


def cmd_force(ctx: Context, args: argparse.Namespace) -> int:
    return _run_change(ctx, "force", lambda m: m.force(args.version, expected_current=args.expect))


STATUS_RECENT = 10


def _print_status(st: Status, show_all: bool = False) -> None:
    state = "DIRTY" if st.dirty else "clean"
    version = "none" if st.version == -1 else str(st.version)
    style = "bold red" if st.dirty else ("yellow" if st.pending else "green")
    output.line(
        f"{st.database} ({st.table}): version {version}, {state}; "
        f"{len(st.applied)} applied, {len(st.pending)} pending; latest file {st.latest}",
        style=style,
    )
    applied = st.applied if show_all else st.applied[-STATUS_RECENT:]
    rows = [(m.version, m.name, m.state, m.applied_at or "") for m in applied + st.pending]
    hidden = len(st.applied) - len(applied)
    if rows:
        output.table(
            "Migrations",
            ["version", "name", "state", "applied at"],
            rows,
            styles=lambda r: "yellow" if r[2] == "pending" else ("red" if r[2] == "missing-file" else None),
            caption=f"{hidden} earlier applied migrations not shown (--all shows them)" if hidden else None,
        )
    if st.dirty:
        output.line(
            f"Dirty database version {st.version}: a migration failed midway. Inspect the schema, finish or undo "
            "the partial change, then `migrator force <last fully applied version>` (see README runbook).",
            style="bold red",
        )
    if not st.version_has_file:
        output.line(f"version {st.version} has no migration file in this folder", style="red")


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    m = _migrator(ctx)
    st = m.status()
    if ctx.json:
        output.print_json(st.to_dict())
    else:
        _print_status(st, args.all)
    if st.dirty:
        if args.alert:  # once per incident: see migrator.incident
            from migrator.commands.recover import alert_dirty

            alert_dirty(ctx)
        return EXIT_DIRTY
    if args.check and st.pending:
        if not ctx.json:
            output.info(f"{len(st.pending)} migration(s) pending")
        return EXIT_PENDING
    return 0


def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    st = _migrator(ctx).status()
    if ctx.json:
        output.print_json({"version": st.version, "dirty": st.dirty})
        return 0
    if st.version == -1:
        raise MigratorError("no migration")
    print(f"{st.version}{' (dirty)' if st.dirty else ''}")
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    m = _migrator(ctx)
    ms = m.load_files()
    try:
        st: Status | None = m.status()
    except MigratorError as exc:
        if m.settings.database_url:
            raise
        output.info(f"warning: database state unavailable ({exc})")
        st = None
    version = st.version if st else -1
    rows = [
        {
            "version": mig.version,
            "name": mig.name,
            "up": mig.up.filename if mig.up else None,
            "down": mig.down.filename if mig.down else None,
            "state": "applied" if st and mig.version <= version else "pending",
        }
        for mig in ms
    ]
    if ctx.json:
        output.print_json({"version": version, "migrations": rows, "problems": [p.to_dict() for p in ms.problems]})
    else:
        output.table(
            f"Migrations in {ms.directory}",
            ["version", "name", "up", "down", "state"],
            [(r["version"], r["name"], r["up"] or "MISSING", r["down"] or "MISSING", r["state"]) for r in rows],
            styles=lambda r: "yellow" if r[4] == "pending" else None,
        )
        for p in ms.problems:
            output.info(f"{p.severity}: {p}")
    return 0


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    rows = _migrator(ctx).history(args.limit)
    if ctx.json:
        output.print_json(rows)
        return 0
    output.table(
        "Migration audit trail (newest first)",
        ["finished", "version", "dir", "ok", "ms", "user", "host", "run id", "sha256"],
        [
            (
                f"{r['finished_at']:%Y-%m-%d %H:%M:%S}",
                r["version"],
                r["direction"],
                "yes" if r["success"] else "NO",
                r["duration_ms"],
                r["db_user"],
                r["client_host"],
                r["run_id"] or "",
                (r["checksum"] or "")[:12],
            )
            for r in rows
        ],
        styles=lambda r: "red" if r[3] == "NO" else None,
    )
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    from migrator import files

    up, down = files.create(ctx.settings.migrations_path, args.name, justification=args.justification)
    if ctx.json:
        output.print_json({"up": str(up), "down": str(down)})
    else:
        output.line(f"created {up}\ncreated {down}")
    return 0
