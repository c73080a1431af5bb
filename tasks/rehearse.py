"""Rehearsal step: restore the run's backup into a scratch database on the rehearsal server and
apply the pending migrations there (``migrator.rehearse.run``), before anyone is asked to approve.

Never retried and never cached: a migration that fails on the copy fails the same way again, and a
re-run (after a fix) must measure the files as they are now.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.errors import ConfigError
from migrator.rehearse.model import RehearsalReport
from migrator.rehearse.run import DEFAULT_LARGE_TABLE_BYTES, RehearsalOptions, parse_bytes, rehearse
from tasks._common import flow_run_id, run_logger
from tasks.environment import Environment, _secret, run_environment

DEFAULT_ENABLED = ("prod",)


@dataclass
class RehearsalConfig:
    """The ``rehearsal:`` keys of deployments/<env>.yaml."""

    enabled: bool
    server_url: str | None
    max_backup_bytes: int | None
    large_table_bytes: int
    allow_same_server: bool | None
    keep: bool
    timeout_seconds: float


def rehearsal_config(env: Environment) -> RehearsalConfig:
    """Read and check the environment's rehearsal settings (enabled by default for prod only)."""
    raw = env.raw.get("rehearsal") or {}
    where = f"deployments/{env.name}.yaml"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: rehearsal must be a mapping (enabled, server_url, max_backup_bytes, ...)")
    unknown = set(raw) - {"enabled", "server_url", "max_backup_bytes", "large_table_bytes", "allow_same_server",
                          "keep", "timeout_seconds"}
    if unknown:
        raise ConfigError(f"{where}: unknown rehearsal key(s) {', '.join(sorted(unknown))}")
    enabled = raw.get("enabled", env.name in DEFAULT_ENABLED)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: rehearsal.enabled must be true or false")
    limit = raw.get("max_backup_bytes")
    large = raw.get("large_table_bytes")
    allow = raw.get("allow_same_server")
    return RehearsalConfig(
        enabled=enabled,
        server_url=_secret(raw.get("server_url"), "rehearsal.server_url", env.name) if enabled else None,
        max_backup_bytes=parse_bytes(limit, f"{where}: rehearsal.max_backup_bytes") if limit is not None else None,
        large_table_bytes=(parse_bytes(large, f"{where}: rehearsal.large_table_bytes") if large is not None
                           else DEFAULT_LARGE_TABLE_BYTES),
        allow_same_server=bool(allow) if allow is not None else None,
        keep=bool(raw.get("keep", False)),
        timeout_seconds=float(raw.get("timeout_seconds", 4 * 3600)),
    )


@task(name="rehearse", retries=0, cache_policy=NO_CACHE)
def rehearse_migrations(environment: str, backup_key: str, target_version: int | None = None) -> RehearsalReport:
    """Rehearse on a restored copy; returns the core's report (``ok``, the measured migrations, the
    backup used and why a newer one was not); the flow renders its Markdown and summary."""

    env = run_environment(environment)
    conf = rehearsal_config(env)
    if not conf.server_url:
        raise ConfigError(
            f"rehearsal is enabled for {environment!r} but rehearsal.server_url does not resolve (set its secret "
            f"block or environment variable in deployments/{environment}.yaml); nothing was applied"
        )
    log = run_logger()
    options = RehearsalOptions(
        backup=backup_key,
        scratch_url=conf.server_url,
        keep=conf.keep,
        large_table_bytes=conf.large_table_bytes,
        max_backup_bytes=conf.max_backup_bytes,
        allow_same_server=conf.allow_same_server,
        target_version=target_version,
    )
    report = rehearse(env.settings, options, progress=log.info, run_id=flow_run_id())
    for w in report.warnings:
        log.warning("%s", w)
    return report
