"""Per-environment settings for the flows, read from ``deployments/<env>.yaml``.

The YAML never holds a secret, only where to find it: ``{secret_block: NAME, env: VAR}``. The
Prefect Secret block wins when it exists; otherwise the environment variable of the worker is
used. Fail closed: in any environment but ``local`` (or one whose YAML says ``embedded: true``)
every reference the YAML declares must resolve, or the run stops before connecting with one line
naming the block and the variable; it never falls back to DATABASE_URL or the embedded server.
The ``local`` environment (embedded PostgreSQL, file:// backups, log-only alerts) needs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.redact import redact, register_secret

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
    drift_verify: str = "fail"  # fail | warn | off: what live schema drift does to the verify step
    drift_monitor: bool = True  # the status monitor checks schema drift (alert ``schema.drift``)
    drift_ignore: Path | None = None
    drift_scratch_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def concurrency_limit(self) -> str:
        """The Prefect global concurrency limit shared by migrate, rollback and force runs."""
        return f"askfrank-migrations-{self.name}"


def is_local(name: str, raw: dict[str, Any]) -> bool:
    """Only ``local`` (or a YAML that says ``embedded: true``) may use the embedded server or plain
    DATABASE_URL, and may run with a secret reference that does not resolve."""
    return name == "local" or raw.get("embedded") is True


def _secret(ref: Any, what: str, env_name: str, *, required: bool = False) -> str | None:
    """Resolve a plain value or a ``{secret_block, env}`` reference (the block wins when it exists).

    ``required`` (non-local environments): a reference that resolves to nothing stops the run with
    one line naming the block and the variable looked for. A block that cannot be read (API down)
    always stops the run: it is never mistaken for a missing block.
    """
    if ref is None:
        return None
    if isinstance(ref, str):
        return ref
    if not isinstance(ref, dict) or not set(ref) <= {"secret_block", "env"} or not ref:
        raise ConfigError(
            f"deployments/{env_name}.yaml: {what} must be a string or {{secret_block: NAME, env: VARIABLE}}"
        )
    block = ref.get("secret_block")
    var = ref.get("env")
    looked: list[str] = []
    if block:
        found, value = _load_secret_block(str(block))
        if value:
            register_secret(value)
            return value
        looked.append(f"Prefect Secret block {block!r} {'is empty' if found else 'does not exist'}")
    if var:
        value = os.environ.get(str(var))
        if value:
            register_secret(value)
            return value
        looked.append(f"environment variable {var} is {'empty' if value is not None else 'not set'} on this worker")
    if required:
        raise ConfigError(
            f"environment {env_name!r}: {what} does not resolve ({'; '.join(looked)}); create the Secret block or "
            f"set the variable (deployments/{env_name}.yaml). Stopped before connecting; nothing falls back to "
            "another database"
        )
    return None


def _load_secret_block(name: str) -> tuple[bool, str | None]:
    """(exists, value) of the Prefect Secret block ``name``; ConfigError when it cannot be read."""
    # lazy: the CLI and `python -m flows`'s quick path read environments without Prefect
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        block: Any = Secret.load(name)  # sync call from our sync code (async_dispatch)
        value = block.get()
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            return False, None
        raise ConfigError(f"Prefect Secret block {name!r} cannot be read: {redact(exc)}") from None
    except Exception as exc:
        raise ConfigError(
            f"cannot read Prefect Secret block {name!r}: the Prefect API at {_api_url()} did not answer "
            f"({type(exc).__name__}: {redact(' '.join(str(exc).split()))[:200]}); the block may exist, so the run "
            "stops instead of treating it as missing. Check PREFECT_API_URL and the server"
        ) from None
    return True, (str(value) if value else None)


def _api_url() -> str:
    try:
        # lazy: the CLI and `python -m flows`'s quick path read environments without Prefect
        from prefect.settings import PREFECT_API_URL

        return redact(PREFECT_API_URL.value() or "(ephemeral)")
    except Exception:  # settings unreadable: the error above is what matters
        return "(unknown)"


def load_environment(name: str, **overrides: Any) -> Environment:
    """Read ``deployments/<name>.yaml`` and build the Environment; ``overrides`` win (tests, flows).

    ``<fleet>:<database>`` is one database of a fleet environment (migrator.fleet)."""
    # lazy: migrator.fleet only for an environment that names a fleet
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
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of settings (see deployments/local.yaml)")
    backup = raw.get("backup") or {}
    webhook = raw.get("webhook") or {}
    approval = raw.get("approval") or {}
    timeouts = raw.get("timeouts") or {}
    monitor = raw.get("monitor") or {}
    drift = raw.get("drift") or {}
    strict = not is_local(fleet_name, raw)
    spec = fleet.parse_fleet(raw, fleet_name)
    if spec is None and member is not None:
        raise ConfigError(f"environment {fleet_name!r} is not a fleet (no databases: or discover:); use {fleet_name!r}")
    database_url = overrides.get("database_url")
    if database_url is None and spec is not None:  # a fleet's database, or the fleet itself (no database)
        database_url = fleet.NO_DATABASE_URL if member is None else fleet.member_url(
            spec, member, lambda ref, what: _secret(ref, what, fleet_name, required=True))
    if database_url is None:
        if strict and raw.get("database_url") is None:
            raise ConfigError(
                f"environment {name!r}: {path} declares no database_url; add "
                "database_url: {secret_block: NAME, env: VARIABLE} (only local may use the embedded server)"
            )
        database_url = _secret(raw.get("database_url"), "database_url", name, required=strict)
    migrations = Path(raw.get("migrations_path") or "migrations")
    if not migrations.is_absolute() and not os.environ.get("MIGRATIONS_PATH"):
        migrations = ROOT / migrations
    values: dict[str, Any] = {
        "environment": (raw.get("environment") or fleet_name) + (f"{fleet.MEMBER_SEP}{member}" if member else ""),
        "database_url": database_url,
        "migrations_path": None if os.environ.get("MIGRATIONS_PATH") else migrations,
        "table": raw.get("table"),
        "lock_timeout": timeouts.get("lock_timeout"),
        "statement_timeout": timeouts.get("statement_timeout"),
        "lock_wait_seconds": timeouts.get("lock_wait_seconds"),
        "backup_url": os.environ.get("BACKUP_URL")
        or _secret(backup.get("url"), "backup.url", fleet_name, required=strict),
        "webhook_url": _secret(webhook.get("url"), "webhook.url", fleet_name, required=strict),
        "webhook_secret": _secret(webhook.get("secret"), "webhook.secret", fleet_name, required=strict),
        "allow_embedded": not strict,
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
    _drift_settings(env, drift, path, fleet_name, strict)
    for key in ("approval_required", "approval_timeout_seconds"):
        if overrides.get(key) is not None:
            setattr(env, key, overrides[key])
    return env


# the environments resolved by the flow runs of this process, newest last: (name, flow run id) -> Environment
_RUN_ENVIRONMENTS: OrderedDict[tuple[str, str], Environment] = OrderedDict()
_RUN_ENVIRONMENTS_KEPT = 32  # a served or in-process worker runs many flows; older runs' entries are dropped
_run_environments_lock = threading.Lock()


def run_environment(name: str) -> Environment:
    """The environment ``name`` as the current flow run resolved it.

    A run reads ``deployments/<name>.yaml`` and looks its secrets up (Prefect Secret blocks, the
    worker's variables) once, on its first call; every later task of that run gets the same object.
    Tasks still take the environment's *name* as their parameter: a name is all that Prefect stores
    and shows, so no credential reaches its database or UI. A new run (a UI Retry is one) resolves
    afresh, so a rotated secret is picked up there. Outside a flow run it simply loads.
    """
    # lazy: the CLI and `python -m flows`'s quick path read environments without Prefect
    from prefect import runtime

    run_id = runtime.flow_run.id
    if not run_id:
        return load_environment(name)
    key = (name, str(run_id))
    with _run_environments_lock:  # tasks of one run may ask at once (threads); they share one load
        env = _RUN_ENVIRONMENTS.get(key)
        if env is None:
            env = _RUN_ENVIRONMENTS[key] = load_environment(name)
            while len(_RUN_ENVIRONMENTS) > _RUN_ENVIRONMENTS_KEPT:
                _RUN_ENVIRONMENTS.popitem(last=False)
    return env


DRIFT_VERIFY = ("fail", "warn", "off")


def _drift_settings(env: Environment, drift: Any, path: Path, fleet_name: str, strict: bool) -> None:
    """``drift: {verify: fail|warn|off, monitor: true, ignore: FILE, scratch_url: REF}`` (migrator.schema.drift)."""
    if not isinstance(drift, dict):
        raise ConfigError(f"{path}: drift must be a mapping, e.g. drift: {{verify: fail, monitor: true}}")
    unknown = sorted(set(drift) - {"verify", "monitor", "ignore", "scratch_url"})
    if unknown:
        raise ConfigError(f"{path}: drift.{unknown[0]} is not a setting; use verify, monitor, ignore or scratch_url")
    verify = str(drift.get("verify", "fail"))
    if verify not in DRIFT_VERIFY:
        raise ConfigError(f"{path}: drift.verify must be fail, warn or off (not {verify!r})")
    monitor = drift.get("monitor", True)
    if not isinstance(monitor, bool):
        raise ConfigError(f"{path}: drift.monitor must be true or false (not {monitor!r})")
    env.drift_verify, env.drift_monitor = verify, monitor
    if drift.get("ignore"):
        ignore = Path(str(drift["ignore"]))
        env.drift_ignore = ignore if ignore.is_absolute() else ROOT / ignore
    env.drift_scratch_url = _secret(drift.get("scratch_url"), "drift.scratch_url", fleet_name, required=strict)
