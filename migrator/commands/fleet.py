"""``migrator fleet-status --env <fleet>``: one line per database of a fleet: version, dirty, pending.

Prefect-free like the rest of the CLI, so it resolves ``{env: VAR}`` references only. A URL kept in
a Prefect Secret block alone stops with a one-line error pointing at the ``fleet-status`` flow
(``python -m flows fleet-status --env <fleet>``), which reads Secret blocks; nothing falls back.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from migrator.commands import Context
from migrator.errors import ConfigError

EXIT_DIRTY = 3
EXIT_INVALID_INDEX = 5  # as `migrator status`


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fleet-status",
        parents=[common],
        help="one line per database of a fleet environment (exit 3 if any is dirty)",
        description="Read deployments/<env>.yaml (databases: or discover:) and print each database's version, "
        "dirty flag and pending migrations. Exit 3 if any is dirty, 1 if any is unreachable.",
    )
    p.set_defaults(func=run_fleet_status)


def deployments_dir() -> Path:
    return Path(os.environ.get("MIGRATOR_DEPLOYMENTS_DIR") or Path.cwd() / "deployments")


def env_only_resolver(fleet_name: str) -> Any:
    """Resolve a plain string or ``{env: VAR}``; a Secret-block-only reference stops (needs Prefect)."""

    def resolve(ref: Any, what: str) -> str | None:
        if ref is None or isinstance(ref, str):
            return ref
        if not isinstance(ref, dict):
            raise ConfigError(f"deployments/{fleet_name}.yaml: {what} must be a string or {{secret_block, env}}")
        var = ref.get("env")
        if var and os.environ.get(var):
            return os.environ[var]
        if ref.get("secret_block"):
            raise ConfigError(
                f"deployments/{fleet_name}.yaml: {what} is in Prefect Secret block {ref['secret_block']!r}, which "
                f"the CLI does not read: set {var or 'its variable'} or run `python -m flows fleet-status "
                f"--env {fleet_name}`"
            )
        return None

    return resolve


def names_a_fleet(env: str | None) -> bool:
    """True when deployments/<env>.yaml declares databases: or discover: (checked without parsing
    YAML, so ``migrator status`` stays fast for ordinary environments)."""
    if not env or "/" in env or env.startswith("."):
        return False
    try:
        text = (deployments_dir() / f"{env}.yaml").read_text()
    except OSError:
        return False
    return any(line.startswith(("databases:", "discover:")) for line in text.splitlines())


def run_fleet_status(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; yaml would add 26 modules
    import yaml

    # lazy: `migrator --help` loads this module; migrator.fleet would add 210 modules (psycopg, asyncio, ...)
    from migrator import fleet, output

    name = getattr(args, "env", None)
    if not name:
        raise ConfigError("fleet-status needs --env <fleet> (a deployments/<fleet>.yaml with databases: or discover:)")
    path = deployments_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no settings for environment {name!r} ({path} missing); set MIGRATOR_DEPLOYMENTS_DIR")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    spec = fleet.parse_fleet(raw, name)
    if spec is None:
        raise ConfigError(f"environment {name!r} is not a fleet (no databases: or discover:); use `migrator status`")
    settings = ctx.settings
    if not getattr(args, "path", None) and not os.environ.get("MIGRATIONS_PATH") and raw.get("migrations_path"):
        mp = Path(raw["migrations_path"])
        settings.migrations_path = mp if mp.is_absolute() else path.parent.parent / mp
    if not settings.table and raw.get("table"):
        settings.table = str(raw["table"])
    # lazy: `migrator --help` loads this module; migrator.files would add 7 modules
    from migrator import files

    migrations = files.load(settings.migrations_path)
    versions = sorted(migrations.versions)
    members = fleet.resolve_members(spec, env_only_resolver(name))
    states = fleet.survey(members, settings, versions, parallel=spec.survey_parallel)
    if ctx.json:
        output.print_json({"environment": name, "latest": versions[-1] if versions else -1,
                           "databases": [s.to_dict() for s in states]})
    else:
        for line in fleet.status_lines(states, versions[-1] if versions else -1):
            print(line)
    if any(s.dirty for s in states):
        return EXIT_DIRTY
    if any(s.error for s in states):
        return 1
    return EXIT_INVALID_INDEX if any(s.invalid_indexes for s in states) else 0
