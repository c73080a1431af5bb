"""CLI command modules. Each exposes ``register(subparsers, common)``; module-level imports stay
light (stdlib and ``migrator`` basics) so that building the parser costs nothing noticeable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from migrator.config import Settings

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


def via_make() -> bool:
    """True when the Makefile's ``migrate-*`` targets run the command (they set MIGRATOR_VIA_MAKE=1)."""
    return os.environ.get("MIGRATOR_VIA_MAKE") == "1"


def suggest(cli: str, make: str | None = None) -> str:
    """A command to suggest, as the person typed theirs: ``make migrate-...`` under make, else ``migrator ...``.

    Without a make form, the CLI is named by its path in the venv (what the Makefile runs).
    """
    if not via_make():
        return cli
    return make if make is not None else ".venv/bin/" + cli
