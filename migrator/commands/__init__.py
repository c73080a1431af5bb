"""CLI command modules. Each exposes ``register(subparsers, common)``; module-level imports stay
light (stdlib and ``migrator`` basics) so that building the parser costs nothing noticeable."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from migrator.config import Settings
from migrator.output import suggest, via_make

__all__ = ["Context", "suggest", "via_make"]  # suggest/via_make live in output: the core names commands too

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass
class Context:
    """What every command receives: parsed options turned into Settings, and the output mode."""

    args: argparse.Namespace
    json: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            a = self.args
            self._settings = Settings.from_env(
                database_url=getattr(a, "database_url", None),
                migrations_path=Path(a.path) if getattr(a, "path", None) else None,
                table=getattr(a, "table", None),
                lock_timeout=getattr(a, "lock_timeout", None),
                statement_timeout=getattr(a, "statement_timeout", None),
                lock_wait_seconds=getattr(a, "lock_wait", None),
                run_id=getattr(a, "run_id", None),
                environment=getattr(a, "env", None),
                webhook_url=getattr(a, "webhook_url", None),
                webhook_secret=getattr(a, "webhook_secret", None),
                webhook_format=getattr(a, "webhook_format", None),
            )
        return self._settings


# `migrator CMD` -> the Makefile target that runs it (and how its first argument is passed)
_MAKE_TARGETS = {"up": ("migrate-up", "N"), "down": ("migrate-down", "N"), "down-all": ("migrate-down-all", None),
                 "reset": ("migrate-reset", None), "status": ("migrate-status", None),
                 "list": ("migrate-list", None), "validate": ("migrate-validate", None),
                 "goto": ("migrate-goto", "V"), "force": ("migrate-force", "V"),
                 "history": ("migrate-history", None), "drift": ("migrate-drift", None),
                 "create": ("migrate-create", "NAME")}
_COMMAND_IN_TEXT = re.compile(r"`migrator ([^`]*)`")


def _make_form(command: str) -> str:
    words = command.split()
    target = _MAKE_TARGETS.get(words[0]) if words else None
    if target is None:
        return ".venv/bin/migrator " + command
    name, var = target
    rest = words[1:]
    parts = ["make", name]
    if var and rest and not rest[0].startswith("-"):
        parts.append(f"{var}={'...' if rest[0] == var else rest[0]}")  # `force V --expect 3`: V is a placeholder
        rest = rest[1:]
    if rest:  # the targets pass ARGS on to the command as they are
        parts.append(f'ARGS="{" ".join(rest)}"')
    return " ".join(parts)


def make_forms(text: str) -> str:
    """``text`` with each `` `migrator ...` `` it suggests in the form a make user types, under make.

    Errors come from the core (shared with Prefect and alerts, which speak of ``migrator``); the CLI
    rewrites them at the last moment so ``make migrate-up``'s failure and ``make migrate-status``
    suggest the same things.
    """
    if not via_make():
        return text
    return _COMMAND_IN_TEXT.sub(lambda m: f"`{_make_form(m.group(1))}`", text)


# exit codes that mean something beyond "failed", per command: make shows them only as `Error N`
_EXIT_MEANINGS = {
    ("status", 3): "the database is dirty",
    ("status", 4): "migrations are pending (--check)",
    ("status", 5): "an index is INVALID",
    ("drift", 3): "the live schema differs from the migrations",
}


def exit_line(command: str | None, code: int) -> str | None:
    """Under make, one line saying what ``code`` means, since make itself exits 2 for any failure."""
    meaning = _EXIT_MEANINGS.get((command or "", code))
    if meaning is None or not via_make():
        return None
    return (f"migrator {command} exited {code}: {meaning}. make shows that as `Error {code}` and itself exits 2 "
            f"(it cannot pass codes on); a script that branches on {code} runs `.venv/bin/migrator {command}`")
