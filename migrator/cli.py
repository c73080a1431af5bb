"""``migrator`` command line: argparse (stdlib, ~10 ms to import) rather than typer (~100 ms),
because ``migrator status`` is called by app start-up and monitors and must start fast.

Global options work before or after the command (``migrator --json status`` and
``migrator status --json``). Every failure ends in one ``error: ...`` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from migrator import __version__, argtypes
from migrator.commands import Context, exit_line, make_forms, via_make
from migrator.errors import MigratorError
from migrator.output import error
from migrator.redact import install_logging_redaction, redact

COMMAND_MODULES = (
    "migrator.commands.engine",
    "migrator.commands.validate",
    "migrator.commands.notify",
    "migrator.commands.backup",
    "migrator.commands.trigger",
    "migrator.commands.embedded",
    "migrator.commands.rehearse",
    "migrator.commands.recover",
    "migrator.commands.fleet",
    "migrator.commands.drift",
    "migrator.commands.schema",
)


GLOBALS_NOTE = (
    "global options (--database-url URL, --path DIR, --table NAME, --json, -v, --env NAME, ...) work here too; "
    "`migrator --help` describes them"
)

# which module registers each top-level command, so a run builds only its own command's parser
# (argparse costs ~15 ms for all of them); tests/test_cli.py checks this against the modules
COMMAND_OWNERS = {
    **dict.fromkeys(("up", "down", "down-all", "reset", "goto", "force", "status", "version", "list", "history",
                     "create"), "migrator.commands.engine"),
    **dict.fromkeys(("validate", "verify-roundtrip"), "migrator.commands.validate"),
    "notify": "migrator.commands.notify",
    **dict.fromkeys(("backup", "restore", "backups"), "migrator.commands.backup"),
    "trigger": "migrator.commands.trigger",
    "embedded": "migrator.commands.embedded",
    "rehearse": "migrator.commands.rehearse",
    "recover": "migrator.commands.recover",
    "fleet-status": "migrator.commands.fleet",
    "drift": "migrator.commands.drift",
    "schema": "migrator.commands.schema",
}


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil`` (whose import, with bz2 and lzma, is 3 ms of
    every run: argparse builds a formatter for each argument it adds)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _SubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Sub-command parsers whose page starts with what the command does (its one-line help)."""

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if kwargs.get("description") is None and kwargs.get("help"):
            kwargs["description"] = kwargs["help"]
        kwargs.setdefault("formatter_class", _Formatter)
        return super().add_parser(name, **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what>; see `migrator CMD --help``` and exit 2.

    argparse's default prints the whole usage block before the error, which buries the one line
    that matters; subcommand parsers inherit this class, so the hint names the command. A
    sub-command's page lists its own arguments; the global options are shown once, by
    ``migrator --help``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubParsers)

    def format_help(self) -> str:
        text = super().format_help()
        if self.prog != "migrator":
            text = text.rstrip("\n") + "\n\n" + GLOBALS_NOTE + "\n"
        return text

    def error(self, message: str, prog: str | None = None) -> NoReturn:  # type: ignore[override]
        message = _shorter_choice_error(message)
        page = f"{prog or self.prog} --help"
        if via_make():  # make's user has no `migrator` on PATH: the venv's, as the Makefile runs it
            page = ".venv/bin/" + page
        sys.stderr.write(f"error: {redact(message)}; see `{page}`\n")
        sys.exit(2)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse, but an unrecognised option's hint names the command it was given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {command}" if command else None)
        return parsed


def _shorter_choice_error(message: str) -> str:
    """``invalid choice: 'statsu' (choose from ...18 names)`` -> ``unknown command 'statsu' (did you mean ...)``."""
    m = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)$", message)
    if not m:
        return message
    what, given, choices = m.group(1), m.group(2), re.findall(r"'([^']*)'", m.group(3))
    # lazy: every command loads this module; difflib would add 3 modules
    import difflib

    close = difflib.get_close_matches(given, choices, n=1)
    if what in ("COMMAND", "ACTION", "SUBCOMMAND"):
        label = "unknown command"
    else:
        label = f"unknown {what}" if not what.startswith("-") else f"argument {what}: invalid choice"
    return f"{label} {given!r}" + (f" (did you mean {close[0]!r}?)" if close else f" (one of: {', '.join(choices)})")


def _common_options(shown: bool = True) -> argparse.ArgumentParser:
    """Options accepted by every command; SUPPRESS keeps a later position from erasing an earlier one.

    ``shown=False`` is the copy sub-commands get: the same options, left out of their help pages.
    """
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("global options (before or after the command)")

    def h(text: str) -> str:
        return text if shown else argparse.SUPPRESS

    g.add_argument("--database-url", metavar="URL", help=h("PostgreSQL URL (env DATABASE_URL; default: embedded)"))
    g.add_argument("--path", metavar="DIR", help=h("migrations folder (env MIGRATIONS_PATH; default ./migrations)"))
    g.add_argument("--table", metavar="NAME", help=h("state table, [schema.]table (default schema_migrations)"))
    g.add_argument("--json", action="store_true", help=h("machine-readable output on stdout"))
    g.add_argument("--lock-timeout", metavar="DUR", type=argtypes.duration("--lock-timeout"),
                   help=h("PostgreSQL lock_timeout per migration (default 10s)"))
    g.add_argument("--statement-timeout", metavar="DUR", type=argtypes.duration("--statement-timeout"),
                   help=h("PostgreSQL statement_timeout per migration (default 30min)"))
    g.add_argument("--lock-wait", metavar="SECONDS", type=argtypes.seconds,
                   help=h("max wait for the migration lock (300)"))
    g.add_argument("--run-id", metavar="ID", help=h("caller's run id recorded in the audit trail"))
    g.add_argument("--env", metavar="NAME", help=h("environment name for audit, backups and alerts (local)"))
    g.add_argument("--webhook-url", metavar="URL", help=h("alert webhook (env WEBHOOK_URL)"))
    g.add_argument("--webhook-secret", metavar="S", help=h("HMAC secret (prefer env WEBHOOK_SECRET)"))
    g.add_argument("--webhook-format", choices=["json", "slack"], help=h("alert payload format (json)"))
    g.add_argument("-v", "--verbose", action="store_true",
                   help=h("debug logging on stderr; validate: also show notes"))
    return p


def _command_of(argv: Sequence[str], common: argparse.ArgumentParser) -> str | None:
    """The command word in ``argv`` (global options may come first), or None."""
    takes_value = {o for a in common._actions if a.nargs != 0 for o in a.option_strings}
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--":
            return None
        elif token.startswith("-"):
            skip = token in takes_value  # --env NAME (not --env=NAME)
        else:
            return token
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` naming a known command, only that command's module is registered."""
    common = _common_options(shown=False)
    owner = COMMAND_OWNERS.get(_command_of(argv, common) or "") if argv is not None else None
    parser = Parser(
        prog="migrator",
        description="AskFrank database migrations (golang-migrate compatible). "
        "`migrator COMMAND --help` describes a command's own arguments.",
        parents=[_common_options()],
    )
    parser.add_argument("--version", action="version", version=f"migrator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if owner is not None and name != owner:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command group not installed in this build
            raise
        module.register(sub, common)
    return parser


def _setup_logging(verbose: bool) -> None:
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_logging_redaction()


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and turn every failure into an exit code and one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    if not argv:  # a bare `migrator`: what it can do, not just "COMMAND is required"
        sys.stderr.write(parser.format_help())
        return 2
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    ctx = Context(args=args, json=getattr(args, "json", False))
    code = _run_command(ctx, args)
    line = exit_line(getattr(args, "command", None), code)
    if line:
        sys.stderr.write(line + "\n")
    return code


def _run_command(ctx: Context, args: argparse.Namespace) -> int:
    try:
        return int(args.func(ctx, args) or 0)
    except MigratorError as exc:
        error(make_forms(str(exc)))
        return exc.exit_code
    except BrokenPipeError:  # `migrator status | head -1`: the reader has what it wanted; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        error("interrupted; run `migrator status` to see the database state")
        return 130
    except Exception as exc:  # last resort: no raw traceback for users, but keep it debuggable
        if os.environ.get("MIGRATOR_DEBUG"):
            sys.stderr.write(redact(traceback.format_exc()))
        error(f"internal error ({type(exc).__name__}): {exc}; rerun with MIGRATOR_DEBUG=1 and report it")
        return 70


def main() -> None:
    sys.exit(run())
