"""Engine commands: up, down, down-all, reset, goto, force, status, version, list, create, history."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from migrator import argtypes, output
from migrator.commands import Context, fleet, suggest
from migrator.errors import DirtyDatabaseError, MigrationFailedError, MigratorError

if TYPE_CHECKING:
    from migrator.engine import Migrator, RunResult, Status

EXIT_DIRTY = 3
EXIT_PENDING = 4
EXIT_INVALID_INDEX = 5


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("up", "apply all pending migrations, or the next N", cmd_up)
    p.add_argument("n", nargs="?", type=argtypes.count, metavar="N",
                   help="number of migrations to apply (default: all)")
    p = add("down", "revert the last migration, or the last N", cmd_down)
    p.add_argument("n", nargs="?", type=argtypes.count, default=1, metavar="N",
                   help="number of migrations to revert (default: 1)")
    p = add("down-all", "revert ALL migrations (destructive; asks unless --yes)", cmd_down_all)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (make: YES=1)")
    p = add("reset", "down-all then up (development databases; asks unless --yes)", cmd_reset)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (make: YES=1)")
    p = add("goto", "migrate up or down to version V", cmd_goto)
    p.add_argument("version", type=argtypes.version, metavar="V",
                   help="the version to end at: a migration's version (e.g. 3; it must have a file), or -1 to "
                   "revert everything")
    p = add("force", "set version V and clear the dirty flag without running anything (-1: no version)", cmd_force)
    p.add_argument("version", type=argtypes.version, metavar="V",
                   help="the version to record: the last migration that is fully applied, or -1 for none")
    p.add_argument("--expect", type=argtypes.version, metavar="CUR", help="refuse unless the recorded version is CUR")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask when forcing a CLEAN database to another version (marks migrations applied or "
                   "not applied without running them)")
    p = add(
        "status", "version, dirty flag, applied and pending migrations (exit 3 when dirty, 5 with an INVALID index)",
        cmd_status,
    )
    p.add_argument("--check", action="store_true", help="exit 4 when migrations are pending")
    p.add_argument("--alert", action="store_true", help="send a database.dirty alert when dirty")
    p.add_argument("--all", action="store_true", help=f"list every applied migration, not the last {STATUS_RECENT}")
    add("version", "print the current version as golang-migrate does", cmd_version)
    add("list", "every migration file, applied or pending", cmd_list)
    p = add("history", "the audit trail of applied, reverted and forced migrations", cmd_history)
    p.add_argument("--limit", type=argtypes.count, default=50, metavar="N",
                   help="show the newest N attempts (default 50)")
    p = add("create", "create the next migration pair NNNNNN_NAME.{up,down}.sql", cmd_create)
    p.add_argument("name", metavar="NAME", help="descriptive snake_case name, e.g. add_patient_table")
    p.add_argument("--justification", default="", metavar="TEXT",
                   help="business justification for the header comment (without it the header says TODO, which "
                   "validate refuses)")


def _migrator(ctx: Context) -> Migrator:
    # lazy: `migrator --help` loads this module; migrator.engine would add 209 modules (psycopg, asyncio, ...)
    from migrator.engine import Migrator

    progress = output.info if not ctx.json else (lambda _msg: None)
    return Migrator(ctx.settings, progress=progress)


def _alert_failure(ctx: Context, m: Migrator, command: str, exc: MigratorError) -> None:
    """Send migration.failed when a webhook is configured; never changes the command's outcome."""
    if not ctx.settings.webhook_url:
        return
    # lazy: `migrator --help` loads this module; migrator.alerts.notify would add 223 modules (httpx, rich, ...)
    from migrator.alerts.notify import failure_fields, send_event

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


def _run_change(ctx: Context, command: str, action: Any, m: Migrator | None = None) -> int:
    m = m or _migrator(ctx)
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
                f"{result.database}: version {_shown_version(result.version_before)} -> "
                f"{_shown_version(result.version_after)} "
                f"({len(result.steps)} migration{'s' if len(result.steps) != 1 else ''})"
            )
    if result.changed:
        _refresh_schema_file(ctx, result.version_after)
    return 0


def _refresh_schema_file(ctx: Context, version: int) -> None:
    """dbmate's habit: after a change in the local environment, rewrite migrations/schema.sql when the
    project keeps one (it exists) and it is not already the schema at ``version`` of these files (then
    no pg_dump runs). Never fails the command: the migration is already applied."""
    settings = ctx.settings
    # lazy: `migrator --help` loads this module; migrator.schema.dumpfile would add 18 modules
    from migrator.schema.dumpfile import SCHEMA_FILE

    path = settings.migrations_path / SCHEMA_FILE
    if settings.environment != "local" or not path.exists():
        return
    # lazy: `migrator --help` loads this module; migrator.files and migrator.schema.dumpfile would add 18 modules
    from migrator import files
    from migrator.schema.dumpfile import dump, records

    if records(files.load(settings.migrations_path), path, version):
        return

    try:
        result = dump(settings)
    except MigratorError as exc:
        output.info(f"warning: {settings.migrations_path / SCHEMA_FILE} not updated: {exc}; "
                    "run `migrator schema dump`")
        return
    if result.changed and not ctx.json:
        output.info(f"wrote {result.path} (schema at version {result.version})")


def _shown_version(version: int) -> str:
    return "none" if version == -1 else str(version)


def _confirm(ctx: Context, args: argparse.Namespace, question: str, make_yes: str = "YES=1") -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        how = suggest("add --yes", f"add {make_yes}")
        raise MigratorError(f"{question.rstrip('?')}: refusing without confirmation; {how} to proceed")
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
    """force on a dirty database is the recovery step; on a clean one it rewrites history, so it asks."""
    m = _migrator(ctx)
    expect = args.expect
    st = m.status()
    if not st.dirty and args.version != st.version:
        if args.version > st.version:
            skipped = [i for i in st.pending if i.version <= args.version]
            what = (
                f"marks {len(skipped)} migration(s) that never ran as applied "
                f"({', '.join(f'{i.version} {i.name}' for i in skipped[:5])}{', ...' if len(skipped) > 5 else ''}): "
                "their SQL will not run on this database"
            ) if skipped else "records a version with no migration file"
        else:
            undone = [i for i in st.applied if i.version > args.version and i.state != "missing-file"]
            what = (
                f"marks {len(undone)} applied migration(s) as not applied without reverting them "
                f"({', '.join(f'{i.version} {i.name}' for i in undone[:5])}{', ...' if len(undone) > 5 else ''}): "
                "the next up runs them again on a schema that already has them"
            ) if undone else "records a lower version without reverting anything"
        output.info(
            f"warning: the database is clean at version {'none' if st.version == -1 else st.version}; "
            f"forcing {args.version} {what}"
        )
        _confirm(ctx, args, f"Force version {args.version} anyway?", make_yes='ARGS="--yes"')
        if expect is None:
            expect = st.version  # what was confirmed: refuse if someone changed the state meanwhile
    warning = _force_dirty_warning(st, args.version)
    if warning:
        output.info(warning)
    return _run_change(ctx, "force", lambda m: m.force(args.version, expected_current=expect), m)


def _force_dirty_warning(st: Status, version: int) -> str | None:
    """On a dirty database: which statements the failed attempt ran (they stay), and what forcing
    ``version`` then claims was done by hand. force itself runs and undoes nothing."""
    failure = getattr(st, "failure", None)
    if not st.dirty or failure is None:
        return None
    states = list(failure.statements or [])
    label = f"migration {failure.version}{' ' + failure.name if failure.name else ''} ({failure.direction})"
    if not states:
        return f"warning: {label} stopped part-way and its statements are not known: check the schema first"
    done = [s for s in states if s.state == "done"]
    shown = ", ".join(f"{s.index} (line {s.line})" for s in done[:5]) + (", ..." if len(done) > 5 else "")
    ran = (f"statement(s) {shown} of {len(states)} ran and stay applied" if done
           else f"none of its {len(states)} statement(s) completed")
    if not failure.finished:
        ran += "; the one that was running may or may not have completed"
    finished_it = version >= failure.version if failure.direction == "up" else version < failure.version
    if failure.direction == "up":
        claim = ("that you ran the rest of the file by hand" if finished_it else
                 "that you reverted what ran by hand (else the next up runs those statements again)")
    else:
        claim = ("that you ran the rest of the down file by hand" if finished_it else
                 "that you restored by hand what the down removed")
    return (f"warning: {label} stopped part-way: {ran}. force runs and undoes no SQL: recording "
            f"{'none' if version == -1 else version} says {claim}")


STATUS_RECENT = 10


def _print_status(st: Status, show_all: bool = False, last_failed: dict[str, Any] | None = None) -> None:
    state = "DIRTY" if st.dirty else "clean"
    version = "none" if st.version == -1 else str(st.version)
    style = "bold red" if st.dirty else ("yellow" if st.pending else "green")
    failure = getattr(st, "failure", None)
    dirty_row = (failure.version if failure is not None else st.version) if st.dirty else None
    reverting = failure is not None and failure.direction == "down"
    applied_n = sum(1 for m in st.applied if m.version != dirty_row)
    pending_n = sum(1 for m in st.pending if m.version != dirty_row)
    partly = ("1 partly reverted, " if reverting else "1 partly applied, ") if dirty_row is not None else ""
    output.line(
        f"{st.database} ({st.table}): version {version}, {state}; {applied_n} applied, "
        f"{partly}{pending_n} pending; latest file {st.latest}",
        style=style,
    )
    dirty_state = "DIRTY: partly reverted" if failure is not None and failure.direction == "down" else (
        "DIRTY: partly applied")
    applied = st.applied if show_all else st.applied[-STATUS_RECENT:]
    rows = [
        (m.version, m.name, dirty_state if m.version == dirty_row else m.state,
         "" if m.version == dirty_row else (m.applied_at or ""))
        for m in applied + st.pending
    ]
    hidden = len(st.applied) - len(applied)
    if rows:
        output.table(
            "Migrations",
            ["version", "name", "state", "applied at"],
            rows,
            styles=lambda r: "bold red" if str(r[2]).startswith("DIRTY") else (
                "yellow" if r[2] == "pending" else ("red" if r[2] == "missing-file" else None)),
            caption=f"{hidden} earlier applied migrations not shown (--all shows them)" if hidden else None,
        )
    if st.dirty:
        for text in dirty_lines(st, last_failed):
            output.line(text, style="bold red" if text.startswith("DIRTY") else None)
    if not st.version_has_file:
        output.line(f"version {st.version} has no migration file in this folder", style="red")
    for index in st.invalid_indexes:
        name = index.split(" ", 1)[0]
        output.line(f"INVALID index {index}: it enforces nothing and the planner ignores it (a failed or killed "
                    f"CONCURRENTLY build); drop it with DROP INDEX CONCURRENTLY IF EXISTS {name}, then build it "
                    "again (`migrator recover --resume` does both while the database is dirty)", style="bold red")


def _one_line(sql: str, limit: int | None = None) -> str:
    text = " ".join(sql.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _previous_version(st: Status, version: int) -> int:
    """The migration before ``version`` in the folder (what a finished down would record), -1 if none."""
    earlier = [m.version for m in st.applied + st.pending if m.version < version and m.state != "missing-file"]
    return max(earlier, default=-1)


def recovery_choices(st: Status) -> tuple[int, int]:
    """(version to force after finishing the change by hand, version to force after undoing it by hand)."""
    failure = getattr(st, "failure", None)
    if failure is not None and failure.direction == "down":
        return st.version, failure.version  # the down of V failed midway: the database records V's predecessor
    version = failure.version if failure is not None else st.version
    return version, _previous_version(st, version)


def dirty_lines(st: Status, last_failed: dict[str, Any] | None = None) -> list[str]:
    """What failed, where, what ran, and the two ways out, as lines for the terminal (``status``).

    ``last_failed`` (the newest failed audit row) stands in when ``st.failure`` is unknown.
    """
    failure = getattr(st, "failure", None)
    finish, undo = recovery_choices(st)
    lines: list[str] = []
    if failure is not None:
        where = f"{_shown_path(failure.file)}:{failure.line}" if failure.line else _shown_path(failure.file)
        finished = getattr(failure, "finished", True)
        verb = "failed" if finished else "was interrupted (killed, or the server crashed)"
        lines.append(f"DIRTY: migration {failure.version} {failure.name or ''} ({failure.direction}) {verb} at {where}")
        if failure.pg_error and finished:
            lines.append(f"  error: {_one_line(str(failure.pg_error))}")
        elif not finished:
            lines.append("  error: none recorded: the statement it was running may or may not have completed; "
                         "check the schema")
        if getattr(failure, "file_changed", False):
            lines.append("  warning: the file changed since this attempt; the statements below are today's file")
        if failure.statement:
            lines.append(f"  statement: {_one_line(str(failure.statement))}")
        states = list(failure.statements or [])
        reverted = getattr(failure, "reverted", None)
        if states:
            done = sum(1 for s in states if s.state == "done")
            stay = "ran; a revert afterwards undid part of them" if reverted is not None else "ran and stay applied"
            lines.append(f"  statements ({done} of {len(states)} {stay}):")
            for s in states:
                mark = {"done": "done   ", "failed": "FAILED " if finished else "running", "not run": "not run"}.get(
                    s.state, s.state)
                lines.append(f"    {s.index:>3}  line {s.line:<5} {mark}  {_one_line(s.text, 100)}")
        if reverted is not None:
            lines.append(f"  then a revert ran {reverted} of {failure.revert_total or '?'} statement(s) of "
                         f"{_shown_path(failure.revert_file)} and stopped: the schema is partly undone; "
                         "`migrator recover --revert` continues it where it stopped")
        if failure.run_id:
            lines.append(f"  run id: {failure.run_id}")
    elif last_failed is not None:
        lines.append(
            f"DIRTY: migration {last_failed['version']} {last_failed.get('name') or ''} ({last_failed['direction']}) "
            f"failed at {last_failed['finished_at']:%Y-%m-%d %H:%M:%S}"
        )
        lines.append(f"  error: {_one_line(str(last_failed.get('error') or '?'))}")
    else:
        lines.append(
            f"DIRTY: migration {st.version} did not finish; no audit row says which statements ran (it was run by "
            "golang-migrate, or before the audit trail existed): compare the schema with the migration file"
        )
    undo_what = "restore what the down removed" if failure is not None and failure.direction == "down" else (
        "revert the statements that ran")
    finish_what = "run the rest of the down" if failure is not None and failure.direction == "down" else (
        "run the failed statement (fixed) and the ones after it")
    def force(v: int) -> str:
        return suggest(f"migrator force {v} --expect {st.version}",
                       f'make migrate-force V={v} ARGS="--expect {st.version}"')

    lines += [
        "Nothing runs until you choose one way out. Inspect the schema first (psql; "
        f"`{suggest('migrator embedded psql')}` on the embedded server); a failed CREATE INDEX CONCURRENTLY "
        "leaves an INVALID index to drop:",
        f"  finish by hand: {finish_what}, then `{force(finish)}` "
        f"(records {finish} as {'applied' if finish != -1 else 'no version'})",
        f"  undo by hand:   {undo_what}, then `{force(undo)}` "
        + (f"(records {undo}: migration {undo} stays applied)" if failure is not None and failure.direction == "down"
           else f"(records {'no version' if undo == -1 else undo}: migration {finish} stays pending and runs again "
           "on the next up)"),
    ]
    if _recover_available():
        lines.append(
            f"  or let migrator do it, audited: `{suggest('migrator recover')}` shows what each action would do now; "
            f"`{suggest('migrator recover --resume')}` runs the statements that did not run (fix the file first), "
            "`--revert` runs the down file and records the previous version, "
            "`--mark-applied` records the version after you finished by hand"
        )
    return lines


def _shown_path(path: object) -> str:
    """The file as validate prints it (``migrator.files.shown``), ``?`` when unknown."""
    # lazy: `migrator --help` loads this module; migrator.files would add 7 modules
    from migrator.files import shown

    return shown(str(path)) if path else "?"


def _recover_available() -> bool:
    return importlib.util.find_spec("migrator.commands.recover") is not None


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    if fleet.names_a_fleet(getattr(args, "env", None)):  # a fleet: one line per database (issue 14)
        return fleet.run_fleet_status(ctx, args)
    m = _migrator(ctx)
    st = m.status()
    if ctx.json:
        output.print_json(st.to_dict())
    else:
        last_failed = None
        if st.dirty and getattr(st, "failure", None) is None:
            last_failed = next((r for r in m.history(20)
                                if not r["success"] and r["direction"] in ("up", "down")), None)
        _print_status(st, args.all, last_failed)
    if st.dirty:
        if args.alert:  # once per incident: see migrator.recover.incident
            # lazy: a build may leave out migrator.commands.recover (see _recover_available)
            from migrator.commands.recover import alert_dirty

            alert_dirty(ctx)
        return EXIT_DIRTY
    if st.invalid_indexes:
        return EXIT_INVALID_INDEX
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
        ["finished", "version", "dir", "ok", "ms", "user", "host", "run id", "sha256", "error"],
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
                " ".join(str(r.get("error") or "").split()),
            )
            for r in rows
        ],
        styles=lambda r: "red" if r[3] == "NO" else None,
    )
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.files would add 7 modules
    from migrator import files

    up, down = files.create(ctx.settings.migrations_path, args.name, justification=args.justification)
    if ctx.json:
        output.print_json({"up": str(up), "down": str(down)})
    else:
        output.line(f"created {up}\ncreated {down}")
        if not args.justification.strip():
            how = suggest("--justification \"TICKET-42 why\"", "ARGS='--justification \"TICKET-42 why\"'")
            validate = suggest("migrator validate", "make migrate-validate")
            output.info(
                f"note: the business justification in {up.name} is TODO: `{validate}` fails (MIG202) until you "
                f"replace it (or create with {how})"
            )
        # lazy: `migrator --help` loads this module; migrator.schema.dumpfile would add 18 modules
        from migrator.schema.dumpfile import SCHEMA_FILE

        if (ctx.settings.migrations_path / SCHEMA_FILE).exists():
            up_cmd = suggest("migrator up", "make migrate-up")
            output.info(f"note: once it is written, `{up_cmd}` applies it and rewrites {SCHEMA_FILE}; commit both "
                        "(`validate` fails with MIG305 until schema.sql is current)")
    return 0
