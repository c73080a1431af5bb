"""Per-environment settings for the flows, read from ``deployments/<env>.yaml``.

The YAML never holds a secret, only where to find it: ``{secret_block: NAME, env: VAR}``. The
Prefect Secret block wins when it exists; otherwise the environment variable of the worker is
used. Anything not set in the YAML falls back to the usual migrator environment variables, so
the ``local`` environment (embedded PostgreSQL, file:// backups, log-only alerts) needs nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.redact import register_secret

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def deployments_dir() -> Path:
    return Path(os.environ.get("MIGRATOR_DEPLOYMENTS_DIR") or ROOT / "deployments")


@dataclass
class Environment:
    """What a flow needs for one environment: engine settings plus flow policy."""

    name: str
    settings: Settings
    approval_required: bool = False
    approval_timeout_seconds: int = 3600
    backup_task_seconds: float = 4 * 3600
    backup_retries: int = 2
    backup_retry_delay_seconds: float = 30
    apply_task_seconds: float = 2 * 3600
    pending_alert_after_minutes: float = 120
    keep_last: int = 30
    keep_days: float = 35
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def backup_task(self) -> Any:
        """The backup task with this environment's timeout and retry policy."""
        from tasks.backup import backup_database

        return backup_database.with_options(
            timeout_seconds=self.backup_task_seconds,
            retries=self.backup_retries,
            retry_delay_seconds=self.backup_retry_delay_seconds,
        )

    @property
    def concurrency_limit(self) -> str:
        """The Prefect global concurrency limit shared by migrate, rollback and force runs."""
        return f"askfrank-migrations-{self.name}"


def _secret(ref: Any, what: str, env_name: str) -> str | None:
    """Resolve a plain value or a ``{secret_block, env}`` reference."""
    if ref is None:
        return None
    if isinstance(ref, str):
        return ref
    if not isinstance(ref, dict) or not set(ref) <= {"secret_block", "env"}:
        raise ConfigError(f"deployments/{env_name}.yaml: {what} must be a string or {{secret_block, env}}")
    block = ref.get("secret_block")
    if block:
        value = _load_secret_block(block)
        if value:
            register_secret(value)
            return value
    var = ref.get("env")
    if var and os.environ.get(var):
        value = os.environ[var]
        register_secret(value)
        return value
    return None


def _load_secret_block(name: str) -> str | None:
    try:
        from prefect.blocks.system import Secret

        block: Any = Secret.load(name)  # sync call from our sync code (async_dispatch)
        value = block.get()
    except Exception:  # no API, or no such block: fall back to the environment variable
        return None
    return str(value) if value else None


def load_environment(name: str, **overrides: Any) -> Environment:
    """Read ``deployments/<name>.yaml`` and build the Environment; ``overrides`` win (tests, flows).

    ``<fleet>:<database>`` is one database of a fleet environment (migrator.fleet)."""
    from migrator import fleet

    fleet_name, member = fleet.split_member(name)
    path = deployments_dir() / f"{fleet_name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in deployments_dir().glob("*.yaml"))
        raise ConfigError(f"no settings for environment {name!r} ({path} missing); known: {', '.join(known)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    backup = raw.get("backup") or {}
    webhook = raw.get("webhook") or {}
    approval = raw.get("approval") or {}
    timeouts = raw.get("timeouts") or {}
    monitor = raw.get("monitor") or {}
    spec = fleet.parse_fleet(raw, fleet_name)
    if spec is None and member is not None:
        raise ConfigError(f"environment {fleet_name!r} is not a fleet (no databases: or discover:); use {fleet_name!r}")
    migrations = Path(raw.get("migrations_path") or "migrations")
    if not migrations.is_absolute() and not os.environ.get("MIGRATIONS_PATH"):
        migrations = ROOT / migrations
    values: dict[str, Any] = {
        "environment": (raw.get("environment") or fleet_name) + (f"{fleet.MEMBER_SEP}{member}" if member else ""),
        "database_url": _secret(raw.get("database_url"), "database_url", name) if spec is None
        else fleet.member_url(spec, member, lambda ref, what: _secret(ref, what, fleet_name)) if member
        else fleet.NO_DATABASE_URL,  # the fleet itself is no database: connecting fails, never falls back
        "migrations_path": None if os.environ.get("MIGRATIONS_PATH") else migrations,
        "table": raw.get("table"),
        "lock_timeout": timeouts.get("lock_timeout"),
        "statement_timeout": timeouts.get("statement_timeout"),
        "lock_wait_seconds": timeouts.get("lock_wait_seconds"),
        "backup_url": os.environ.get("BACKUP_URL") or backup.get("url"),
        "webhook_url": _secret(webhook.get("url"), "webhook.url", name),
        "webhook_secret": _secret(webhook.get("secret"), "webhook.secret", name),
        "webhook_format": webhook.get("format"),
    }
    values.update({k: v for k, v in overrides.items() if k in Settings.__dataclass_fields__})
    settings = Settings.from_env(**values)
    env = Environment(
        name=name,
        settings=settings,
        approval_required=bool(approval.get("required", False)),
        approval_timeout_seconds=int(approval.get("timeout_seconds", 3600)),
        backup_task_seconds=float(timeouts.get("backup_task_seconds", 4 * 3600)),
        backup_retries=int(backup.get("retries", 2)),
        backup_retry_delay_seconds=float(backup.get("retry_delay_seconds", 30)),
        apply_task_seconds=float(timeouts.get("apply_task_seconds", 2 * 3600)),
        pending_alert_after_minutes=float(monitor.get("pending_alert_after_minutes", 120)),
        keep_last=int(backup.get("keep_last", 30)),
        keep_days=float(backup.get("keep_days", 35)),
        raw=raw,
    )
    for key in ("approval_required", "approval_timeout_seconds"):
        if overrides.get(key) is not None:
            setattr(env, key, overrides[key])
    return env
