"""``migrator recover``: show a dirty database's incident, or end it with --revert, --resume or --mark-applied.

The same core as the Prefect recovery form (``migrator.recover.actions``): every action is checked first
(a down file that is not safe on a partial state, a resumed file whose already-run statements
changed), audited with the engineer's name, and alerted once when a webhook is configured.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

from migrator import output
from migrator.commands import Context
from migrator.errors import ConfigError

EXIT_DIRTY = 3


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    help_ = "show why the database is dirty, or recover it: --revert, --resume or --mark-applied"
    p: argparse.ArgumentParser = sub.add_parser("recover", parents=[common], help=help_, description=help_)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--revert", dest="action", action="store_const", const="revert",
                   help="run the failed migration's down file, then record the previous version, clean")
    g.add_argument("--resume", dest="action", action="store_const", const="resume",
                   help="run only the statements that did not run (fix the file first), then record it clean")
    g.add_argument("--mark-applied", dest="action", action="store_const", const="mark_applied",
                   help="you finished the change by hand: record the version, clean")
    p.add_argument("--engineer", default=None, metavar="NAME",
                   help="your name for the audit trail (env MIGRATOR_ENGINEER; default: your login name)")
    p.add_argument("--comment", default="", metavar="TEXT", help="ticket or reason, kept in the audit trail")
    p.set_defaults(func=cmd_recover, action=None)


def _engineer(args: argparse.Namespace) -> str:
    given = args.engineer or os.environ.get("MIGRATOR_ENGINEER")
    if given:
        return str(given)
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): the core asks for one
        return ""


def cmd_recover(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.recover.actions would add 233 modules (psycopg, pglast, ...)
    from migrator.recover.actions import RecoveryError, inspect, recover

    if args.action is None:
        inc = inspect(ctx.settings)
        if ctx.json:
            output.print_json(inc.to_dict())
        else:
            _print_incident(inc)
        return EXIT_DIRTY if inc.dirty else 0
    engineer = _engineer(args).strip()
    if not engineer:  # the core's message also names the Prefect form's field; here only the CLI's ways count
        raise ConfigError("a recovery is audited with your name and none was found (no login name); "
                          "give it with --engineer NAME or MIGRATOR_ENGINEER=NAME")
    result = recover(ctx.settings, args.action, engineer, args.comment, progress=output.info)
    _alert(ctx, result)
    if ctx.json:
        output.print_json({"ok": result.ok, **result.to_dict()})
    if not result.ok:
        err = RecoveryError(result)
        err.args = (cli_words(str(err)),)  # the same error and exit code, in the CLI's words
        raise err
    if not ctx.json:
        output.info(cli_words(result.message))
    return 0


# The core speaks to the Prefect recovery form (actions chosen in a select, files on the worker);
# the terminal gets the same sentences in the CLI's terms.
_CLI_WORDS = (
    ("on the worker when you submit", "in the migrations folder when you run it"),
    ("changed on the worker", "changed in the migrations folder"),
    ("not on the worker", "not in the migrations folder"),
    ("no down file on the worker", "no down file in the migrations folder"),
    ("then use the force flow to record the previous version", "then `migrator force` the previous version"),
    ("choose mark_applied", "use --mark-applied"),
    ("choose resume", "use --resume"),
    ("choose revert", "use --revert"),
    ("or revert", "or --revert"),
)


def cli_words(text: str) -> str:
    """A core message about recovery, worded for the command line instead of the Prefect form."""
    for form, cli in _CLI_WORDS:
        text = text.replace(form, cli)
    return text


def _print_incident(inc: Any) -> None:
    # lazy: `migrator --help` loads this module; migrator.recover.actions would add 233 modules (psycopg, pglast, ...)
    from migrator.recover.actions import version_text

    output.line(inc.headline())
    if not inc.dirty:
        return
    output.table(
        f"{inc.migration or 'unknown migration'}: statements",
        ["#", "line", "statement", "state"],
        [(r.index, r.line, r.text[:100], r.state + (f": {r.error}" if r.error else "")) for r in inc.statements],
    )
    if inc.partly_reverted:
        output.table(
            f"{inc.revert_file}: statements a revert ran afterwards (the schema is partly undone)",
            ["#", "line", "statement", "state"],
            [(r.index, r.line, r.text[:100], r.state + (f": {r.error}" if r.error else ""))
             for r in inc.revert_statements],
        )
    output.table(
        "what each action does now",
        ["command", "does", "allowed"],
        [(f"migrator recover --{o.action.replace('_', '-')}", cli_words(o.does),
          "yes" if o.available else f"no: {cli_words(o.why_not or '')}")
         for o in inc.options if o.action != "leave_dirty"],
        caption=f"database {inc.database}: version {version_text(inc.version)}, dirty: yes",
    )


def _alert(ctx: Context, result: Any) -> None:
    """recovery.completed (clean), recovery.left_dirty, recovery.refused or recovery.failed when a
    webhook is configured; never changes the outcome."""
    if not ctx.settings.webhook_url:
        return
    # lazy: `migrator --help` loads this module; migrator.alerts.notify and 1 more would add 234 modules
    from migrator.alerts.notify import recovery_event, send_event
    from migrator.recover.incident import recovery_next_step

    env = f" --env {ctx.settings.environment}" if ctx.settings.environment else ""
    send_event(
        ctx.settings, recovery_event(result.outcome),
        database=result.database, version_before=result.version_before, version_after=result.version_after,
        dirty=result.dirty_after, error=result.error, message=result.message, action=result.action,
        engineer=result.engineer, outcome=result.outcome, comment=result.comment or None,
        file=f"{result.file}:{result.line}" if result.file and result.line else result.file,
        statement=result.statement,
        next_step=recovery_next_step(result, f"run `migrator recover{env}` to see what ran and choose again"),
    )


def alert_dirty(ctx: Context) -> None:
    """``status --alert``: page database.dirty once per incident (reminder after
    MIGRATOR_ALERT_REMIND_MINUTES, default 240), with what to run next."""
    # lazy: `migrator --help` loads this module; migrator.alerts.notify and 2 more would add 234 modules
    from migrator.alerts.notify import send_event
    from migrator.recover.actions import inspect
    from migrator.recover.incident import DEFAULT_REMIND_MINUTES, claim

    inc = inspect(ctx.settings)
    if not inc.dirty:
        return
    raw = os.environ.get("MIGRATOR_ALERT_REMIND_MINUTES", "").strip()
    remind = float(raw) if raw else DEFAULT_REMIND_MINUTES
    decision = claim(ctx.settings, inc, "database.dirty", remind)
    if not decision.send:
        output.info(f"database.dirty not sent again: this incident was paged at {decision.first_sent}")
        return
    env = f" --env {ctx.settings.environment}" if ctx.settings.environment else ""
    next_step = f"run `migrator recover{env}` to see what ran and the choices (--revert, --resume, --mark-applied)"
    prefix = "Reminder: " if decision.kind == "reminder" else ""
    send_event(
        ctx.settings, "database.dirty", database=inc.database, version_before=inc.version,
        version_after=inc.version, failing_version=inc.file_version or inc.version, dirty=True, file=inc.where,
        error=inc.pg_error, statement=inc.statement, next_step=next_step, reminder=decision.kind == "reminder",
        incident=inc.fingerprint, message=f"{prefix}{inc.headline()}. Next: {next_step}",
    )
